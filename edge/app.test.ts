/**
 * The edge app on Node with `app.request()`: real dev OIDC issuer (discovery + JWKS over HTTP), real
 * relay PKI, and two real HTTPS upstreams that demand the relay client certificate (standing in for
 * two signer regions and recording what reaches them), reached through the undici mTLS transport.
 */

import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { type DevIssuer, startDevIssuer } from "../cli/dev/issuer.ts";
import { freePort } from "../cli/dev/moto.ts";
import { makeRelayPki, type RelayPki } from "../cli/dev/pki.ts";
import { createOidcVerifier, oidcOptionsFromEnv } from "../core/auth/index.ts";
import { MAX_BODY_BYTES } from "../core/contract/index.ts";
import { createEdgeApp } from "./app.ts";
import { edgeConfigFromEnv } from "./config.ts";
import { createMemoryRateLimiter } from "./limiter.ts";
import { createUndiciTransport } from "./node.ts";
import { createSignerRelay } from "./relay.ts";
import { type MtlsUpstream, startMtlsUpstream } from "./testing/mtls-upstream.ts";
import { ALL_SCOPES, BAD_TOKEN_CASES } from "./testing/token-cases.ts";

let dir: string;
let pki: RelayPki;
let issuer: DevIssuer;
let regionA: MtlsUpstream;
let regionB: MtlsUpstream;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "keyhole-edge-app-"));
  pki = await makeRelayPki(join(dir, "pki"));
  issuer = await startDevIssuer();
  regionA = await startMtlsUpstream(pki);
  regionB = await startMtlsUpstream(pki);
});

afterAll(async () => {
  await regionA?.close();
  await regionB?.close();
  await issuer?.close();
  await rm(dir, { recursive: true, force: true });
});

function makeEdge(overrides: Record<string, string> = {}) {
  const env = {
    KEYHOLE_SIGNERS: `a=${regionA.url},b=${regionB.url}`,
    KEYHOLE_OIDC_ISSUERS: issuer.issuer,
    KEYHOLE_OIDC_AUDIENCE: issuer.audience,
    KEYHOLE_OIDC_JWKS_COOLDOWN_MS: "0",
    KEYHOLE_TRUST_PROXY: "1",
    KEYHOLE_SIGNER_TIMEOUT_MS: "3000",
    ...overrides,
  };
  const config = edgeConfigFromEnv(env);
  const transport = createUndiciTransport({
    ca: readFileSync(pki.caCert, "utf8"),
    cert: readFileSync(pki.clientCert, "utf8"),
    key: readFileSync(pki.clientKey, "utf8"),
  });
  return createEdgeApp({
    config,
    oidc: createOidcVerifier(oidcOptionsFromEnv(env)),
    limiter: createMemoryRateLimiter({ rules: config.rates }),
    relay: createSignerRelay({
      regions: config.signers,
      transport,
      timeoutMs: config.signerTimeoutMs,
      cooldownMs: config.signerCooldownMs,
    }),
    clientAddress: () => undefined,
  });
}

let addressCounter = 0;
/** A fresh client address per test so the address bucket never leaks between tests. */
function freshAddress(): string {
  addressCounter += 1;
  return `198.51.100.${addressCounter}`;
}

const PUBKEY = `-----BEGIN NEBULA X25519 PUBLIC KEY-----\n${"A".repeat(43)}=\n-----END NEBULA X25519 PUBLIC KEY-----\n`;

async function errorOf(res: Response) {
  const body = (await res.json()) as { error: { code: string; message: string; traceId: string } };
  return body.error;
}

beforeEach(async () => {
  regionA.requests.length = 0;
  regionB.requests.length = 0;
  regionA.answer = (req) => ({ status: 200, body: { region: "a", path: req.path } });
  regionB.answer = (req) => ({ status: 200, body: { region: "b", path: req.path } });
  await regionA.start().catch(() => {});
  await regionB.start().catch(() => {});
});

describe("trace id", () => {
  it("keeps a valid traceparent's trace id and passes it on to the signer", async () => {
    const app = makeEdge();
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    const token = await issuer.mint({ org: "acme", scope: "hosts:read" });
    const res = await app.request("/v1/networks", {
      headers: {
        authorization: `Bearer ${token}`,
        traceparent: `00-${traceId}-00f067aa0ba902b7-01`,
      },
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("x-request-id")).toBe(traceId);
    const sent = regionA.requests[0];
    expect(sent?.clientAuthorized).toBe(true);
    expect(sent?.headers.traceparent).toMatch(new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`));
    expect(sent?.headers.traceparent).not.toContain("00f067aa0ba902b7");
    expect(sent?.headers.authorization).toBe(`Bearer ${token}`);
  });

  it("makes a trace id for an absent or malformed traceparent, on every response", async () => {
    const app = makeEdge();
    for (const traceparent of [
      undefined,
      "garbage",
      "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
    ]) {
      const headers: Record<string, string> = traceparent ? { traceparent } : {};
      const res = await app.request("/v1/nowhere", { headers });
      expect(res.status).toBe(404);
      const id = res.headers.get("x-request-id");
      expect(id).toMatch(/^[0-9a-f]{32}$/);
      expect(id).not.toBe("00000000000000000000000000000000");
      expect((await errorOf(res)).traceId).toBe(id);
    }
  });
});

describe("OIDC tokens refused with 401", () => {
  it("refuses a missing credential as unauthenticated", async () => {
    const res = await makeEdge().request("/v1/networks");
    expect(res.status).toBe(401);
    expect((await errorOf(res)).code).toBe("unauthenticated");
  });

  for (const bad of BAD_TOKEN_CASES) {
    it(`refuses ${bad.name} with invalid_token and relays nothing`, async () => {
      const token = await bad.make(issuer);
      const res = await makeEdge().request("/v1/networks", {
        headers: { authorization: `Bearer ${token}` },
      });
      expect(res.status).toBe(401);
      const error = await errorOf(res);
      expect(error.code).toBe("invalid_token");
      expect(error.message).toMatch(bad.reason);
      expect(error.traceId).toBe(res.headers.get("x-request-id"));
      expect(regionA.requests).toHaveLength(0);
      expect(regionB.requests).toHaveLength(0);
    });
  }

  it("answers 503 issuer_unavailable (not 401) when the token's issuer cannot be read, and relays nothing", async () => {
    const gone = `http://127.0.0.1:${await freePort()}`;
    const token = await issuer.mint({ org: "org-x", scope: ALL_SCOPES }, { issuer: gone });
    const res = await makeEdge({ KEYHOLE_OIDC_ISSUERS: gone }).request("/v1/networks", {
      headers: { authorization: `Bearer ${token}` },
    });
    expect(res.status).toBe(503);
    const error = await errorOf(res);
    expect(error.code).toBe("issuer_unavailable");
    expect(error.message).toContain(gone);
    expect(error.traceId).toBe(res.headers.get("x-request-id"));
    expect(regionA.requests).toHaveLength(0);
    expect(regionB.requests).toHaveLength(0);
  });

  it("refuses a token without the route's scope (403) and CA creation without MFA (403)", async () => {
    const app = makeEdge();
    const readOnly = await issuer.mint({ org: "acme", scope: "hosts:read" });
    const res1 = await app.request("/v1/networks/net_abc/sign", {
      method: "POST",
      headers: { authorization: `Bearer ${readOnly}`, "content-type": "application/json" },
      body: JSON.stringify({ publicKey: PUBKEY, name: "h1", networks: ["10.1.0.5/16"] }),
    });
    expect(res1.status).toBe(403);
    expect((await errorOf(res1)).code).toBe("insufficient_scope");

    const noMfa = await issuer.mint({ org: "acme", scope: ALL_SCOPES, amr: ["pwd"] });
    const res2 = await app.request("/v1/networks", {
      method: "POST",
      headers: { authorization: `Bearer ${noMfa}`, "content-type": "application/json" },
      body: JSON.stringify({ name: "prod", cidrs: ["10.1.0.0/16"] }),
    });
    expect(res2.status).toBe(403);
    expect((await errorOf(res2)).code).toBe("mfa_required");
    expect(regionA.requests).toHaveLength(0);

    const withMfa = await issuer.mint({ org: "acme", scope: ALL_SCOPES, amr: ["pwd", "mfa"] });
    const res3 = await app.request("/v1/networks", {
      method: "POST",
      headers: { authorization: `Bearer ${withMfa}`, "content-type": "application/json" },
      body: JSON.stringify({ name: "prod", cidrs: ["10.1.0.0/16"] }),
    });
    expect(res3.status).toBe(200);
    expect(regionA.requests).toHaveLength(1);
  });

  it("picks up a key rotation at the issuer without a restart", async () => {
    const app = makeEdge();
    const before = await issuer.mint({ org: "acme", scope: "hosts:read" });
    expect(
      (await app.request("/v1/networks", { headers: { authorization: `Bearer ${before}` } }))
        .status,
    ).toBe(200);
    await issuer.rotateKey({ dropOld: true });
    const after = await issuer.mint({ org: "acme", scope: "hosts:read" });
    const res = await app.request("/v1/networks", {
      headers: { authorization: `Bearer ${after}` },
    });
    expect(res.status).toBe(200);
    const old = await app.request("/v1/networks", {
      headers: { authorization: `Bearer ${before}` },
    });
    expect(old.status).toBe(401);
  });
});

describe("input checked before relaying", () => {
  async function post(path: string, init: { body?: BodyInit; headers?: Record<string, string> }) {
    const token = await issuer.mint({ org: "acme", scope: ALL_SCOPES, amr: ["mfa"] });
    return makeEdge().request(path, {
      method: "POST",
      headers: {
        authorization: `Bearer ${token}`,
        "x-forwarded-for": freshAddress(),
        ...init.headers,
      },
      body: init.body ?? null,
    });
  }

  it("refuses a body over the limit, read from a stream without Content-Length", async () => {
    const chunk = new TextEncoder().encode(`{"pad":"${"x".repeat(16 * 1024)}`);
    let sent = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent > MAX_BODY_BYTES * 2) return controller.close();
        sent += chunk.byteLength;
        controller.enqueue(chunk);
      },
    });
    const res = await makeEdge().request(
      new Request("http://edge/v1/enroll", {
        method: "POST",
        headers: { "content-type": "application/json", "x-forwarded-for": freshAddress() },
        body: stream,
        duplex: "half",
      } as RequestInit),
    );
    expect(res.status).toBe(413);
    expect((await errorOf(res)).code).toBe("body_too_large");
    expect(sent).toBeLessThan(MAX_BODY_BYTES * 2);
  });

  it("refuses a body over the limit whose Content-Length claims less", async () => {
    const res = await makeEdge().request(
      new Request("http://edge/v1/enroll", {
        method: "POST",
        headers: {
          "content-type": "application/json",
          "content-length": "64",
          "x-forwarded-for": freshAddress(),
        },
        body: `{"pad":"${"x".repeat(MAX_BODY_BYTES)}"}`,
      }),
    );
    expect(res.status).toBe(413);
    expect((await errorOf(res)).code).toBe("body_too_large");
  });

  it("refuses wrong content type, malformed JSON, bad fields, unknown fields, bad ids", async () => {
    const cases: [string, Awaited<ReturnType<typeof post>>, number, string][] = [
      [
        "text/plain",
        await post("/v1/enroll", { body: "{}", headers: { "content-type": "text/plain" } }),
        415,
        "unsupported_media_type",
      ],
      [
        "malformed",
        await post("/v1/enroll", {
          body: "{nope",
          headers: { "content-type": "application/json" },
        }),
        400,
        "invalid_json",
      ],
      [
        "short code",
        await post("/v1/enroll", {
          body: JSON.stringify({ code: "x", publicKey: PUBKEY }),
          headers: { "content-type": "application/json" },
        }),
        400,
        "invalid_request",
      ],
      [
        "extra field",
        await post("/v1/networks/net_a/sign", {
          body: JSON.stringify({
            publicKey: PUBKEY,
            name: "h",
            networks: ["10.0.0.1/8"],
            privateKey: "no",
          }),
          headers: { "content-type": "application/json" },
        }),
        400,
        "invalid_request",
      ],
      [
        "bad id",
        await post("/v1/networks/..%2F..%2Fetc/sign", {
          body: JSON.stringify({ publicKey: PUBKEY, name: "h", networks: ["10.0.0.1/8"] }),
          headers: { "content-type": "application/json" },
        }),
        400,
        "invalid_request",
      ],
      [
        "bad idempotency key",
        await post("/v1/networks", {
          body: JSON.stringify({ name: "n", cidrs: ["10.0.0.0/8"] }),
          headers: { "content-type": "application/json", "idempotency-key": "no spaces please" },
        }),
        400,
        "invalid_request",
      ],
    ];
    for (const [name, res, status, code] of cases) {
      expect(res.status, name).toBe(status);
      const error = await errorOf(res);
      expect(error.code, name).toBe(code);
      expect(error.message.length, name).toBeGreaterThan(10);
    }
    expect(regionA.requests).toHaveLength(0);
    expect(regionB.requests).toHaveLength(0);
  });

  it("relays a valid enrollment without any Authorization and with an Idempotency-Key", async () => {
    const body = JSON.stringify({ code: "ABCD-EFGH-IJKL", publicKey: PUBKEY });
    const res = await makeEdge().request("/v1/enroll", {
      method: "POST",
      headers: {
        "content-type": "application/json",
        authorization: "Bearer something",
        "x-forwarded-for": "203.0.113.9",
      },
      body,
    });
    expect(res.status).toBe(200);
    const sent = regionA.requests[0];
    expect(sent?.body).toBe(body);
    expect(sent?.headers.authorization).toBeUndefined();
    expect(sent?.headers["idempotency-key"]).toMatch(/^[0-9a-f-]{36}$/);
    expect(sent?.headers["x-keyhole-client-address"]).toBe("203.0.113.9");
  });
});

describe("rate limits", () => {
  it("cuts off enrollment-code guessing per client address with 429 and headers", async () => {
    const app = makeEdge({ KEYHOLE_RATE_ADDRESS: "5/60" });
    const address = freshAddress();
    const statuses: number[] = [];
    let last: Response | undefined;
    for (let i = 0; i < 8; i++) {
      last = await app.request("/v1/enroll", {
        method: "POST",
        headers: { "content-type": "application/json", "x-forwarded-for": address },
        body: JSON.stringify({ code: `guess-${i}-000000`, publicKey: PUBKEY }),
      });
      statuses.push(last.status);
    }
    expect(statuses).toEqual([200, 200, 200, 200, 200, 429, 429, 429]);
    expect(regionA.requests).toHaveLength(5);
    expect(last?.headers.get("retry-after")).toMatch(/^\d+$/);
    expect(Number(last?.headers.get("retry-after"))).toBeGreaterThan(0);
    expect(last?.headers.get("ratelimit-limit")).toBe("5");
    expect(last?.headers.get("ratelimit-remaining")).toBe("0");
    expect((await errorOf(last as Response)).code).toBe("rate_limited");
    // Another address is not affected.
    const other = await app.request("/v1/enroll", {
      method: "POST",
      headers: { "content-type": "application/json", "x-forwarded-for": freshAddress() },
      body: JSON.stringify({ code: "guess-x-000000", publicKey: PUBKEY }),
    });
    expect(other.status).toBe(200);
  });

  it("limits per org+subject and per network on signing", async () => {
    const app = makeEdge({ KEYHOLE_RATE_SUBJECT: "100/60", KEYHOLE_RATE_NETWORK: "3/60" });
    const alice = await issuer.mint({ sub: "alice", org: "acme", scope: "certs:sign" });
    const bob = await issuer.mint({ sub: "bob", org: "acme", scope: "certs:sign" });
    const sign = (token: string, net: string) =>
      app.request(`/v1/networks/${net}/sign`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: JSON.stringify({ publicKey: PUBKEY, name: "h1", networks: ["10.1.0.5/16"] }),
      });
    expect((await sign(alice, "net_one")).status).toBe(200);
    expect((await sign(bob, "net_one")).status).toBe(200);
    expect((await sign(alice, "net_one")).status).toBe(200);
    const limited = await sign(bob, "net_one");
    expect(limited.status).toBe(429);
    expect((await errorOf(limited)).code).toBe("rate_limited");
    expect((await sign(bob, "net_two")).status).toBe(200);

    const subjectApp = makeEdge({ KEYHOLE_RATE_SUBJECT: "2/60" });
    const read = await issuer.mint({ sub: "carol", org: "acme", scope: "hosts:read" });
    const get = () =>
      subjectApp.request("/v1/networks", { headers: { authorization: `Bearer ${read}` } });
    expect((await get()).status).toBe(200);
    const second = await get();
    expect(second.headers.get("ratelimit-remaining")).toBe("0");
    expect((await get()).status).toBe(429);
  });
});

describe("relay to signer regions", () => {
  async function enroll(app: ReturnType<typeof makeEdge>, key?: string) {
    return app.request("/v1/enroll", {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "x-forwarded-for": freshAddress(),
        ...(key ? { "idempotency-key": key } : {}),
      },
      body: JSON.stringify({ code: "ABCD-EFGH-IJKL", publicKey: PUBKEY }),
    });
  }

  it("fails over to region B when A is down, and skips A during its cool-down", async () => {
    const app = makeEdge();
    await regionA.stop();
    const res = await enroll(app);
    expect(res.status).toBe(200);
    expect(res.headers.get("x-keyhole-region")).toBe("b");
    expect(((await res.json()) as { region: string }).region).toBe("b");
    expect(regionB.requests).toHaveLength(1);
    // A is back, but in cool-down: B is asked first.
    await regionA.start();
    const again = await enroll(app);
    expect(again.headers.get("x-keyhole-region")).toBe("b");
    expect(regionA.requests).toHaveLength(0);
  });

  it("retries a 5xx at region B with the same Idempotency-Key; never retries a 4xx", async () => {
    const app = makeEdge();
    regionA.answer = () => ({
      status: 503,
      body: { error: { code: "kms_unavailable", message: "x", traceId: "t" } },
    });
    const res = await enroll(app, "client-key-0001");
    expect(res.status).toBe(200);
    expect(res.headers.get("x-keyhole-region")).toBe("b");
    expect(regionA.requests[0]?.headers["idempotency-key"]).toBe("client-key-0001");
    expect(regionB.requests[0]?.headers["idempotency-key"]).toBe("client-key-0001");

    regionA.answer = () => ({
      status: 401,
      body: { error: { code: "invalid_enrollment_code", message: "no", traceId: "t" } },
    });
    const refused = await enroll(makeEdge());
    expect(refused.status).toBe(401);
    expect((await errorOf(refused)).code).toBe("invalid_enrollment_code");
    expect(regionB.requests).toHaveLength(1);
  });

  it("answers 503 signer_unavailable with the trace id when both regions are down", async () => {
    const app = makeEdge();
    await regionA.stop();
    await regionB.stop();
    const traceId = "0af7651916cd43dd8448eb211c80319c";
    const res = await app.request("/v1/enroll", {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "x-forwarded-for": freshAddress(),
        traceparent: `00-${traceId}-b7ad6b7169203331-01`,
      },
      body: JSON.stringify({ code: "ABCD-EFGH-IJKL", publicKey: PUBKEY }),
    });
    expect(res.status).toBe(503);
    expect(res.headers.get("x-request-id")).toBe(traceId);
    const error = await errorOf(res);
    expect(error.code).toBe("signer_unavailable");
    expect(error.traceId).toBe(traceId);
  });

  it("reports each region's reachability on /v1/health", async () => {
    const app = makeEdge();
    const ok = await app.request("/v1/health");
    expect(ok.status).toBe(200);
    const body = (await ok.json()) as {
      status: string;
      regions: Record<string, { status: string }>;
    };
    expect(body.status).toBe("ok");
    expect(body.regions.a?.status).toBe("ok");
    await regionA.stop();
    const degraded = (await (await app.request("/v1/health")).json()) as typeof body;
    expect(degraded.status).toBe("degraded");
    expect(degraded.regions.a?.status).toBe("down");
    await regionB.stop();
    expect((await app.request("/v1/health")).status).toBe(503);
  });
});

describe("API description", () => {
  it("serves /openapi.json built from the contract schemas, and /docs", async () => {
    const app = makeEdge();
    const doc = (await (await app.request("/openapi.json")).json()) as {
      openapi: string;
      paths: Record<
        string,
        Record<
          string,
          {
            requestBody?: {
              content: Record<string, { schema: { properties: Record<string, unknown> } }>;
            };
          }
        >
      >;
    };
    expect(doc.openapi).toBe("3.1.0");
    const enroll = doc.paths["/v1/enroll"]?.post?.requestBody?.content["application/json"]?.schema;
    expect(Object.keys(enroll?.properties ?? {}).sort()).toEqual(["code", "publicKey"]);
    expect(doc.paths["/v1/networks/{id}/sign"]?.post).toBeDefined();
    const docs = await app.request("/docs");
    expect(docs.headers.get("content-type")).toContain("text/html");
    expect(await docs.text()).toContain("/openapi.json");
  });
});
