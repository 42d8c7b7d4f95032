/**
 * The signer with the aws custody backend against two real moto_server processes, one per region
 * (starts: moto_server x2, the signer app in process with a real libSQL file and dev OIDC issuer).
 * Regions are paused (SIGSTOP) and killed to make real outages; the audit log must show every attempt.
 */
import { afterAll, beforeAll, expect, it } from "vitest";
import { createCustody } from "../signer/custody/index.ts";
import { hostPublicKeyPem, startTestSigner, type TestSigner } from "../signer/testing.ts";
import { MOTO_CREDENTIALS, type MotoRegion, motoServer, startMoto } from "./support/moto.ts";
import { describeWith } from "./support/tools.ts";

const TIMEOUT_MS = 800;
/** How long a region that failed is asked after the other (short here, so tests can wait it out). */
const COOLDOWN_MS = 300;

describeWith([motoServer], "signer with KMS in two moto regions", () => {
  let a: MotoRegion;
  let b: MotoRegion;
  let s: TestSigner;
  let admin: string;
  let networkId: string;

  beforeAll(async () => {
    [a, b] = await Promise.all([startMoto(), startMoto()]);
    const keyA = await a.createKey("us-east-1");
    const keyB = await b.createKey("eu-west-1");
    s = await startTestSigner({
      custody: () =>
        createCustody({
          backend: "aws",
          keys: { "us-east-1": keyA, "eu-west-1": keyB },
          endpoints: { "us-east-1": a.url, "eu-west-1": b.url },
          credentials: MOTO_CREDENTIALS,
          attemptTimeoutMs: TIMEOUT_MS,
          hedgeAfterMs: null,
          regionCooldownMs: COOLDOWN_MS,
        }),
    });
    admin = await s.token();
    const net = await s.call("POST", "/v1/networks", {
      token: admin,
      body: { name: "kms", cidrs: ["10.50.0.0/16"] },
    });
    expect(net.status, JSON.stringify(net.body)).toBe(201);
    networkId = net.body.id;
  }, 120_000);

  afterAll(async () => {
    await s?.close();
    await a?.kill();
    await b?.kill();
  });

  async function register() {
    const res = await s.call("POST", `/v1/networks/${networkId}/hosts`, {
      token: admin,
      body: { name: `h-${Math.random().toString(36).slice(2, 9)}` },
    });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    return res.body.enrollmentCode as string;
  }

  async function enroll(code: string) {
    return s.call("POST", "/v1/enroll", { body: { code, publicKey: await hostPublicKeyPem() } });
  }

  const decrypts = () => Object.values(s.custody.stats().decryptCalls).reduce((x, y) => x + y, 0);

  async function auditOf(traceId: string) {
    return s.store.listAudit("org-x", { traceId, limit: 100 });
  }

  it("seals the new CA in both regions, each with moto's request id in the audit log", async () => {
    const cas = await s.store.listCas(networkId);
    expect(cas[0]?.sealedKeys.map((k) => k.region).sort()).toEqual(["eu-west-1", "us-east-1"]);
    const rows = await s.store.listAudit("org-x", { networkId, limit: 100 });
    const encrypts = rows.filter((r) => r.action === "kms.encrypt");
    expect(encrypts.map((r) => r.region).sort()).toEqual(["eu-west-1", "us-east-1"]);
    for (const r of encrypts) {
      expect(r.outcome).toBe("ok");
      expect(r.kmsRequestIds[0]).toMatch(/\S{8,}/);
    }
  });

  it("coalesces the decrypts of many concurrent enrollments; one signature row per certificate", async () => {
    const codes: string[] = [];
    for (let i = 0; i < 30; i++) codes.push(await register());
    const before = decrypts();
    const results = await Promise.all(codes.map(enroll));
    for (const r of results) expect(r.status, JSON.stringify(r.body)).toBe(201);
    const used = decrypts() - before;
    console.log(`30 concurrent enrollments against moto: ${used} KMS decrypt call(s)`);
    expect(used).toBeGreaterThanOrEqual(1);
    expect(used).toBeLessThan(30);
    const rows = await s.store.listAudit("org-x", { networkId, limit: 1000 });
    for (const r of results)
      expect(rows.filter((x) => x.certFingerprint === r.body.fingerprint)).toHaveLength(1);
  });

  it("denies a principal of another org through KMS itself: audited, exactly one attempt, no failover", async () => {
    const mallory = await s.token({ sub: "mallory", org: "org-y" });
    const before = s.custody.stats();
    const res = await s.call("POST", `/v1/networks/${networkId}/sign`, {
      token: mallory,
      body: { publicKey: await hostPublicKeyPem(), name: "evil", networks: ["10.50.9.9"] },
    });
    expect(res.status).toBe(403);
    expect(res.body.error.code).toBe("context_denied");
    const after = s.custody.stats();
    expect(decrypts() - Object.values(before.decryptCalls).reduce((x, y) => x + y, 0)).toBe(1);
    expect(after.failovers).toBe(before.failovers);
    const rows = await auditOf(res.body.error.traceId);
    const attempt = rows.find((r) => r.action === "kms.decrypt");
    expect(attempt).toMatchObject({ outcome: "denied", region: "us-east-1" });
    expect(attempt?.kmsRequestIds[0]).toMatch(/\S{8,}/);
    expect(rows.find((r) => r.action === "cert.sign")?.outcome).toBe("denied");
  });

  it("answers within the attempt timeout when region A hangs (paused), through region B", async () => {
    const code = await register();
    a.pause();
    try {
      const started = Date.now();
      const res = await enroll(code);
      const ms = Date.now() - started;
      expect(res.status, JSON.stringify(res.body)).toBe(201);
      console.log(`enrollment with region A paused: ${ms} ms (attempt timeout ${TIMEOUT_MS} ms)`);
      expect(ms).toBeLessThan(TIMEOUT_MS + 2000);
      const rows = await auditOf(res.headers.get("x-request-id") ?? "");
      const attempts = rows
        .filter((r) => r.action === "kms.decrypt")
        .map((r) => `${r.region}:${r.outcome}`);
      expect(attempts.sort()).toEqual(["eu-west-1:ok", "us-east-1:error"]);
    } finally {
      a.resume();
    }
  });

  it("enrolls with region A killed; the audit log shows A's failed attempt and B's success; while A cools down B is asked first", async () => {
    const code = await register();
    await a.kill();
    // Whatever an earlier test did to region A, its cool-down is over: A is asked first again.
    await new Promise((r) => setTimeout(r, COOLDOWN_MS + 50));
    const res = await enroll(code);
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    const rows = await auditOf(res.headers.get("x-request-id") ?? "");
    const failed = rows.find((r) => r.action === "kms.decrypt" && r.region === "us-east-1");
    const ok = rows.find((r) => r.action === "kms.decrypt" && r.region === "eu-west-1");
    expect(failed?.outcome).toBe("error");
    expect(ok?.outcome).toBe("ok");
    expect(ok?.kmsRequestIds[0]).toMatch(/\S{8,}/);
    const sign = rows.find((r) => r.action === "cert.sign");
    expect(sign).toMatchObject({
      outcome: "ok",
      region: "eu-west-1",
      certFingerprint: res.body.fingerprint,
    });

    // Right after, A is cooling down: the next open asks B alone (one call, no failover).
    const before = s.custody.stats();
    const next = await enroll(await register());
    expect(next.status, JSON.stringify(next.body)).toBe(201);
    const after = s.custody.stats();
    expect(after.decryptCalls["us-east-1"]).toBe(before.decryptCalls["us-east-1"]);
    expect(after.decryptCalls["eu-west-1"]).toBe((before.decryptCalls["eu-west-1"] ?? 0) + 1);
    expect(after.failovers).toBe(before.failovers);
    const nextRows = await auditOf(next.headers.get("x-request-id") ?? "");
    expect(
      nextRows.filter((r) => r.action === "kms.decrypt").map((r) => `${r.region}:${r.outcome}`),
    ).toEqual(["eu-west-1:ok"]);
  });

  it("both regions down: 503 kms_unavailable, no certificate, the code still unused, attempts audited", async () => {
    const code = await register();
    await b.kill();
    const before = await s.snapshot();
    const res = await enroll(code);
    expect(res.status).toBe(503);
    expect(res.body.error.code).toBe("kms_unavailable");
    expect(res.body.certificate).toBeUndefined();
    const after = await s.snapshot();
    expect(after.certificates).toBe(before.certificates);
    expect(after.usedCodes).toBe(before.usedCodes);
    const rows = await auditOf(res.body.error.traceId);
    expect(
      rows
        .filter((r) => r.action === "kms.decrypt")
        .map((r) => `${r.region}:${r.outcome}`)
        .sort(),
    ).toEqual(["eu-west-1:error", "us-east-1:error"]);
  });
});
