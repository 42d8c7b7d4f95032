/**
 * The signer's routes through `app.request()`: real libSQL file, real local custody (two development
 * regions), real OIDC issuer on loopback. Every refusal must carry its stable code and leave the
 * database exactly as it was.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CaPool, parseCertificatesPem } from "../core/cert/index.ts";
import type { AuditRowView, CaView } from "../core/contract/api.ts";
import { hostPublicKeyPem, type Reply, startTestSigner, type TestSigner } from "./testing.ts";

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

/** Flips one character in the middle of the signature part. */
function tamperSignature(token: string): string {
  const at = token.lastIndexOf(".") + 10;
  return `${token.slice(0, at)}${token[at] === "A" ? "B" : "A"}${token.slice(at + 1)}`;
}

/** Runs `act`, expects the status and code, and proves that no row changed. */
async function refusedWithoutWrites(act: () => Promise<Reply>, status: number, code: string) {
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
      .map((r: AuditRowView) => `${r.action}:${r.outcome}:${r.region ?? ""}`)
      .sort();
    expect(actions).toEqual(["ca.create:ok:", "kms.encrypt:ok:local-a", "kms.encrypt:ok:local-b"]);
    for (const r of audit.body.rows.filter((r: AuditRowView) => r.action === "kms.encrypt")) {
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
    if (!cert) throw new Error("no certificate in the answer");
    await expect(pool.verify(cert)).resolves.toBeTruthy();
    expect(res.body.hostToken).toMatch(/^kht_/);
    expect(res.body.config.network.id).toBe(net.id);
  });

  it("refuses calls without credentials, with a bad token, without scope or without MFA, writing nothing", async () => {
    const body = { name: "refused", cidrs: ["10.9.0.0/16"] };
    await refusedWithoutWrites(
      () => s.call("POST", "/v1/networks", { body }),
      401,
      "unauthenticated",
    );
    await refusedWithoutWrites(
      () => s.call("POST", "/v1/networks", { body, token: "abc.def.ghi" }),
      401,
      "invalid_token",
    );
    const expired = await s.token({ expiresInSec: -300 });
    await refusedWithoutWrites(
      () => s.call("POST", "/v1/networks", { body, token: expired }),
      401,
      "invalid_token",
    );
    const noScope = await s.token({ scope: "hosts:read" });
    await refusedWithoutWrites(
      () => s.call("POST", "/v1/networks", { body, token: noScope }),
      403,
      "insufficient_scope",
    );
    const noMfa = await s.token({ amr: ["pwd"] });
    await refusedWithoutWrites(
      () => s.call("POST", "/v1/networks", { body, token: noMfa }),
      403,
      "mfa_required",
    );
    const net = await createNetwork();
    await refusedWithoutWrites(
      () => s.call("POST", `/v1/networks/${net.id}/ca-rotations`, { body: {}, token: noMfa }),
      403,
      "mfa_required",
    );
    await refusedWithoutWrites(
      () => s.call("GET", "/v1/networks", { token: tamperSignature(noScope) }),
      401,
      "invalid_token",
    );
  });

  it("refuses malformed, oversized, mistyped and invalid bodies with a stable code and the field", async () => {
    const encryptsBefore = Object.values(s.custody.stats().encryptCalls).reduce((a, b) => a + b, 0);
    const post = (o: Parameters<TestSigner["call"]>[2]) =>
      s.call("POST", "/v1/networks", { token: admin, ...o });
    await refusedWithoutWrites(
      () => post({ rawBody: "{not json", headers: { "content-type": "application/json" } }),
      400,
      "invalid_json",
    );
    await refusedWithoutWrites(
      () => post({ rawBody: "{}", headers: { "content-type": "text/plain" } }),
      415,
      "unsupported_media_type",
    );
    const big = JSON.stringify({ name: "x", cidrs: ["10.0.0.0/8"], pad: "x".repeat(70_000) });
    await refusedWithoutWrites(
      () => post({ rawBody: big, headers: { "content-type": "application/json" } }),
      413,
      "body_too_large",
    );
    const missing = await refusedWithoutWrites(
      () => post({ body: { name: "x" } }),
      400,
      "invalid_request",
    );
    expect(missing.body.error.details.field).toBe("cidrs");
    const extra = await refusedWithoutWrites(
      () => post({ body: { name: "x", cidrs: ["10.0.0.0/8"], evil: 1 } }),
      400,
      "invalid_request",
    );
    expect(extra.body.error.message).toMatch(/evil/);
    const cidr = await refusedWithoutWrites(
      () => post({ body: { name: "x", cidrs: ["10.0.0.300/8"] } }),
      400,
      "invalid_network",
    );
    expect(cidr.body.error.details.field).toBe("cidrs.0");
    await refusedWithoutWrites(
      () => post({ body: { name: "x", cidrs: ["10.0.0.0/8"], caLifetime: "forever" } }),
      400,
      "invalid_request",
    );
    await refusedWithoutWrites(
      () => post({ body: { name: "x", cidrs: ["10.0.0.0/8"], curve: "P384" } }),
      400,
      "invalid_request",
    );
    const encryptsAfter = Object.values(s.custody.stats().encryptCalls).reduce((a, b) => a + b, 0);
    expect(encryptsAfter).toBe(encryptsBefore);
  });

  it("refuses a second network of the same name", async () => {
    const net = await createNetwork();
    await refusedWithoutWrites(
      () =>
        s.call("POST", "/v1/networks", {
          token: admin,
          body: { name: net.name, cidrs: ["10.1.0.0/16"] },
        }),
      409,
      "name_taken",
    );
  });

  it("refuses a v1 network that a v1 certificate cannot hold, before any KMS call", async () => {
    for (const cidrs of [
      ["10.8.0.0/16", "10.9.0.0/16"],
      ["fd08::/64"],
      ["10.8.0.0/16", "fd08::/64"],
    ]) {
      const encrypts = s.custody.stats().encryptCalls;
      await refusedWithoutWrites(
        () =>
          s.call("POST", "/v1/networks", {
            token: admin,
            body: { name: `v1-${cidrs.length}-${cidrs[0]}`, cidrs, certVersion: 1 },
          }),
        400,
        "invalid_network",
      );
      expect(s.custody.stats().encryptCalls).toEqual(encrypts);
    }
  });

  it("refuses bad host registrations: address outside or taken, unknown group of a constrained CA", async () => {
    const net = await createNetwork({ groups: ["web", "db"] });
    const reg = await registerHost(net.id, { ip: "10.42.0.10", groups: ["web"] });
    expect(reg.host.ip).toBe("10.42.0.10/16");
    const post = (body: Record<string, unknown>) =>
      s.call("POST", `/v1/networks/${net.id}/hosts`, { token: admin, body });
    await refusedWithoutWrites(
      () => post({ name: "out", ip: "192.168.1.1" }),
      400,
      "ip_outside_network",
    );
    await refusedWithoutWrites(() => post({ name: "dup-ip", ip: "10.42.0.10" }), 409, "ip_taken");
    await refusedWithoutWrites(() => post({ name: reg.host.name }), 409, "name_taken");
    await refusedWithoutWrites(() => post({ name: "g", groups: ["admin"] }), 400, "unknown_group");
    await refusedWithoutWrites(() => post({ name: "bad name!" }), 400, "invalid_request");
    await refusedWithoutWrites(
      () => s.call("POST", "/v1/networks/net_nope/hosts", { token: admin, body: { name: "x" } }),
      404,
      "not_found",
    );
  });

  it("refuses bad public keys and reused or expired codes, leaving the code usable after bad input", async () => {
    const net = await createNetwork();
    const reg = await registerHost(net.id);
    const enroll = (publicKey: string, code = reg.enrollmentCode) =>
      s.call("POST", "/v1/enroll", { body: { code, publicKey } });
    const good = await hostPublicKeyPem();
    const garbage = good.replace(/\n[A-Za-z0-9+/]{4}/, "\n!!!!");
    await refusedWithoutWrites(() => enroll(garbage), 400, "invalid_public_key");
    const short =
      "-----BEGIN NEBULA X25519 PUBLIC KEY-----\nAAAA\n-----END NEBULA X25519 PUBLIC KEY-----\n";
    await refusedWithoutWrites(() => enroll(short), 400, "invalid_public_key");
    await refusedWithoutWrites(
      async () => enroll(await hostPublicKeyPem("P256")),
      400,
      "wrong_curve",
    );
    await refusedWithoutWrites(
      () => enroll(good, "khe_not-a-real-code-at-all"),
      401,
      "invalid_enrollment_code",
    );
    const first = await enroll(good);
    expect(first.status, JSON.stringify(first.body)).toBe(201);
    await refusedWithoutWrites(() => enroll(good), 401, "invalid_enrollment_code");

    const late = await registerHost(net.id, { codeTtl: "1h" });
    s.clock.advance(3601);
    try {
      await refusedWithoutWrites(
        () => enroll(good, late.enrollmentCode),
        401,
        "invalid_enrollment_code",
      );
    } finally {
      s.clock.advance(-3601);
    }
  });

  it("renews with the host token, rotates it, and blocks the host when an old token is reused", async () => {
    const net = await createNetwork();
    const reg = await registerHost(net.id);
    const enrolled = await s.call("POST", "/v1/enroll", {
      body: { code: reg.enrollmentCode, publicKey: await hostPublicKeyPem() },
    });
    const t1 = enrolled.body.hostToken;
    const renew = (token: string, body: Record<string, unknown> = {}) =>
      s.call("POST", "/v1/renew", { token, body });
    const r1 = await renew(t1);
    expect(r1.status, JSON.stringify(r1.body)).toBe(201);
    expect(r1.body.hostToken).not.toBe(t1);
    expect(r1.body.fingerprint).not.toBe(enrolled.body.fingerprint);
    const samePub = parseCertificatesPem(r1.body.certificate)[0]?.publicKey;
    expect(samePub).toEqual(parseCertificatesPem(enrolled.body.certificate)[0]?.publicKey);
    const r2 = await renew(r1.body.hostToken, { publicKey: await hostPublicKeyPem() });
    expect(r2.status).toBe(201);
    await refusedWithoutWrites(
      () => renew(r2.body.hostToken, { publicKey: "nope" }),
      400,
      "invalid_request",
    );
    const reused = await renew(t1);
    expect(reused.status).toBe(401);
    expect(reused.body.error.code).toBe("host_token_reused");
    const after = await renew(r2.body.hostToken);
    expect(after.status).toBe(403);
    expect(after.body.error.code).toBe("host_blocked");
    const host = await s.call("GET", `/v1/hosts/${reg.host.id}`, { token: admin });
    expect(host.body.state).toBe("blocked");
  });

  it("renewing the same key many times within one second: distinct certificates, then 429 with Retry-After and nothing written", async () => {
    const net = await createNetwork();
    const reg = await registerHost(net.id);
    // The clock is held still: the enrollment and every renewal below happen in the same second.
    const frozen = new Date(Date.now());
    const realNow = Date.now;
    Date.now = () => frozen.getTime();
    try {
      const enrolled = await s.call("POST", "/v1/enroll", {
        body: { code: reg.enrollmentCode, publicKey: await hostPublicKeyPem() },
      });
      expect(enrolled.status).toBe(201);
      let token = enrolled.body.hostToken as string;
      const fingerprints = new Set<string>([enrolled.body.fingerprint]);
      let refused: Reply | undefined;
      for (let i = 0; i < 12 && refused === undefined; i++) {
        const before = await s.snapshot();
        const r = await s.call("POST", "/v1/renew", { token, body: {} });
        if (r.status === 201) {
          expect(fingerprints.has(r.body.fingerprint)).toBe(false);
          fingerprints.add(r.body.fingerprint);
          token = r.body.hostToken;
        } else {
          refused = r;
          // Refused before the CA key was opened: not even an audit row.
          expect(await s.snapshot()).toEqual(before);
        }
      }
      // The enrollment and five renewals: six distinct certificates in one second, then a refusal.
      expect(fingerprints.size).toBe(6);
      expect(refused?.status).toBe(429);
      expect(refused?.body.error.code).toBe("rate_limited");
      expect(refused?.headers.get("retry-after")).toBe("1");
      // The refused renewal wrote nothing: the token it presented still works a second later.
      Date.now = () => frozen.getTime() + 1000;
      const later = await s.call("POST", "/v1/renew", { token, body: {} });
      expect(later.status, JSON.stringify(later.body)).toBe(201);
    } finally {
      Date.now = realNow;
    }
  });

  it("blocks a host: its certificates join the blocklist, readable by admins", async () => {
    const net = await createNetwork();
    const reg = await registerHost(net.id);
    const enrolled = await s.call("POST", "/v1/enroll", {
      body: { code: reg.enrollmentCode, publicKey: await hostPublicKeyPem() },
    });
    const other = await registerHost(net.id);
    const otherEnrolled = await s.call("POST", "/v1/enroll", {
      body: { code: other.enrollmentCode, publicKey: await hostPublicKeyPem() },
    });
    const viaToken = await s.call("GET", `/v1/networks/${net.id}/blocklist`, {
      token: otherEnrolled.body.hostToken,
    });
    expect(viaToken.status, JSON.stringify(viaToken.body)).toBe(200);
    expect(viaToken.body.fingerprints).toEqual([]);
    const blocked = await s.call("POST", `/v1/hosts/${reg.host.id}/block`, {
      token: admin,
      body: {},
    });
    expect(blocked.status, JSON.stringify(blocked.body)).toBe(200);
    expect(blocked.body.state).toBe("blocked");
    const list = await s.call("GET", `/v1/networks/${net.id}/blocklist`, { token: admin });
    expect(list.body.fingerprints).toEqual([enrolled.body.fingerprint]);
    const renew = await s.call("POST", "/v1/renew", { token: enrolled.body.hostToken, body: {} });
    expect(renew.body.error.code).toBe("host_blocked");
  });

  it("signs directly within the network, refuses outside it, and replays an Idempotency-Key", async () => {
    const net = await createNetwork({ certVersion: 1 });
    const publicKey = await hostPublicKeyPem();
    const sign = (body: Record<string, unknown>, headers: Record<string, string> = {}) =>
      s.call("POST", `/v1/networks/${net.id}/sign`, {
        token: admin,
        body: { publicKey, name: "ci-box", ...body },
        headers,
      });
    await refusedWithoutWrites(
      () => sign({ networks: ["10.43.0.1/16"] }),
      400,
      "ip_outside_network",
    );
    await refusedWithoutWrites(
      () => sign({ networks: ["10.42.0.9/16"], duration: "soon" }),
      400,
      "invalid_request",
    );
    const ok = await sign(
      { networks: ["10.42.0.9"], groups: ["ci"] },
      { "idempotency-key": "req-1" },
    );
    expect(ok.status, JSON.stringify(ok.body)).toBe(201);
    expect(parseCertificatesPem(ok.body.certificate)[0]?.version).toBe(1);
    const before = await s.snapshot();
    const again = await sign(
      { networks: ["10.42.0.9"], groups: ["ci"] },
      { "idempotency-key": "req-1" },
    );
    expect(again.status).toBe(200);
    expect(again.body).toEqual(ok.body);
    expect(await s.snapshot()).toEqual(before);
    await refusedWithoutWrites(
      () => sign({ networks: ["10.42.0.10"] }, { "idempotency-key": "req-1" }),
      409,
      "idempotency_conflict",
    );
  });

  it("keeps orgs apart: reads answer not_found, signing is denied by KMS, audited and not retried", async () => {
    const net = await createNetwork();
    const mallory = await s.token({ sub: "mallory", org: "org-y" });
    await refusedWithoutWrites(
      () => s.call("GET", `/v1/networks/${net.id}`, { token: mallory }),
      404,
      "not_found",
    );
    await refusedWithoutWrites(
      () => s.call("GET", `/v1/networks/${net.id}/hosts`, { token: mallory }),
      404,
      "not_found",
    );
    const reg = await registerHost(net.id);
    await refusedWithoutWrites(
      () => s.call("GET", `/v1/hosts/${reg.host.id}`, { token: mallory }),
      404,
      "not_found",
    );
    const listed = await s.call("GET", "/v1/networks", { token: mallory });
    expect(listed.body.networks).toEqual([]);

    const stats0 = s.custody.stats();
    const before = await s.snapshot();
    const res = await s.call("POST", `/v1/networks/${net.id}/sign`, {
      token: mallory,
      body: { publicKey: await hostPublicKeyPem(), name: "evil", networks: ["10.42.7.7/16"] },
    });
    expect(res.status).toBe(403);
    expect(res.body.error.code).toBe("context_denied");
    const stats1 = s.custody.stats();
    const calls = (st: typeof stats0) => Object.values(st.decryptCalls).reduce((a, b) => a + b, 0);
    expect(calls(stats1) - calls(stats0)).toBe(1);
    expect(stats1.denials - stats0.denials).toBe(1);
    expect(stats1.failovers).toBe(stats0.failovers);
    const after = await s.snapshot();
    expect(after.certificates).toBe(before.certificates);
    const rows = await s.store.listAudit("org-x", {
      networkId: net.id,
      traceId: res.body.error.traceId,
      limit: 10,
    });
    const kinds = rows.map((r) => `${r.action}:${r.outcome}`).sort();
    expect(kinds).toEqual(["cert.sign:denied", "kms.decrypt:denied"]);
    expect(rows.find((r) => r.action === "kms.decrypt")?.kmsRequestIds).toHaveLength(1);
    expect(rows[0]?.detail.callerOrg).toBe("org-y");
  });

  it("rotates the CA: both CAs in the bundle, new certificates from the new one", async () => {
    const net = await createNetwork();
    const rotated = await s.call("POST", `/v1/networks/${net.id}/ca-rotations`, {
      token: admin,
      body: {},
    });
    expect(rotated.status, JSON.stringify(rotated.body)).toBe(201);
    expect(rotated.body.cas.map((c: CaView) => c.state).sort()).toEqual(["active", "previous"]);
    expect(parseCertificatesPem(rotated.body.caBundle)).toHaveLength(2);
    const active = rotated.body.cas.find((c: CaView) => c.state === "active");
    const signed = await s.call("POST", `/v1/networks/${net.id}/sign`, {
      token: admin,
      body: {
        publicKey: await hostPublicKeyPem(),
        name: "after-rotation",
        networks: ["10.42.0.50"],
      },
    });
    expect(signed.body.caFingerprint).toBe(active.fingerprint);
  });

  it("lists audit rows and verifies the chain; serves metrics as JSON and Prometheus text", async () => {
    const audit = await s.call("GET", "/v1/audit?limit=5", { token: admin });
    expect(audit.status).toBe(200);
    expect(audit.body.rows.length).toBeGreaterThan(0);
    await refusedWithoutWrites(
      () => s.call("GET", "/v1/audit?limit=0", { token: admin }),
      400,
      "invalid_request",
    );
    const verify = await s.call("GET", "/v1/audit/verify", { token: admin });
    expect(verify.body).toMatchObject({ ok: true });
    expect(verify.body.rows).toBeGreaterThan(5);
    const json = await s.call("GET", "/v1/metrics");
    expect(json.body.certificatesIssued).toBeGreaterThan(0);
    expect(json.body.custody.opens).toBeGreaterThan(0);
    // Every committed write was synced to disk off the event loop (db/wal.ts).
    expect(json.body.store.wal.syncs).toBeGreaterThanOrEqual(json.body.store.transactions);
    const text = await s.call("GET", "/v1/metrics", { headers: { accept: "text/plain" } });
    expect(text.body).toMatch(
      /keyhole_requests_total\{method="POST",route="\/v1\/enroll",status="201"\} \d+/,
    );
    expect(text.body).toMatch(/keyhole_kms_duration_ms_count\{region="local-a"\} \d+/);
    expect(text.body).toMatch(/keyhole_store_wal_syncs_total [1-9]\d*/);
  });

  it("logs one line per request with trace id, route, status and time, and never a secret", async () => {
    const net = await createNetwork();
    const reg = await registerHost(net.id);
    const enrolled = await s.call("POST", "/v1/enroll", {
      body: { code: reg.enrollmentCode, publicKey: await hostPublicKeyPem() },
    });
    const line = s.logs.lines.findLast((l) => l.route === "/v1/enroll" && l.status === 201);
    expect(line).toMatchObject({ msg: "request", method: "POST" });
    expect(line?.traceId).toBe(enrolled.headers.get("x-request-id"));
    expect(typeof line?.ms).toBe("number");
    const all = JSON.stringify(s.logs.lines);
    expect(all).not.toContain(reg.enrollmentCode);
    expect(all).not.toContain(enrolled.body.hostToken);
    expect(all).not.toContain(admin);
  });

  it("coalesces decrypts of concurrent enrollments; each certificate has exactly one signature row", async () => {
    const net = await createNetwork();
    const regs = [];
    for (let i = 0; i < 40; i++) regs.push(await registerHost(net.id));
    const calls = () => Object.values(s.custody.stats().decryptCalls).reduce((a, b) => a + b, 0);
    const before = calls();
    const results = await Promise.all(
      regs.map(async (r) =>
        s.call("POST", "/v1/enroll", {
          body: { code: r.enrollmentCode, publicKey: await hostPublicKeyPem() },
        }),
      ),
    );
    for (const r of results) expect(r.status, JSON.stringify(r.body)).toBe(201);
    const decrypts = calls() - before;
    expect(decrypts).toBeGreaterThanOrEqual(1);
    expect(decrypts).toBeLessThan(40);
    const rows = await s.store.listAudit("org-x", { networkId: net.id, limit: 1000 });
    for (const r of results) {
      expect(rows.filter((row) => row.certFingerprint === r.body.fingerprint)).toHaveLength(1);
    }
    expect(rows.filter((row) => row.action === "kms.decrypt")).toHaveLength(decrypts);
    console.log(`40 concurrent enrollments: ${decrypts} KMS decrypt call(s)`);
  });

  it("replays an enrollment retried with the same Idempotency-Key instead of issuing twice", async () => {
    const net = await createNetwork();
    const reg = await registerHost(net.id);
    const body = { code: reg.enrollmentCode, publicKey: await hostPublicKeyPem() };
    const headers = { "idempotency-key": "relay-attempt-1" };
    const first = await s.call("POST", "/v1/enroll", { body, headers });
    expect(first.status, JSON.stringify(first.body)).toBe(201);
    const before = await s.snapshot();
    const retry = await s.call("POST", "/v1/enroll", { body, headers });
    expect(retry.status).toBe(200);
    expect(retry.headers.get("idempotent-replayed")).toBe("true");
    expect(retry.body.fingerprint).toBe(first.body.fingerprint);
    expect(retry.body.certificate).toBe(first.body.certificate);
    // The host token is shown once; only its hash is stored, so a replay cannot show it again.
    expect(retry.body.hostToken).toBe("");
    expect(await s.snapshot()).toEqual(before);
    await refusedWithoutWrites(
      () => s.call("POST", "/v1/enroll", { body }),
      401,
      "invalid_enrollment_code",
    );
  });

  it("measures enrollment throughput through the app (local custody, file database)", async () => {
    const net = await createNetwork();
    const regs: { enrollmentCode: string }[] = [];
    for (let i = 0; i < 100; i++) regs.push(await registerHost(net.id));
    const keys = await Promise.all(regs.map(() => hostPublicKeyPem()));
    const started = performance.now();
    let next = 0;
    const worker = async () => {
      while (next < regs.length) {
        const i = next++;
        const res = await s.call("POST", "/v1/enroll", {
          body: { code: regs[i]?.enrollmentCode, publicKey: keys[i] },
        });
        expect(res.status).toBe(201);
      }
    };
    await Promise.all(Array.from({ length: 16 }, worker));
    const seconds = (performance.now() - started) / 1000;
    console.log(
      `100 enrollments, 16 at a time: ${(100 / seconds).toFixed(0)} per second (${(seconds * 1000).toFixed(0)} ms)`,
    );
  });
});
