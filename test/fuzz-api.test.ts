import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { z } from "zod";
import { type DevIssuer, startDevIssuer } from "../cli/dev/issuer.ts";
import { makeRelayPki, type RelayPki } from "../cli/dev/pki.ts";
import {
  AuditQuery,
  CreateNetworkBody,
  EnrollBody,
  ERROR_STATUS,
  isErrorCode,
  RegisterHostBody,
  RenewBody,
  RotateCaBody,
  SignBody,
} from "../core/contract/index.ts";
import type { createEdgeApp } from "../edge/app.ts";
import { type MtlsUpstream, startMtlsUpstream } from "../edge/testing/mtls-upstream.ts";
import { hostPublicKeyPem, startTestSigner, type TestSigner } from "../signer/testing.ts";
import { inProcessEdge } from "./support/faults.ts";

const RUNS = Number(process.env.KEYHOLE_FUZZ_API_RUNS ?? 100);

// ---- hostile values ----

const NASTY_STRINGS = [
  "",
  " ",
  "\u0000",
  "a\r\nX-Injected: yes",
  "a\nSet-Cookie: s=1",
  "\r\n\r\nHTTP/1.1 200 OK",
  "__proto__",
  "constructor",
  "prototype",
  "\ud800",
  "\udfff\ud800",
  "\u202e\u0000\u001b[31m",
  "\ufeff",
  "𝕂𝕖𝕪𝕙𝕠𝕝𝕖",
  "../../etc/passwd",
  "'; drop table networks; --",
  "%00%0d%0a",
  "$\u007bjndi:ldap://x}",
  "10.1.0.0/16\n",
  "10.1.0.0/33",
  "300.1.2.3/8",
  "::/0",
  "0.0.0.0/0",
  "fd00::/129",
  "10.1.0.7",
  "99999999999999999999h",
  "1e308h",
  "0h",
  "-1h",
  "-----BEGIN NEBULA X25519 PUBLIC KEY-----\n-----END NEBULA X25519 PUBLIC KEY-----\n",
  "-----BEGIN NEBULA ED25519 PRIVATE KEY-----\nAAAA\n-----END NEBULA ED25519 PRIVATE KEY-----\n",
  "x".repeat(5000),
];

const hostileString: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...NASTY_STRINGS) },
  { weight: 2, arbitrary: fc.string({ unit: "binary", maxLength: 80 }) },
  { weight: 1, arbitrary: fc.string({ unit: "grapheme", maxLength: 40 }) },
  { weight: 1, arbitrary: fc.stringMatching(/^[A-Za-z0-9.:_/-]{1,70}$/) },
);

const hostileValue: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: hostileString },
  { weight: 1, arbitrary: fc.constantFrom(null, true, false, 0, -1, 1.5, 2 ** 53, -0, 1e308, 3) },
  { weight: 1, arbitrary: fc.array(hostileString, { maxLength: 300 }) },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
);

/** A body shaped like the schema (its field names), each field hostile, plus stray keys sometimes. */
function shapedBody(schema: z.ZodObject): fc.Arbitrary<Record<string, unknown>> {
  const fields = Object.keys(schema.shape);
  const model: Record<string, fc.Arbitrary<unknown>> = {};
  for (const f of fields) model[f] = hostileValue;
  return fc
    .record({
      body: fc.record(model, { requiredKeys: [] }),
      stray: fc.option(fc.constantFrom("__proto__", "constructor", "isAdmin", "org", "prototype"), {
        freq: 4,
      }),
      strayValue: hostileValue,
    })
    .map(({ body, stray, strayValue }) => {
      if (stray !== null)
        Object.defineProperty(body, stray, { value: strayValue, enumerable: true });
      return body;
    });
}

interface RawBody {
  text: string;
  contentType: string;
}

/** Raw request bodies: JSON text of any value, broken JSON, deep nesting, pollution keys, odd types. */
function rawBodies(schema: z.ZodObject): fc.Arbitrary<RawBody> {
  const json = "application/json";
  return fc.oneof(
    {
      weight: 4,
      arbitrary: shapedBody(schema).map((b) => ({ text: JSON.stringify(b), contentType: json })),
    },
    {
      weight: 2,
      arbitrary: fc
        .jsonValue()
        .map((v) => ({ text: JSON.stringify(v) ?? "null", contentType: json })),
    },
    {
      weight: 1,
      arbitrary: fc
        .constantFrom(
          '{"__proto__": {"isAdmin": true, "org": "other"}}',
          '{"constructor": {"prototype": {"polluted": 1}}}',
          '{"name": "a", "name": "b", "__proto__": null}',
          `${"[".repeat(50_000)}${"]".repeat(50_000)}`,
          `{"a":${'{"a":'.repeat(20_000)}1${"}".repeat(20_001)}`,
          "{",
          "nul",
          "",
          '"just a string"',
          "\ufeff{}",
          `{"x":"${"y".repeat(70 * 1024)}"}`,
          '{"name":"\\ud800"}',
        )
        .map((text) => ({ text, contentType: json })),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        text: fc.string({ unit: "binary", maxLength: 200 }),
        contentType: fc.constantFrom(
          json,
          "text/plain",
          "application/x-www-form-urlencoded",
          "",
          "application/json; charset=utf-16",
          "application/jsonx",
        ),
      }),
    },
  );
}

/** The JSON value of a body text as both sides read it (WHATWG UTF-8 drops a leading BOM). */
function jsonOf(text: string): unknown {
  try {
    return JSON.parse(text.replace(/^\ufeff/, ""));
  } catch {
    return undefined;
  }
}

function isStableRefusal(status: number, body: unknown): string | undefined {
  const code = (body as { error?: { code?: unknown } } | null)?.error?.code;
  if (!isErrorCode(code))
    return `status ${status} without a contract error code: ${JSON.stringify(body).slice(0, 200)}`;
  if (ERROR_STATUS[code] !== status)
    return `code ${code} came with ${status}, contract says ${ERROR_STATUS[code]}`;
  if (status < 400 || status >= 500) return `status ${status} (${code}) is not a 4xx`;
  return undefined;
}

// ---- the signer ----

describe("signer app: hostile bodies get a stable 4xx and write nothing", () => {
  let s: TestSigner;
  let token: string;
  let networkId: string;
  let hostId: string;
  let code: string;
  let hostToken: string;
  const tally = new Map<string, number>();

  beforeAll(async () => {
    s = await startTestSigner();
    token = await s.token();
    const net = await s.call("POST", "/v1/networks", {
      token,
      body: {
        name: "fuzz",
        cidrs: ["10.77.0.0/16"],
        curve: "25519",
        certVersion: 2,
        groups: ["web", "db"],
      },
    });
    expect(net.status).toBe(201);
    networkId = net.body.id;
    const host = await s.call("POST", `/v1/networks/${networkId}/hosts`, {
      token,
      body: { name: "enrolled", groups: ["web"] },
    });
    expect(host.status).toBe(201);
    const enrolled = await s.call("POST", "/v1/enroll", {
      body: { code: host.body.enrollmentCode, publicKey: await hostPublicKeyPem("25519") },
    });
    expect(enrolled.status).toBeLessThan(300);
    hostToken = enrolled.body.hostToken;
    const pending = await s.call("POST", `/v1/networks/${networkId}/hosts`, {
      token,
      body: { name: "pending" },
    });
    expect(pending.status).toBe(201);
    hostId = pending.body.host.id;
    code = pending.body.enrollmentCode;
  }, 120_000);

  afterAll(async () => {
    const line = [...tally.entries()].map(([k, n]) => `${k} ${n}`).join(", ");
    process.stdout.write(`fuzz-api signer: ${line}\n`);
    await s?.close();
  });

  interface Route {
    name: string;
    method: string;
    path: () => string;
    schema: z.ZodObject;
    auth: () => string | undefined;
  }
  const routes: Route[] = [
    {
      name: "POST /v1/networks",
      method: "POST",
      path: () => "/v1/networks",
      schema: CreateNetworkBody,
      auth: () => token,
    },
    {
      name: "POST /v1/networks/{id}/ca-rotations",
      method: "POST",
      path: () => `/v1/networks/${networkId}/ca-rotations`,
      schema: RotateCaBody,
      auth: () => token,
    },
    {
      name: "POST /v1/networks/{id}/hosts",
      method: "POST",
      path: () => `/v1/networks/${networkId}/hosts`,
      schema: RegisterHostBody,
      auth: () => token,
    },
    {
      name: "POST /v1/enroll",
      method: "POST",
      path: () => "/v1/enroll",
      schema: EnrollBody,
      auth: () => undefined,
    },
    {
      name: "POST /v1/renew",
      method: "POST",
      path: () => "/v1/renew",
      schema: RenewBody,
      auth: () => hostToken,
    },
    {
      name: "POST /v1/networks/{id}/sign",
      method: "POST",
      path: () => `/v1/networks/${networkId}/sign`,
      schema: SignBody,
      auth: () => token,
    },
  ];

  for (const route of routes) {
    it(`${route.name}: ${RUNS} hostile bodies`, async () => {
      let before = await s.snapshot();
      await fc.assert(
        fc.asyncProperty(rawBodies(route.schema), async ({ text, contentType }) => {
          // A body the schema accepts may legitimately write (a network with an odd but valid name):
          // such inputs are counted and the baseline moves; every other one must write nothing.
          const schemaAccepts =
            contentType === "application/json" && route.schema.safeParse(jsonOf(text)).success;
          const headers: Record<string, string> = {};
          if (contentType !== "") headers["content-type"] = contentType;
          const auth = route.auth();
          const r = await s.call(route.method, route.path(), {
            rawBody: text,
            headers,
            ...(auth !== undefined ? { token: auth } : {}),
          });
          const key = `${r.status}${typeof r.body === "object" && r.body?.error ? ` ${r.body.error.code}` : ""}`;
          tally.set(key, (tally.get(key) ?? 0) + 1);
          expect(r.status, JSON.stringify(r.body).slice(0, 300)).toBeLessThan(500);
          const after = await s.snapshot();
          if (r.status >= 400) {
            expect(isStableRefusal(r.status, r.body)).toBeUndefined();
            expect(r.body.error.traceId).toMatch(/^[0-9a-f]{32}$/);
            expect(after, `${route.name} wrote rows for a refused body`).toEqual(before);
          } else {
            expect(
              schemaAccepts,
              `accepted a body the contract refuses: ${text.slice(0, 200)}`,
            ).toBe(true);
            // A renewal rotates the host token; the old one is now a reuse (which blocks the host).
            if (typeof r.body?.hostToken === "string" && r.body.hostToken !== "") {
              hostToken = r.body.hostToken;
            }
          }
          before = after;
        }),
        { numRuns: RUNS, endOnFailure: true },
      );
    }, 240_000);
  }

  it("GET /v1/audit: hostile query strings", async () => {
    const before = await s.snapshot();
    const keys = fc.constantFrom(
      "networkId",
      "traceId",
      "since",
      "until",
      "limit",
      "__proto__",
      "constructor",
      "x",
    );
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(keys, hostileString), { maxLength: 5 }), async (pairs) => {
        const q = new URLSearchParams(pairs).toString();
        const r = await s.call("GET", `/v1/audit?${q}`, { token });
        const key = `audit ${r.status}`;
        tally.set(key, (tally.get(key) ?? 0) + 1);
        expect(r.status).toBeLessThan(500);
        if (r.status >= 400) expect(isStableRefusal(r.status, r.body)).toBeUndefined();
        else
          expect(AuditQuery.safeParse(Object.fromEntries(new URLSearchParams(q))).success).toBe(
            true,
          );
      }),
      { numRuns: RUNS, endOnFailure: true },
    );
    expect(await s.snapshot()).toEqual(before);
  }, 240_000);

  it("hostile path ids and credentials: 4xx, nothing written", async () => {
    const before = await s.snapshot();
    await fc.assert(
      fc.asyncProperty(
        hostileString,
        fc.constantFrom(
          "/v1/networks/",
          "/v1/hosts/",
          "/v1/networks/{}/hosts",
          "/v1/networks/{}/blocklist",
          "/v1/hosts/{}/block",
        ),
        fc.constantFrom("token", "code", "garbage", "none"),
        async (id, shape, cred) => {
          const enc = encodeURIComponent(id.slice(0, 200).replace(/[\ud800-\udfff]/g, "\ufffd"));
          const path = shape.includes("{}") ? shape.replace("{}", enc) : `${shape}${enc}`;
          const method = path.endsWith("/block") ? "POST" : "GET";
          const credential =
            cred === "token"
              ? token
              : cred === "code"
                ? code
                : cred === "garbage"
                  ? id.replace(/[^\u0020-\u007e\u00a0-\u00ff]/g, "")
                  : undefined;
          const r = await s.call(method, path, {
            ...(credential !== undefined && credential !== "" ? { token: credential } : {}),
            ...(method === "POST" ? { body: {} } : {}),
          });
          expect(r.status).toBeLessThan(500);
          if (r.status >= 400) expect(isStableRefusal(r.status, r.body)).toBeUndefined();
        },
      ),
      { numRuns: RUNS, endOnFailure: true },
    );
    const after = await s.snapshot();
    // Only reads and refusals happened: nothing moved, except that a host id that exists was never hit.
    expect(after).toEqual(before);
    expect(hostId).toMatch(/./);
  }, 240_000);
});

// ---- the edge ----

describe("edge app: hostile bodies get a stable 4xx and are not relayed", () => {
  let dir: string;
  let pki: RelayPki;
  let issuer: DevIssuer;
  let upstream: MtlsUpstream;
  let app: ReturnType<typeof createEdgeApp>;
  let token: string;
  const tally = new Map<string, number>();

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "keyhole-fuzz-edge-"));
    pki = await makeRelayPki(join(dir, "pki"));
    issuer = await startDevIssuer();
    upstream = await startMtlsUpstream(pki);
    upstream.answer = () => ({ status: 200, body: { relayed: true } });
    const env = {
      KEYHOLE_SIGNERS: `a=${upstream.url}`,
      KEYHOLE_OIDC_ISSUERS: issuer.issuer,
      KEYHOLE_OIDC_AUDIENCE: issuer.audience,
      KEYHOLE_SIGNER_TIMEOUT_MS: "5000",
    };
    app = inProcessEdge(env, pki, "198.51.100.7");
    token = await issuer.mint({
      sub: "fuzzer",
      org: "org-x",
      scope: "networks:write hosts:write hosts:read certs:sign audit:read",
      amr: ["pwd", "otp"],
    });
  }, 120_000);

  afterAll(async () => {
    const line = [...tally.entries()].map(([k, n]) => `${k} ${n}`).join(", ");
    process.stdout.write(`fuzz-api edge: ${line}\n`);
    await upstream?.close();
    await issuer?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const routes: {
    name: string;
    path: string;
    schema: z.ZodObject;
    auth: "jwt" | "host" | "none";
  }[] = [
    { name: "POST /v1/networks", path: "/v1/networks", schema: CreateNetworkBody, auth: "jwt" },
    {
      name: "POST /v1/networks/{id}/ca-rotations",
      path: "/v1/networks/net_x/ca-rotations",
      schema: RotateCaBody,
      auth: "jwt",
    },
    {
      name: "POST /v1/networks/{id}/hosts",
      path: "/v1/networks/net_x/hosts",
      schema: RegisterHostBody,
      auth: "jwt",
    },
    { name: "POST /v1/enroll", path: "/v1/enroll", schema: EnrollBody, auth: "none" },
    { name: "POST /v1/renew", path: "/v1/renew", schema: RenewBody, auth: "host" },
    {
      name: "POST /v1/networks/{id}/sign",
      path: "/v1/networks/net_x/sign",
      schema: SignBody,
      auth: "jwt",
    },
  ];

  it(`hostile Authorization and Idempotency-Key headers: ${RUNS} requests, none relayed`, async () => {
    // Header values must be Latin-1 without CR/LF to be sent at all; everything else is fair game.
    const headerValue = hostileString.map((v) =>
      v.replace(/[^\u0020-\u007e\u0080-\u00ff\t]/g, "").slice(0, 9000),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom("authorization", "idempotency-key"),
        headerValue,
        fc.constantFrom("Bearer ", "", "Basic ", "bearer  "),
        async (name, value, scheme) => {
          const headers: Record<string, string> = { "content-type": "application/json" };
          if (name === "authorization") headers.authorization = `${scheme}${value}`;
          else {
            headers.authorization = `Bearer ${token}`;
            headers["idempotency-key"] = value;
          }
          const before = upstream.requests.length;
          const res = await app.request("/v1/networks/net_x/sign", {
            method: "POST",
            headers,
            body: JSON.stringify({
              publicKey: "x".repeat(40),
              name: "h",
              networks: ["10.0.0.1/8"],
            }),
          });
          const text = await res.text();
          const key = `header ${name} ${res.status}`;
          tally.set(key, (tally.get(key) ?? 0) + 1);
          expect(res.status, text.slice(0, 300)).toBeLessThan(500);
          if (res.status >= 400) {
            expect(isStableRefusal(res.status, jsonOf(text))).toBeUndefined();
            expect(upstream.requests.length - before).toBe(0);
          }
          for (const [, v] of res.headers) if (value.length >= 8) expect(v).not.toContain(value);
        },
      ),
      { numRuns: RUNS, endOnFailure: true },
    );
  }, 240_000);

  for (const route of routes) {
    it(`${route.name}: ${RUNS} hostile bodies`, async () => {
      await fc.assert(
        fc.asyncProperty(rawBodies(route.schema), async ({ text, contentType }) => {
          let parsed = jsonOf(text);
          // The edge reads an empty body as {} where every field is optional (and relays "{}").
          if (text === "" && route.schema.safeParse({}).success) parsed = {};
          const schemaAccepts = route.schema.safeParse(parsed).success;
          const headers: Record<string, string> = {};
          if (contentType !== "") headers["content-type"] = contentType;
          if (route.auth === "jwt") headers.authorization = `Bearer ${token}`;
          if (route.auth === "host") headers.authorization = `Bearer kh_${"h".repeat(40)}`;
          const relayedBefore = upstream.requests.length;
          const res = await app.request(route.path, { method: "POST", headers, body: text });
          const bodyText = await res.text();
          let body: unknown = bodyText;
          try {
            body = JSON.parse(bodyText);
          } catch {}
          const relayed = upstream.requests.length - relayedBefore;
          const code = (body as { error?: { code?: string } })?.error?.code;
          const key = `${res.status}${code ? ` ${code}` : ""}`;
          tally.set(key, (tally.get(key) ?? 0) + 1);
          expect(res.status, bodyText.slice(0, 300)).toBeLessThan(500);
          if (res.status >= 400) {
            expect(isStableRefusal(res.status, body)).toBeUndefined();
            expect(res.headers.get("x-request-id")).toMatch(/^[0-9a-f]{32}$/);
            expect(relayed, "a refused body reached the signer").toBe(0);
          } else {
            expect(
              schemaAccepts,
              `relayed a body the contract refuses: ${text.slice(0, 200)}`,
            ).toBe(true);
            if (text !== "") expect(contentType.startsWith("application/json")).toBe(true);
            expect(relayed).toBe(1);
          }
        }),
        { numRuns: RUNS, endOnFailure: true },
      );
    }, 240_000);
  }
});
