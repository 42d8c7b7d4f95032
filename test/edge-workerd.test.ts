/**
 * The edge in workerd (Miniflare, edge/worker.ts bundled with esbuild) in front of two REAL signers
 * (`bun signer/main.ts`, regions a and b, one libSQL file, local custody) over REAL mutual TLS from a
 * dev relay PKI, with tokens from the dev OIDC issuer and from the `oidc-provider` package. Proves:
 * bad tokens refused with stable codes, scopes and MFA, JWKS rotation without restart, rate limits
 * with headers (enrollment guessing cut off), and failover: A down => B serves; both down => 503.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type DevIssuer, startDevIssuer } from "../cli/dev/issuer.ts";
import { makeRelayPki, type RelayPki } from "../cli/dev/pki.ts";
import { generateHostKeyPair, publicKeyToPem } from "../core/cert/index.ts";
import { type BunSigner, startBunSigner } from "../edge/testing/bun-signer.ts";
import { startTestOpenIdProvider, type TestOpenIdProvider } from "../edge/testing/oidc-provider.ts";
import { ALL_SCOPES, BAD_TOKEN_CASES } from "../edge/testing/token-cases.ts";
import { type EdgeInMiniflare, startEdgeInMiniflare } from "./support/miniflare.ts";

const AUDIENCE = "keyhole-edge-test";

let dir: string;
let pki: RelayPki;
let issuer: DevIssuer;
let op: TestOpenIdProvider;
let signerA: BunSigner;
let signerB: BunSigner;
let edge: EdgeInMiniflare;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "keyhole-edge-workerd-"));
  pki = await makeRelayPki(join(dir, "pki"));
  issuer = await startDevIssuer({ audience: AUDIENCE });
  op = await startTestOpenIdProvider({ audience: AUDIENCE, org: "acme", amr: ["hwk"] });
  const common = {
    pki,
    dbUrl: `file:${join(dir, "keyhole.db")}`,
    dataDir: join(dir, "custody"),
    oidcIssuers: [issuer.issuer, op.issuer],
    audience: AUDIENCE,
  };
  // One at a time: the first applies the migrations and makes the development master keys.
  signerA = await startBunSigner({ ...common, region: "a" });
  signerB = await startBunSigner({ ...common, region: "b" });
  edge = await startEdgeInMiniflare({
    vars: {
      KEYHOLE_SIGNERS: `a=${signerA.url},b=${signerB.url}`,
      KEYHOLE_OIDC_ISSUERS: `${issuer.issuer},${op.issuer}`,
      KEYHOLE_OIDC_AUDIENCE: AUDIENCE,
      KEYHOLE_OIDC_JWKS_COOLDOWN_MS: "0",
      KEYHOLE_SIGNER_TIMEOUT_MS: "5000",
    },
    tls: { caFile: pki.caCert, certFile: pki.clientCert, keyFile: pki.clientKey },
    rates: { address: { limit: 5, periodSec: 60 } },
  });
}, 120_000);

afterAll(async () => {
  await edge?.dispose();
  await signerA?.kill();
  await signerB?.kill();
  await op?.close();
  await issuer?.close();
  await rm(dir, { recursive: true, force: true });
});

let addressCounter = 0;
/** Miniflare keeps a client-sent CF-Connecting-IP, so each test can be its own client address. */
function freshAddress(): string {
  addressCounter += 1;
  return `192.0.2.${addressCounter}`;
}

async function call(
  method: string,
  path: string,
  options: { token?: string; body?: unknown; headers?: Record<string, string> } = {},
) {
  const headers: Record<string, string> = { ...options.headers };
  if (options.token) headers.authorization = `Bearer ${options.token}`;
  if (options.body !== undefined) headers["content-type"] = "application/json";
  headers["cf-connecting-ip"] ??= freshAddress();
  const res = await fetch(`${edge.url}${path}`, {
    method,
    headers,
    ...(options.body !== undefined ? { body: JSON.stringify(options.body) } : {}),
  });
  // biome-ignore lint/suspicious/noExplicitAny: tests read JSON bodies freely
  const body = (await res.json().catch(() => null)) as any;
  return { status: res.status, headers: res.headers, body };
}

async function admin(claims: Parameters<DevIssuer["mint"]>[0] = {}) {
  return issuer.mint({
    sub: "alice",
    org: "acme",
    scope: ALL_SCOPES,
    amr: ["pwd", "otp"],
    ...claims,
  });
}

/** The edge's own log line for this response: answered `status` without trying any signer. */
async function expectNotRelayed(headers: Headers, status: number): Promise<void> {
  const line = await edge.requestLog(headers.get("x-request-id") ?? "");
  expect(line.status).toBe(status);
  expect(line.relay).toBeUndefined();
}

async function hostPublicKey(): Promise<string> {
  const pair = await generateHostKeyPair("CURVE25519");
  return publicKeyToPem("CURVE25519", pair.publicKey);
}

let networkId = "";

describe("edge in workerd relaying to real Bun signers over mTLS", () => {
  it("creates a network, registers a host and enrolls it through the edge", async () => {
    const created = await call("POST", "/v1/networks", {
      token: await admin(),
      body: { name: "edge-e2e", cidrs: ["10.42.0.0/16"] },
    });
    expect(created.status, JSON.stringify(created.body)).toBeLessThan(300);
    expect(created.headers.get("x-request-id")).toMatch(/^[0-9a-f]{32}$/);
    networkId = created.body.id;
    expect(networkId).toMatch(/^net_/);

    const host = await call("POST", `/v1/networks/${networkId}/hosts`, {
      token: await admin(),
      body: { name: "web-1" },
    });
    expect(host.status, JSON.stringify(host.body)).toBeLessThan(300);
    const enrolled = await call("POST", "/v1/enroll", {
      body: { code: host.body.enrollmentCode, publicKey: await hostPublicKey() },
    });
    expect(enrolled.status, JSON.stringify(enrolled.body)).toBe(201);
    expect(enrolled.body.certificate).toContain("NEBULA CERTIFICATE");
    expect(enrolled.body.hostToken).toMatch(/^kht_/);
    expect(enrolled.headers.get("x-keyhole-region")).toBe("a");
    // The edge's log says where it went: through the SIGNER binding to the real signer's URL.
    const traceId = enrolled.headers.get("x-request-id") ?? "";
    const line = await edge.requestLog(traceId);
    expect(line.relay).toEqual([expect.objectContaining({ region: "a", status: 201 })]);
    expect(edge.relayed).toContainEqual(
      expect.objectContaining({ traceId, route: "/v1/enroll", regionUrl: signerA.url }),
    );

    // The signer audited the enrollment under the edge's trace id.
    const audit = await call("GET", `/v1/audit?traceId=${traceId}`, { token: await admin() });
    expect(audit.status, JSON.stringify(audit.body)).toBe(200);
    const rows = Array.isArray(audit.body) ? audit.body : audit.body.rows;
    expect(rows.length).toBeGreaterThan(0);
    expect(rows.every((r: { traceId: string }) => r.traceId === traceId)).toBe(true);
  });

  it("accepts a token from oidc-provider (client credentials, JWT access token)", async () => {
    const token = await op.token(["hosts:read"]);
    const res = await call("GET", "/v1/networks", { token });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
  });

  it("refuses an oidc-provider token without the route's scope (403) and a tampered one (401)", async () => {
    const readOnly = await op.token(["hosts:read"]);
    const denied = await call("POST", `/v1/networks/${networkId}/hosts`, {
      token: readOnly,
      body: { name: "web-2" },
    });
    expect(denied.status).toBe(403);
    expect(denied.body.error.code).toBe("insufficient_scope");
    const [h, p, s] = readOnly.split(".") as [string, string, string];
    const claims = JSON.parse(Buffer.from(p, "base64url").toString());
    const forged = `${h}.${Buffer.from(JSON.stringify({ ...claims, scope: ALL_SCOPES.join(" ") })).toString("base64url")}.${s}`;
    const refused = await call("POST", `/v1/networks/${networkId}/hosts`, {
      token: forged,
      body: { name: "web-2" },
    });
    expect(refused.status).toBe(401);
    expect(refused.body.error.code).toBe("invalid_token");
  });

  for (const bad of BAD_TOKEN_CASES) {
    it(`refuses a dev-issuer token: ${bad.name} (401 invalid_token)`, async () => {
      const res = await call("GET", "/v1/networks", { token: await bad.make(issuer) });
      expect(res.status).toBe(401);
      expect(res.body.error.code).toBe("invalid_token");
      expect(res.body.error.message).toMatch(bad.reason);
      expect(res.body.error.traceId).toBe(res.headers.get("x-request-id"));
      await expectNotRelayed(res.headers, 401);
    });
  }

  it("refuses a missing scope (403 insufficient_scope)", async () => {
    const res = await call("POST", `/v1/networks/${networkId}/sign`, {
      token: await admin({ scope: "hosts:read" }),
      body: { publicKey: await hostPublicKey(), name: "direct", networks: ["10.42.0.99/16"] },
    });
    expect(res.status).toBe(403);
    expect(res.body.error.code).toBe("insufficient_scope");
  });

  it("refuses CA creation without MFA (403 mfa_required)", async () => {
    const res = await call("POST", "/v1/networks", {
      token: await admin({ amr: ["pwd"] }),
      body: { name: "no-mfa", cidrs: ["10.43.0.0/16"] },
    });
    expect(res.status).toBe(403);
    expect(res.body.error.code).toBe("mfa_required");
  });

  it("picks up a JWKS key rotation at the issuer without restarting edge or signers", async () => {
    const old = await admin();
    expect((await call("GET", "/v1/networks", { token: old })).status).toBe(200);
    await issuer.rotateKey({ dropOld: true });
    const fresh = await admin();
    const res = await call("GET", "/v1/networks", { token: fresh });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect((await call("GET", "/v1/networks", { token: old })).status).toBe(401);
  });

  it("cuts off enrollment-code guessing per client address: 429 with RateLimit headers", async () => {
    const address = freshAddress();
    const publicKey = await hostPublicKey();
    const statuses: number[] = [];
    let last: Awaited<ReturnType<typeof call>> | undefined;
    for (let i = 0; i < 8; i++) {
      last = await call("POST", "/v1/enroll", {
        headers: { "cf-connecting-ip": address },
        body: { code: `guessed-code-${i}`, publicKey },
      });
      statuses.push(last.status);
    }
    // The first five reach the signer, which refuses the guesses itself; then the edge cuts off.
    expect(statuses.slice(0, 5)).toEqual([401, 401, 401, 401, 401]);
    expect(statuses.slice(5)).toEqual([429, 429, 429]);
    expect(last?.body.error.code).toBe("rate_limited");
    expect(last?.headers.get("retry-after")).toBe("60");
    expect(last?.headers.get("ratelimit-limit")).toBe("5");
    expect(last?.headers.get("ratelimit-reset")).toBe("60");
    expect(last?.headers.get("x-request-id")).toBe(last?.body.error.traceId);
    // Another address still gets through to the signer.
    const other = await call("POST", "/v1/enroll", { body: { code: "guessed-code-x", publicKey } });
    expect(other.status).toBe(401);
    expect(other.body.error.code).toBe("invalid_enrollment_code");
  });

  it("refuses junk before the signer sees it", async () => {
    const res = await fetch(`${edge.url}/v1/enroll`, {
      method: "POST",
      headers: { "content-type": "application/json", "cf-connecting-ip": freshAddress() },
      body: "x".repeat(70 * 1024),
    });
    expect(res.status).toBe(413);
    await expectNotRelayed(res.headers, 413);
    const bad = await call("POST", "/v1/enroll", { body: { code: "short" } });
    expect(bad.status).toBe(400);
    expect(bad.body.error.code).toBe("invalid_request");
    await expectNotRelayed(bad.headers, 400);
  });

  it("serves /openapi.json and /docs from workerd", async () => {
    const doc = await call("GET", "/openapi.json");
    expect(doc.status).toBe(200);
    expect(doc.body.paths["/v1/enroll"].post.requestBody).toBeDefined();
    const docs = await fetch(`${edge.url}/docs`);
    expect(await docs.text()).toContain("Keyhole API");
  });

  it("an Idempotency-Key replayed at region B returns the certificate A issued, not a second one", async () => {
    const host = await call("POST", `/v1/networks/${networkId}/hosts`, {
      token: await admin(),
      body: { name: "web-idem" },
    });
    expect(host.status, JSON.stringify(host.body)).toBeLessThan(300);
    const request = {
      headers: { "idempotency-key": "enroll-web-idem-0001" },
      body: { code: host.body.enrollmentCode, publicKey: await hostPublicKey() },
    };
    const first = await call("POST", "/v1/enroll", request);
    expect(first.status, JSON.stringify(first.body)).toBe(201);
    expect(first.headers.get("x-keyhole-region")).toBe("a");
    // The retry lands on another region (A is skipped while it cools down after a failure);
    // B finds the key in the shared database and replays A's answer.
    await signerA.kill("SIGKILL");
    const retry = await call("POST", "/v1/enroll", request);
    expect(retry.headers.get("x-keyhole-region")).toBe("b");
    expect(retry.status, JSON.stringify(retry.body)).toBeLessThan(300);
    expect(retry.headers.get("idempotent-replayed")).toBe("true");
    expect(retry.body.fingerprint).toBe(first.body.fingerprint);
    const hostView = await call("GET", `/v1/hosts/${host.body.host.id}`, { token: await admin() });
    expect(hostView.body.certificates).toHaveLength(1);
  });

  it("region A down: health is degraded and requests succeed through B", async () => {
    await signerA.kill("SIGKILL"); // already down after the idempotency test; kill is idempotent
    const health = await call("GET", "/v1/health");
    expect(health.status).toBe(200);
    expect(health.body.status).toBe("degraded");
    expect(health.body.regions.a.status).toBe("down");
    expect(health.body.regions.b.status).toBe("ok");

    const host = await call("POST", `/v1/networks/${networkId}/hosts`, {
      token: await admin(),
      body: { name: "web-failover" },
    });
    expect(host.status, JSON.stringify(host.body)).toBeLessThan(300);
    expect(host.headers.get("x-keyhole-region")).toBe("b");
    const enrolled = await call("POST", "/v1/enroll", {
      body: { code: host.body.enrollmentCode, publicKey: await hostPublicKey() },
    });
    expect(enrolled.status, JSON.stringify(enrolled.body)).toBe(201);
    expect(enrolled.headers.get("x-keyhole-region")).toBe("b");
  });

  it("both regions down: 503 signer_unavailable with the trace id", async () => {
    await signerB.kill("SIGKILL");
    const traceId = "5c1d8a7e9b3f4e2aa0b1c2d3e4f50617";
    const res = await call("GET", "/v1/networks", {
      token: await admin(),
      headers: { traceparent: `00-${traceId}-a1b2c3d4e5f60718-01` },
    });
    expect(res.status).toBe(503);
    expect(res.body.error.code).toBe("signer_unavailable");
    expect(res.body.error.traceId).toBe(traceId);
    expect(res.headers.get("x-request-id")).toBe(traceId);
    const health = await call("GET", "/v1/health");
    expect(health.status).toBe(503);
    expect(health.body.status).toBe("down");
  });
});

describe("edge in workerd with a wrong configuration", () => {
  it("answers 500 with the trace id and names nothing secret, instead of running half-configured", async () => {
    const broken = await startEdgeInMiniflare({
      vars: {
        KEYHOLE_SIGNERS: "a=http://127.0.0.1:1",
        KEYHOLE_OIDC_ISSUERS: "http://127.0.0.1:2",
        KEYHOLE_OIDC_AUDIENCE: AUDIENCE,
      },
      tls: { caFile: pki.caCert, certFile: pki.clientCert, keyFile: pki.clientKey },
    });
    try {
      const res = await fetch(`${broken.url}/v1/health`);
      expect(res.status).toBe(500);
      const body = (await res.json()) as {
        error: { code: string; message: string; traceId: string };
      };
      expect(body.error.code).toBe("internal");
      expect(body.error.message).toMatch(/misconfigured/);
      expect(body.error.traceId).toBe(res.headers.get("x-request-id"));
      expect(broken.relayed).toHaveLength(0);
    } finally {
      await broken.dispose();
    }
  });
});
