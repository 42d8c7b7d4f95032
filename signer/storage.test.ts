/**
 * The database failing under the running signer app (real libSQL file): locked by another writer,
 * made immutable (read-only), its audit table refusing inserts, or deleted. Every time: an error with
 * a 503 code, NO certificate in the answer, and nothing half written (the same rows as before, and
 * the enrollment code still unused, so the host can enroll once the database is back).
 */
import { execFileSync } from "node:child_process";
import { rmSync } from "node:fs";
import { createClient } from "@libsql/client";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { describeWith, type Tool } from "../test/support/tools.ts";
import { hostPublicKeyPem, startTestSigner, type TestSigner } from "./testing.ts";

let s: TestSigner;
let code: string;

beforeEach(async () => {
  s = await startTestSigner();
  const admin = await s.token();
  const net = await s.call("POST", "/v1/networks", {
    token: admin,
    body: { name: "db", cidrs: ["10.70.0.0/16"] },
  });
  expect(net.status).toBe(201);
  const reg = await s.call("POST", `/v1/networks/${net.body.id}/hosts`, {
    token: admin,
    body: { name: "h1" },
  });
  expect(reg.status).toBe(201);
  code = reg.body.enrollmentCode;
});
afterEach(async () => {
  try {
    execFileSync("chattr", ["-i", s.dbPath, `${s.dbPath}-wal`], { stdio: "ignore" });
  } catch {
    // flag not set
  }
  await s.close();
});

async function enroll() {
  return s.call("POST", "/v1/enroll", { body: { code, publicKey: await hostPublicKeyPem() } });
}

function expectRefusedWithoutCertificate(res: Awaited<ReturnType<typeof enroll>>) {
  expect(res.status, JSON.stringify(res.body)).toBe(503);
  expect(["storage_unavailable", "audit_unavailable"]).toContain(res.body.error.code);
  expect(JSON.stringify(res.body)).not.toContain("NEBULA CERTIFICATE");
  expect(res.body.hostToken).toBeUndefined();
}

describe("signer with a failing database", () => {
  it("locked by another connection's write transaction: 503, nothing written, code still usable", async () => {
    const before = await s.snapshot();
    const other = createClient({ url: `file:${s.dbPath}` });
    await other.execute("PRAGMA busy_timeout = 0");
    const tx = await other.transaction("write");
    await tx.execute("UPDATE networks SET name = name");
    try {
      expectRefusedWithoutCertificate(await enroll());
    } finally {
      await tx.rollback();
      other.close();
    }
    expect(await s.snapshot()).toEqual(before);
    const later = await enroll();
    expect(later.status, JSON.stringify(later.body)).toBe(201);
  });

  it("audit table refusing the row: no certificate, no certificate row, code still usable", async () => {
    const admin = createClient({ url: `file:${s.dbPath}` });
    await admin.execute(
      "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'audit storage refused'); END",
    );
    const before = await s.snapshot();
    try {
      expectRefusedWithoutCertificate(await enroll());
      expect(await s.snapshot()).toEqual(before);
    } finally {
      await admin.execute("DROP TRIGGER refuse_audit");
      admin.close();
    }
    const later = await enroll();
    expect(later.status, JSON.stringify(later.body)).toBe(201);
  });

  it("database file deleted under the signer: 503 and no certificate", async () => {
    for (const suffix of ["", "-wal", "-shm"]) rmSync(`${s.dbPath}${suffix}`, { force: true });
    expectRefusedWithoutCertificate(await enroll());
  });
});

function rootWithChattr(): Tool {
  let available = process.getuid?.() === 0;
  try {
    execFileSync("sh", ["-c", "command -v chattr"], { stdio: "ignore" });
  } catch {
    available = false;
  }
  return {
    name: "root + chattr",
    path: "chattr",
    available,
    missing: "needs root and chattr (e2fsprogs) to make the database file immutable",
  };
}

describeWith([rootWithChattr()], "signer with a read-only database", () => {
  it("database and WAL made immutable: 503, nothing written, code usable once writable again", async () => {
    const before = await s.snapshot();
    execFileSync("chattr", ["+i", s.dbPath, `${s.dbPath}-wal`]);
    try {
      expectRefusedWithoutCertificate(await enroll());
    } finally {
      execFileSync("chattr", ["-i", s.dbPath, `${s.dbPath}-wal`]);
    }
    expect(await s.snapshot()).toEqual(before);
    let later = await enroll();
    if (later.status === 503) {
      console.log(
        `first write after the database became writable again: ${later.body.error.message}`,
      );
      later = await enroll();
    }
    expect(later.status, JSON.stringify(later.body)).toBe(201);
  });
});
