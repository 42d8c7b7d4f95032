// The store against a real libSQL file: constraints and their API codes, one-time codes under a
// 50-way race, host token rotation and reuse detection, CA rotation, idempotency, audit chain.
import { createClient } from "@libsql/client";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { isKeyholeError } from "../../core/errors.ts";
import {
  auditEvent,
  certFor,
  hostInput,
  networkInput,
  newCa,
  openTestStore,
  STATEMENT_MODES,
  STORE_TABLES,
  type TestStore,
} from "./testing.ts";
import type { NetworkRecord, SignerStore } from "./types.ts";

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (isKeyholeError(e)) return e.code;
    throw e;
  }
  return "no error";
}

async function counts(t: TestStore): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const table of STORE_TABLES) {
    const r = await t.store.database.readClient.execute(`SELECT count(*) AS n FROM ${table}`);
    out[table] = Number(r.rows[0]?.n);
  }
  return out;
}

let t: TestStore;
let store: SignerStore;
let net: NetworkRecord;

describe.each(STATEMENT_MODES)("store, statements %s", (mode) => {
  beforeEach(async () => {
    t = await openTestStore({ statements: mode });
    store = t.store;
    net = await store.createNetwork(
      networkInput("org-a", "prod", ["10.1.0.0/16", "fd00:1::/64"], t.clock.now),
    );
  });
  afterEach(async () => {
    await t.cleanup();
  });

  describe("networks and CAs", () => {
    it("stores the network, its active CA with both sealed copies, and the audit row", async () => {
      expect(net.cidrs).toEqual(["10.1.0.0/16", "fd00:1::/64"]);
      const ca = await store.getActiveCa(net.id);
      expect(ca.state).toBe("active");
      expect(ca.sealedKeys.map((k) => k.region)).toEqual(["local-a", "local-b"]);
      expect(ca.sealedKeys[0]?.ciphertext).toBeInstanceOf(Uint8Array);
      expect(ca.sealedKeys[0]?.ciphertext.length).toBe(80);
      const audit = await store.listAudit("org-a", { limit: 10 });
      expect(audit.map((a) => a.action)).toEqual(["ca.create"]);
      expect(audit[0]?.kmsRequestIds).toEqual(["req-a", "req-b"]);
      const view = await store.networkView(net);
      expect(view.cas).toHaveLength(1);
      expect(view.caBundle).toBe(ca.certificate);
    });

    it("name_taken per org, writes nothing; another org may reuse the name", async () => {
      const before = await counts(t);
      expect(
        await codeOf(
          store.createNetwork(networkInput("org-a", "prod", ["10.2.0.0/16"], t.clock.now)),
        ),
      ).toBe("name_taken");
      expect(await counts(t)).toEqual(before);
      const other = await store.createNetwork(
        networkInput("org-b", "prod", ["10.2.0.0/16"], t.clock.now),
      );
      expect(other.org).toBe("org-b");
    });

    it("org scoping: another org's network reads as null", async () => {
      expect(await store.getNetworkForOrg("org-b", net.id)).toBeNull();
      expect((await store.getNetworkForOrg("org-a", net.id))?.id).toBe(net.id);
      expect(await store.listNetworks("org-b")).toEqual([]);
      expect(await store.listAudit("org-b", { limit: 10 })).toEqual([]);
    });

    it("the database refuses a second active CA and an unknown state (constraints, not only code)", async () => {
      const c = t.store.database.writeClient;
      const first = await store.getActiveCa(net.id);
      await expect(
        c.execute({
          sql: "INSERT INTO cas (id, network_id, org, certificate, fingerprint, not_before, not_after, state) VALUES (?, ?, 'org-a', 'x', 'fp2', 0, 1, 'active')",
          args: ["ca_dup", net.id],
        }),
      ).rejects.toThrow(/UNIQUE/);
      await expect(
        c.execute({ sql: "UPDATE cas SET state = 'bogus' WHERE id = ?", args: [first.id] }),
      ).rejects.toThrow(/CHECK/);
      await expect(
        c.execute(
          "INSERT INTO networks (id, org, name, cidrs, curve, cert_version) VALUES ('n2','o','n','[]','ed448',2)",
        ),
      ).rejects.toThrow(/CHECK/);
      await expect(
        c.execute({
          sql: "INSERT INTO hosts (id, network_id, name, ip, groups, lighthouse, static_addrs, state, cert_lifetime_s) VALUES ('h','nope','x','1','[]',0,'[]','pending',1)",
          args: [],
        }),
      ).rejects.toThrow(/FOREIGN KEY/);
    });

    it("rotation keeps the old CA in the bundle as previous, or retires it", async () => {
      const old = await store.getActiveCa(net.id);
      const rotated = await store.rotateCa({
        networkId: net.id,
        ca: newCa(t.clock.now),
        retirePrevious: false,
        audit: [auditEvent("org-a", "ca.rotate")],
      });
      expect((await store.getActiveCa(net.id)).id).toBe(rotated.id);
      const bundle = await store.caBundle(net.id);
      expect(bundle).toBe(rotated.certificate + old.certificate);
      const third = await store.rotateCa({
        networkId: net.id,
        ca: newCa(t.clock.now),
        retirePrevious: true,
        audit: [],
      });
      expect(await store.caBundle(net.id)).toBe(third.certificate);
      const states = (await store.listCas(net.id)).map((c) => c.state).sort();
      expect(states).toEqual(["active", "retired", "retired"]);
      expect(
        await codeOf(
          store.rotateCa({
            networkId: "net_nope",
            ca: newCa(t.clock.now),
            retirePrevious: false,
            audit: [],
          }),
        ),
      ).toBe("not_found");
    });

    it("expired previous CAs leave the bundle", async () => {
      const shortLived = { ...newCa(t.clock.now, 1) };
      const n2 = await store.createNetwork({
        ...networkInput("org-a", "short", ["10.9.0.0/24"], t.clock.now),
        ca: shortLived,
      });
      const next = await store.rotateCa({
        networkId: n2.id,
        ca: newCa(t.clock.now),
        retirePrevious: false,
        audit: [],
      });
      expect(await store.caBundle(n2.id)).toContain(shortLived.certificate);
      t.clock.advance(2 * 86400);
      expect(await store.caBundle(n2.id)).toBe(next.certificate);
    });
  });

  describe("hosts", () => {
    it("allocates the lowest free address and stores the code hashed only", async () => {
      const a = await store.registerHost(hostInput(net.id, "a"));
      const b = await store.registerHost(hostInput(net.id, "b"));
      expect(a.host.ip).toBe("10.1.0.1/16");
      expect(b.host.ip).toBe("10.1.0.2/16");
      expect(a.host.state).toBe("pending");
      expect(a.host.org).toBe("org-a");
      expect(a.enrollmentCode).toMatch(/^khe_[A-Za-z0-9_-]{43}$/);
      expect(a.codeExpiresAt.getTime() - t.clock.now.getTime()).toBe(3600_000);
      const raw = await t.store.database.readClient.execute("SELECT hash FROM enrollment_codes");
      const stored = JSON.stringify(raw.rows);
      expect(stored).not.toContain(a.enrollmentCode);
      expect(stored).not.toContain(a.enrollmentCode.slice(4));
      const audit = await store.listAudit("org-a", { limit: 10, networkId: net.id });
      expect(audit[0]?.detail).toMatchObject({ hostId: b.host.id, ip: "10.1.0.2/16" });
    });

    it("explicit address, ip_taken, ip_outside_network, name_taken: each writes nothing", async () => {
      await store.registerHost(hostInput(net.id, "a", { ip: "10.1.5.5" }));
      const before = await counts(t);
      expect(await codeOf(store.registerHost(hostInput(net.id, "b", { ip: "10.1.5.5/16" })))).toBe(
        "ip_taken",
      );
      expect(await codeOf(store.registerHost(hostInput(net.id, "b", { ip: "10.7.5.5" })))).toBe(
        "ip_outside_network",
      );
      expect(await codeOf(store.registerHost(hostInput(net.id, "a")))).toBe("name_taken");
      expect(await codeOf(store.registerHost(hostInput("net_nope", "z")))).toBe("not_found");
      expect(await counts(t)).toEqual(before);
      const v6 = await store.registerHost(hostInput(net.id, "v6", { ip: "fd00:1::beef" }));
      // dual stack: the explicit address in its own CIDR, the lowest free one in the other
      expect(v6.host.ips).toEqual(["10.1.0.1/16", "fd00:1::beef/64"]);
      expect(v6.host.ip).toBe("10.1.0.1/16");
    });

    it("network_full on a /30 after two hosts", async () => {
      const small = await store.createNetwork(
        networkInput("org-a", "tiny", ["10.50.0.0/30"], t.clock.now),
      );
      await store.registerHost(hostInput(small.id, "h1"));
      await store.registerHost(hostInput(small.id, "h2"));
      expect(await codeOf(store.registerHost(hostInput(small.id, "h3")))).toBe("network_full");
    });

    it("concurrent registrations never share an address (serialised allocation)", async () => {
      const regs = await Promise.all(
        Array.from({ length: 40 }, (_, i) => store.registerHost(hostInput(net.id, `h${i}`))),
      );
      const ips = new Set(regs.map((r) => r.host.ip));
      expect(ips.size).toBe(40);
      expect(ips.has("10.1.0.40/16")).toBe(true);
    });
  });

  describe("enrollment codes", () => {
    it("authenticate, then consumed by the issuance; second use refused", async () => {
      const reg = await store.registerHost(hostInput(net.id, "a"));
      const ca = await store.getActiveCa(net.id);
      const cred = await store.authenticateEnrollmentCode(reg.enrollmentCode);
      expect(cred.host.id).toBe(reg.host.id);
      expect(cred.network.org).toBe("org-a");
      const res = await store.recordIssuance({
        certificate: certFor(net.id, ca.id, reg.host.id, t.clock.now),
        credential: { kind: "enrollment_code", code: reg.enrollmentCode },
        audit: [auditEvent("org-a", "cert.sign")],
      });
      if (res.replayed) throw new Error("unexpected replay");
      expect(res.hostToken).toMatch(/^kht_/);
      expect(res.host?.state).toBe("enrolled");
      expect(await codeOf(store.authenticateEnrollmentCode(reg.enrollmentCode))).toBe(
        "invalid_enrollment_code",
      );
      const before = await counts(t);
      expect(
        await codeOf(
          store.recordIssuance({
            certificate: certFor(net.id, ca.id, reg.host.id, t.clock.now),
            credential: { kind: "enrollment_code", code: reg.enrollmentCode },
            audit: [auditEvent("org-a", "cert.sign")],
          }),
        ),
      ).toBe("invalid_enrollment_code");
      expect(await counts(t)).toEqual(before);
      const stored = await store.getHost(reg.host.id);
      if (!stored) throw new Error("host missing");
      const view = await store.hostView(stored);
      expect(view.certificates).toHaveLength(1);
      expect(view.certificates[0]?.caFingerprint).toBe(ca.fingerprint);
    });

    it("unknown and expired codes are invalid_enrollment_code", async () => {
      const reg = await store.registerHost(hostInput(net.id, "a", { codeTtlS: 60 }));
      expect(await codeOf(store.authenticateEnrollmentCode("khe_nope"))).toBe(
        "invalid_enrollment_code",
      );
      t.clock.advance(61);
      expect(await codeOf(store.authenticateEnrollmentCode(reg.enrollmentCode))).toBe(
        "invalid_enrollment_code",
      );
      const ca = await store.getActiveCa(net.id);
      expect(
        await codeOf(
          store.recordIssuance({
            certificate: certFor(net.id, ca.id, reg.host.id, t.clock.now),
            credential: { kind: "enrollment_code", code: reg.enrollmentCode },
            audit: [],
          }),
        ),
      ).toBe("invalid_enrollment_code");
    });

    it("50 concurrent issuances with one code: exactly one wins, one certificate, one audit row", async () => {
      const reg = await store.registerHost(hostInput(net.id, "racer"));
      const ca = await store.getActiveCa(net.id);
      const before = await counts(t);
      const results = await Promise.allSettled(
        Array.from({ length: 50 }, () =>
          store.recordIssuance({
            certificate: certFor(net.id, ca.id, reg.host.id, t.clock.now),
            credential: { kind: "enrollment_code", code: reg.enrollmentCode },
            audit: [auditEvent("org-a", "cert.sign")],
          }),
        ),
      );
      const won = results.filter((r) => r.status === "fulfilled");
      const lost = results.filter((r) => r.status === "rejected");
      expect(won).toHaveLength(1);
      expect(
        lost.every((r) => isKeyholeError(r.reason) && r.reason.code === "invalid_enrollment_code"),
      ).toBe(true);
      const after = await counts(t);
      expect(after.certificates).toBe((before.certificates ?? 0) + 1);
      expect(after.audit_events).toBe((before.audit_events ?? 0) + 1);
      expect(after.host_tokens).toBe((before.host_tokens ?? 0) + 1);
    });

    it("50 racers across two store instances (two connections, two writers) on one file: one wins", async () => {
      const reg = await store.registerHost(hostInput(net.id, "racer2"));
      const ca = await store.getActiveCa(net.id);
      const { openSignerStore } = await import("./index.ts");
      const second = await openSignerStore({
        url: t.url,
        busyTimeoutMs: 5000,
        clock: () => t.clock.now,
      });
      try {
        const results = await Promise.allSettled(
          Array.from({ length: 50 }, (_, i) =>
            (i % 2 ? second : store).recordIssuance({
              certificate: certFor(net.id, ca.id, reg.host.id, t.clock.now),
              credential: { kind: "enrollment_code", code: reg.enrollmentCode },
              audit: [auditEvent("org-a", "cert.sign")],
            }),
          ),
        );
        expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
        expect((await store.listCertificates(reg.host.id)).length).toBe(1);
        expect((await store.verifyAuditChain()).ok).toBe(true);
      } finally {
        await second.close();
      }
    });
  });

  describe("host tokens", () => {
    async function enrolled() {
      const reg = await store.registerHost(
        hostInput(net.id, `h${Math.random().toString(36).slice(2, 8)}`),
      );
      const ca = await store.getActiveCa(net.id);
      const res = await store.recordIssuance({
        certificate: certFor(net.id, ca.id, reg.host.id, t.clock.now),
        credential: { kind: "enrollment_code", code: reg.enrollmentCode },
        audit: [auditEvent("org-a", "cert.sign")],
      });
      if (res.replayed || !res.hostToken) throw new Error("no token");
      return { host: reg.host, token: res.hostToken, caId: ca.id };
    }

    it("rotate on each renewal; the old token presented again blocks the host (reuse detection)", async () => {
      const { host, token, caId } = await enrolled();
      const cred = await store.authenticateHostToken(token, { traceId: "1".repeat(32) });
      expect(cred.generation).toBe(1);
      const renewed = await store.recordIssuance({
        certificate: certFor(net.id, caId, host.id, t.clock.now),
        credential: { kind: "host_token", token },
        audit: [auditEvent("org-a", "cert.sign")],
      });
      if (renewed.replayed || !renewed.hostToken) throw new Error("no token");
      expect(
        (await store.authenticateHostToken(renewed.hostToken, { traceId: "1".repeat(32) }))
          .generation,
      ).toBe(2);
      // the stolen/old token comes back
      expect(await codeOf(store.authenticateHostToken(token, { traceId: "2".repeat(32) }))).toBe(
        "host_token_reused",
      );
      expect((await store.getHost(host.id))?.state).toBe("blocked");
      const audit = await store.listAudit("org-a", { limit: 5, traceId: "2".repeat(32) });
      expect(audit[0]?.action).toBe("host.token_reused");
      expect(audit[0]?.outcome).toBe("denied");
      // now even the newest token is refused, distinctly
      expect(
        await codeOf(store.authenticateHostToken(renewed.hostToken, { traceId: "3".repeat(32) })),
      ).toBe("host_blocked");
      // its certificates are on the blocklist
      expect((await store.blocklist(net.id)).length).toBe(2);
      expect((await store.verifyAuditChain()).ok).toBe(true);
    });

    it("reuse detected inside the issuance transaction too: no certificate, host blocked", async () => {
      const { host, token, caId } = await enrolled();
      // two renewals with the same token race: one rotates it, the other is reuse
      const results = await Promise.allSettled(
        [0, 1].map(() =>
          store.recordIssuance({
            certificate: certFor(net.id, caId, host.id, t.clock.now),
            credential: { kind: "host_token", token },
            audit: [auditEvent("org-a", "cert.sign")],
          }),
        ),
      );
      const codes = results
        .map((r) => (r.status === "fulfilled" ? "ok" : (r.reason as { code: string }).code))
        .sort();
      expect(codes).toEqual(["host_token_reused", "ok"]);
      expect((await store.getHost(host.id))?.state).toBe("blocked");
      // 1 from enrollment + 1 renewal; the reused attempt wrote no certificate, and both are revoked now
      const certs = await store.listCertificates(host.id);
      expect(certs).toHaveLength(2);
      expect(certs.every((c) => c.revokedAt !== null)).toBe(true);
    });

    it("unknown token => invalid_host_token; blocked host => host_blocked", async () => {
      expect(
        await codeOf(store.authenticateHostToken("kht_unknown", { traceId: "1".repeat(32) })),
      ).toBe("invalid_host_token");
      const { host, token } = await enrolled();
      const blocked = await store.blockHost(host.id, [auditEvent("org-a", "host.block")]);
      expect(blocked.revokedFingerprints).toHaveLength(1);
      expect(await store.blocklist(net.id)).toEqual(blocked.revokedFingerprints);
      expect(await codeOf(store.authenticateHostToken(token, { traceId: "1".repeat(32) }))).toBe(
        "host_blocked",
      );
      expect(await codeOf(store.blockHost("host_nope", []))).toBe("not_found");
    });

    it("tokens are stored hashed only", async () => {
      const { token } = await enrolled();
      const raw = JSON.stringify(
        (await t.store.database.readClient.execute("SELECT * FROM host_tokens")).rows,
      );
      expect(raw).not.toContain(token.slice(4));
    });
  });

  describe("direct signing and idempotency", () => {
    it("a retried request with the same key replays the first response and never issues twice", async () => {
      const ca = await store.getActiveCa(net.id);
      const idem = {
        org: "org-a",
        key: "k-1",
        requestHash: "h1",
        response: { certificate: "first" },
      };
      const first = await store.recordIssuance({
        certificate: certFor(net.id, ca.id, null, t.clock.now),
        credential: { kind: "direct" },
        audit: [auditEvent("org-a", "cert.sign")],
        idempotency: idem,
      });
      expect(first.replayed).toBe(false);
      expect(await store.findIdempotentResponse("org-a", "k-1", "h1")).toEqual({
        certificate: "first",
      });
      expect(await store.findIdempotentResponse("org-b", "k-1", "h1")).toBeNull();
      expect(await codeOf(store.findIdempotentResponse("org-a", "k-1", "other"))).toBe(
        "idempotency_conflict",
      );
      const before = await counts(t);
      const again = await store.recordIssuance({
        certificate: certFor(net.id, ca.id, null, t.clock.now),
        credential: { kind: "direct" },
        audit: [auditEvent("org-a", "cert.sign")],
        idempotency: { ...idem, response: { certificate: "second" } },
      });
      expect(again).toEqual({ replayed: true, response: { certificate: "first" } });
      expect(
        await codeOf(
          store.recordIssuance({
            certificate: certFor(net.id, ca.id, null, t.clock.now),
            credential: { kind: "direct" },
            audit: [],
            idempotency: { ...idem, requestHash: "h2" },
          }),
        ),
      ).toBe("idempotency_conflict");
      expect(await counts(t)).toEqual(before);
    });

    it("20 concurrent requests with one key: one certificate", async () => {
      const ca = await store.getActiveCa(net.id);
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          store.recordIssuance({
            certificate: certFor(net.id, ca.id, null, t.clock.now),
            credential: { kind: "direct" },
            audit: [auditEvent("org-a", "cert.sign")],
            idempotency: { org: "org-a", key: "same", requestHash: "h", response: { n: i } },
          }),
        ),
      );
      expect(results.filter((r) => !r.replayed)).toHaveLength(1);
      const n = await t.store.database.readClient.execute(
        "SELECT count(*) AS n FROM certificates WHERE host_id IS NULL",
      );
      expect(Number(n.rows[0]?.n)).toBe(1);
    });
  });

  describe("audit chain", () => {
    async function someRows() {
      await store.recordAudit([
        auditEvent("org-a", "kms.decrypt", {
          region: "a",
          keyId: "k",
          kmsRequestIds: ["r1"],
          outcome: "error",
          detail: { z: 1, a: [1, { y: 2, b: 3 }] },
        }),
      ]);
      await store.recordAudit([
        auditEvent("org-a", "kms.decrypt", { region: "b", keyId: "k2", kmsRequestIds: ["r2"] }),
      ]);
      await store.recordAudit([auditEvent("org-a", "cert.sign")]);
    }

    it("verifies over many rows", async () => {
      await someRows();
      expect(await store.verifyAuditChain()).toEqual({ ok: true, rows: 4 });
    });

    it("returns each written row with the seq and hash it has in the database", async () => {
      await someRows();
      const written = await store.recordAudit([
        auditEvent("org-a", "one"),
        auditEvent("org-a", "two"),
      ]);
      const stored = (await store.listAudit("org-a", { limit: 2 })).reverse();
      expect(written.map((r) => [r.seq, r.hash, r.action])).toEqual(
        stored.map((r) => [r.seq, r.hash, r.action]),
      );
      expect(written.map((r) => r.seq)).toEqual([5, 6]);
    });

    it("detects an edited row", async () => {
      await someRows();
      const c = createClient({ url: t.url });
      await c.execute("UPDATE audit_events SET outcome = 'ok' WHERE seq = 2");
      c.close();
      expect(await store.verifyAuditChain()).toEqual({ ok: false, rows: 2, firstBadSeq: 2 });
    });

    it("detects an edited detail (canonical JSON covers nested fields)", async () => {
      await someRows();
      const c = createClient({ url: t.url });
      await c.execute(
        `UPDATE audit_events SET detail = '{"z":1,"a":[1,{"y":2,"b":4}]}' WHERE seq = 2`,
      );
      c.close();
      expect((await store.verifyAuditChain()).firstBadSeq).toBe(2);
    });

    it("detects a deleted row (the next row's link breaks)", async () => {
      await someRows();
      const c = createClient({ url: t.url });
      await c.execute("DELETE FROM audit_events WHERE seq = 3");
      c.close();
      expect(await store.verifyAuditChain()).toEqual({ ok: false, rows: 3, firstBadSeq: 4 });
    });

    it("filters by network, trace id and time, newest first", async () => {
      await someRows();
      t.clock.advance(3600);
      await store.recordAudit([
        auditEvent("org-a", "late", { networkId: net.id, traceId: "f".repeat(32) }),
      ]);
      const since = new Date(t.clock.now.getTime() - 1000);
      expect((await store.listAudit("org-a", { limit: 100, since })).map((r) => r.action)).toEqual([
        "late",
      ]);
      expect((await store.listAudit("org-a", { limit: 100, traceId: "f".repeat(32) })).length).toBe(
        1,
      );
      expect((await store.listAudit("org-a", { limit: 2 })).map((r) => r.seq)).toEqual([5, 4]);
    });
  });
});
