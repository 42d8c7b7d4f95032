/**
 * The signer's routes through `app.request()`: real libSQL file, real local custody (two development
 * regions), real OIDC issuer on loopback. Every refusal must carry its stable code and leave the
 * database exactly as it was.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CaPool, parseCertificatesPem } from "../core/cert/index.ts";
import { hostPublicKeyPem, startTestSigner, type TestSigner } from "./testing.ts";

let s: TestSigner;
let admin: string;

beforeAll(async () => {
  s = await startTestSigner();
  admin = await s.token();
});
afterAll(async () => {
  await s?.close();
});

async function createNetwork(body: Record<string, unknown> = {}, token = admin) {
  const name = `net-${Math.random().toString(36).slice(2, 8)}`;
  const res = await s.call("POST", "/v1/networks", {
    token,
    body: { name, cidrs: ["10.42.0.0/16"], ...body },
  });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body;
}

async function registerHost(networkId: string, body: Record<string, unknown> = {}) {
  const name = `h-${Math.random().toString(36).slice(2, 8)}`;
  const res = await s.call("POST", `/v1/networks/${networkId}/hosts`, {
    token: admin,
    body: { name, ...body },
  });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body;
}

/** Runs `act`, expects the status and code, and proves that no row changed. */
async function refusedWithoutWrites(
  act: () => Promise<{ status: number; body: any }>,
  status: number,
  code: string,
) {
  const before = await s.snapshot();
  const res = await act();
  expect(res.status, JSON.stringify(res.body)).toBe(status);
  expect(res.body.error.code).toBe(code);
  expect(res.body.error.traceId).toMatch(/^[0-9a-f]{32}$/);
  expect(await s.snapshot()).toEqual(before);
  return res;
}

describe("signer app", () => {
  it("answers health with both custody regions and echoes the trace id of traceparent", async () => {
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    const res = await s.call("GET", "/v1/health", {
      headers: { traceparent: `00-${traceId}-00f067aa0ba902b7-01` },
    });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ status: "ok", role: "signer", region: "test-a" });
    expect(Object.keys(res.body.regions)).toEqual(["local-a", "local-b"]);
    expect(res.headers.get("x-request-id")).toBe(traceId);
    const made = await s.call("GET", "/v1/health");
    expect(made.headers.get("x-request-id")).toMatch(/^[0-9a-f]{32}$/);
  });

  it("creates a network whose CA is sealed in both regions, with audit rows", async () => {
    const net = await createNetwork({ curve: "25519", certVersion: 2 });
    expect(net.cas).toHaveLength(1);
    expect(net.caBundle).toContain("NEBULA CERTIFICATE");
    const cas = await s.store.listCas(net.id);
    expect(cas[0]?.sealedKeys.map((k) => k.region)).toEqual(["local-a", "local-b"]);
    const audit = await s.call("GET", `/v1/audit?networkId=${net.id}`, { token: admin });
    const actions = audit.body.rows
      .map((r: any) => `${r.action}:${r.outcome}:${r.region ?? ""}`)
      .sort();
    expect(actions).toEqual(["ca.create:ok:", "kms.encrypt:ok:local-a", "kms.encrypt:ok:local-b"]);
    for (const r of audit.body.rows.filter((r: any) => r.action === "kms.encrypt")) {
      expect(r.kmsRequestIds).toHaveLength(1);
    }
  });

  it("enrolls a host: certificate verifies against the CA bundle, host token returned", async () => {
    const net = await createNetwork();
    const reg = await registerHost(net.id, { groups: ["servers"] });
    expect(reg.enrollmentCode).toBeTruthy();
    const res = await s.call("POST", "/v1/enroll", {
      body: { code: reg.enrollmentCode, publicKey: await hostPublicKeyPem() },
    });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    const cert = parseCertificatesPem(res.body.certificate)[0];
    expect(cert?.name).toBe(reg.host.name);
    expect(cert?.groups).toEqual(["servers"]);
    expect(cert?.networks).toEqual([reg.host.ip]);
    const pool = CaPool.fromPem(res.body.caBundle);
    await expect(pool.verify(cert!)).resolves.toBeTruthy();
    expect(res.body.hostToken).toMatch(/^kht_/);
    expect(res.body.config.network.id).toBe(net.id);
  });
});
