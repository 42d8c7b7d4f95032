// The database failing under the store: read-only (immutable file), locked by another connection's
// write transaction, deleted, unreachable server, and an audit write that fails. Each time the caller
// gets storage_unavailable (or audit_unavailable) and the certificate row and its audit row are
// written together or not at all.
import { execFileSync } from "node:child_process";
import { rmSync } from "node:fs";
import { createServer } from "node:net";
import { createClient } from "@libsql/client";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { isKeyholeError } from "../../core/errors.ts";
import { openDatabase } from "../../db/client.ts";
import { describeWith, type Tool } from "../../test/support/tools.ts";
import { openSignerStore } from "./index.ts";
import {
  auditEvent,
  certFor,
  networkInput,
  openTestStore,
  STATEMENT_MODES,
  type TestStore,
} from "./testing.ts";
import type { CaRecord, NetworkRecord } from "./types.ts";

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (isKeyholeError(e)) return e.code;
    throw e;
  }
  return "no error";
}

/** Raw counts through a separate connection, so the store's own state cannot hide anything. */
async function rowCounts(url: string): Promise<{ certificates: number; audit: number }> {
  const c = createClient({ url });
  try {
    const certs = await c.execute("SELECT count(*) AS n FROM certificates");
    const audit = await c.execute("SELECT count(*) AS n FROM audit_events");
    return { certificates: Number(certs.rows[0]?.n), audit: Number(audit.rows[0]?.n) };
  } finally {
    c.close();
  }
}

let t: TestStore;
let net: NetworkRecord;
let ca: CaRecord;

function issue(n = 1) {
  return Promise.allSettled(
    Array.from({ length: n }, () =>
      t.store.recordIssuance({
        certificate: certFor(net.id, ca.id, null, t.clock.now),
        credential: { kind: "direct" },
        audit: [auditEvent("org-a", "cert.sign", { networkId: net.id })],
      }),
    ),
  );
}

function codesOf(results: PromiseSettledResult<unknown>[]): string[] {
  return [
    ...new Set(
      results.map((r) =>
        r.status === "fulfilled"
          ? "ok"
          : ((r.reason as { code?: string }).code ?? String(r.reason)),
      ),
    ),
  ];
}

describe.each(STATEMENT_MODES)("storage failures, statements %s", (mode) => {
  beforeEach(async () => {
    t = await openTestStore({ busyTimeoutMs: 200, statements: mode });
    net = await t.store.createNetwork(networkInput("org-a", "prod", ["10.1.0.0/16"], t.clock.now));
    ca = await t.store.getActiveCa(net.id);
    await issue(3);
  });
  afterEach(async () => {
    try {
      execFileSync("chattr", ["-i", t.path, `${t.path}-wal`], { stdio: "ignore" });
    } catch {
      // not set or not supported
    }
    await t.cleanup();
  });

  describe("locked by another connection", () => {
    it("a write transaction held elsewhere => storage_unavailable after the busy timeout, nothing written; recovers after", async () => {
      const before = await rowCounts(t.url);
      const other = createClient({ url: t.url });
      const held = await other.transaction("write");
      await held.execute(
        "INSERT INTO idempotency (org, key, request_hash, response) VALUES ('x', 'lock', 'h', '{}')",
      );
      const started = Date.now();
      const results = await issue(20);
      expect(codesOf(results)).toEqual(["storage_unavailable"]);
      expect(Date.now() - started).toBeLessThan(5000);
      const msg = (results[0] as PromiseRejectedResult).reason.message as string;
      expect(msg).toMatch(/storage is unavailable/);
      await held.rollback();
      other.close();
      expect(await rowCounts(t.url)).toEqual(before);
      // the lock is gone: the same store writes again, and the chain is intact
      expect(codesOf(await issue(5))).toEqual(["ok"]);
      expect(await rowCounts(t.url)).toEqual({
        certificates: before.certificates + 5,
        audit: before.audit + 5,
      });
      expect((await t.store.verifyAuditChain()).ok).toBe(true);
    });
  });

  describe("deleted", () => {
    it("the database file removed under a running store => storage_unavailable for writes and reads", async () => {
      for (const suffix of ["", "-wal", "-shm"]) rmSync(t.path + suffix, { force: true });
      expect(codesOf(await issue(10))).toEqual(["storage_unavailable"]);
      expect(await codeOf(t.store.getNetwork(net.id))).toBe("storage_unavailable");
      expect(await codeOf(t.store.recordAudit([auditEvent("org-a", "x")]))).toBe(
        "storage_unavailable",
      );
    });

    it("reads notice a removed file within 100 ms (one stat per 100 ms), writes at once, and it stays noticed", async () => {
      expect((await t.store.getNetwork(net.id))?.id).toBe(net.id);
      for (const suffix of ["", "-wal", "-shm"]) rmSync(t.path + suffix, { force: true });
      expect(await codeOf(t.store.recordAudit([auditEvent("org-a", "x")]))).toBe(
        "storage_unavailable",
      );
      expect(await codeOf(t.store.getNetwork(net.id))).toBe("storage_unavailable");
    });

    it("a read alone notices a removed file once 100 ms have passed since the last look", async () => {
      expect((await t.store.getNetwork(net.id))?.id).toBe(net.id);
      for (const suffix of ["", "-wal", "-shm"]) rmSync(t.path + suffix, { force: true });
      await new Promise((r) => setTimeout(r, 120));
      expect(await codeOf(t.store.getNetwork(net.id))).toBe("storage_unavailable");
      expect(await codeOf(t.store.listNetworks("org-a"))).toBe("storage_unavailable");
    });

    it("the database file replaced by another => storage_unavailable (never writes into the wrong file)", async () => {
      for (const suffix of ["", "-wal", "-shm"]) rmSync(t.path + suffix, { force: true });
      const replacement = await openDatabase({ url: t.url });
      await replacement.close();
      expect(codesOf(await issue(3))).toEqual(["storage_unavailable"]);
      expect(await rowCounts(t.url)).toEqual({ certificates: 0, audit: 0 });
    });
  });

  describe("unreachable", () => {
    it("a libSQL server that is not there => storage_unavailable at open, with the URL but no token", async () => {
      const server = createServer();
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      const port = (server.address() as { port: number }).port;
      await new Promise<void>((r) => server.close(() => r()));
      let err: unknown;
      try {
        await openSignerStore({ url: `http://127.0.0.1:${port}`, authToken: "secret-token-value" });
      } catch (e) {
        err = e;
      }
      expect(isKeyholeError(err) && err.code).toBe("storage_unavailable");
      expect(String((err as Error).message)).toContain(`127.0.0.1:${port}`);
      expect(String((err as Error).message)).not.toContain("secret-token-value");
    });

    it("a file in a folder that does not exist => storage_unavailable", async () => {
      expect(await codeOf(openSignerStore({ url: "file:/nonexistent-dir/x/signer.db" }))).toBe(
        "storage_unavailable",
      );
    });

    it("a URL of another kind is refused with a clear message", async () => {
      await expect(openDatabase({ url: "postgres://x" })).rejects.toThrow(/file:, libsql:/);
    });
  });

  describe("the audit write fails", () => {
    it("=> audit_unavailable, no certificate row; other issuances of the same batch still commit", async () => {
      const before = await rowCounts(t.url);
      const admin = createClient({ url: t.url });
      // Fail only the audit rows of one certificate fingerprint prefix: the rest of the batch is healthy.
      await admin.execute(
        "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events WHEN NEW.detail LIKE '%refuse%' BEGIN SELECT RAISE(ABORT, 'audit refused'); END",
      );
      const refused = t.store.recordIssuance({
        certificate: certFor(net.id, ca.id, null, t.clock.now),
        credential: { kind: "direct" },
        audit: [auditEvent("org-a", "cert.sign", { detail: { note: "refuse" } })],
      });
      const healthy = issue(10);
      expect(await codeOf(refused)).toBe("audit_unavailable");
      expect(codesOf(await healthy)).toEqual(["ok"]);
      await admin.execute("DROP TRIGGER refuse_audit");
      admin.close();
      expect(await rowCounts(t.url)).toEqual({
        certificates: before.certificates + 10,
        audit: before.audit + 10,
      });
      expect(t.store.writerStats().isolatedRetries).toBeGreaterThan(0);
      expect((await t.store.verifyAuditChain()).ok).toBe(true);
    });
  });

  function rootWithChattr(): Tool {
    let available = false;
    let missing = "";
    try {
      available = process.getuid?.() === 0;
      if (!available)
        missing = "needs root to set the immutable flag (chattr +i); run the suite as root";
      else execFileSync("chattr", ["--help"], { stdio: "ignore" });
    } catch {
      // chattr --help exits non-zero on some versions; presence is what matters
      try {
        execFileSync("which", ["chattr"], { stdio: "ignore" });
      } catch {
        available = false;
        missing = "chattr (e2fsprogs) is not installed";
      }
    }
    return { name: "root + chattr", path: "chattr", available, missing };
  }

  describeWith([rootWithChattr()], "read-only", () => {
    it("the database and its WAL made immutable under a running store => storage_unavailable, nothing written", async () => {
      const before = await rowCounts(t.url);
      execFileSync("chattr", ["+i", t.path, `${t.path}-wal`]);
      const results = await issue(10);
      expect(codesOf(results)).toEqual(["storage_unavailable"]);
      execFileSync("chattr", ["-i", t.path, `${t.path}-wal`]);
      expect(await rowCounts(t.url)).toEqual(before);
    });

    it("opening an immutable database that needs migrating => storage_unavailable", async () => {
      const { mkdtempSync, writeFileSync } = await import("node:fs");
      const { tmpdir } = await import("node:os");
      const { join } = await import("node:path");
      const dir = mkdtempSync(join(tmpdir(), "keyhole-ro-"));
      const path = join(dir, "ro.db");
      writeFileSync(path, "");
      execFileSync("chattr", ["+i", path]);
      try {
        expect(await codeOf(openSignerStore({ url: `file:${path}` }))).toBe("storage_unavailable");
      } finally {
        execFileSync("chattr", ["-i", path]);
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });
});
