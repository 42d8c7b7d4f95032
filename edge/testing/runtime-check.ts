/**
 * Test instrument: the edge's request checks as a script, so one vitest test can run the very same
 * app under Bun (`bun edge/testing/runtime-check.ts`) and Node (`node bin/run-ts.mjs ...`) against
 * real signers. It builds the self-hosted edge from the environment (edge/selfhost.ts) with that
 * runtime's own mTLS transport, drives it with `app.request()`, and prints one line
 * `RESULT {"runtime":..,"checks":[{name,ok,detail}]}`. Tokens come in CHECK_TOKEN_* variables.
 */
import { createSelfHostedEdge, selfHostConfigFromEnv } from "../selfhost.ts";

interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

const runtime = typeof Bun === "undefined" ? "node" : "bun";
const env = process.env;
const config = selfHostConfigFromEnv(env);
// Each runtime's own transport; imported on demand (hono/bun does not load under Node).
const transport =
  runtime === "bun"
    ? (await import("../bun.ts")).createBunTransport(config.tls)
    : (await import("../node.ts")).createUndiciTransport(config.tls);
const app = createSelfHostedEdge(env, config.edge, transport, () => "203.0.113.7");
const checks: Check[] = [];

function token(name: string): string {
  const value = env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

async function check(
  name: string,
  path: string,
  init: RequestInit,
  expectStatus: number,
  expectCode?: string,
): Promise<Record<string, unknown> | undefined> {
  try {
    const res = await app.request(path, init);
    const body = (await res.json().catch(() => undefined)) as Record<string, unknown> | undefined;
    const code = (body?.error as { code?: string } | undefined)?.code;
    const requestId = res.headers.get("x-request-id") ?? "";
    const ok =
      res.status === expectStatus &&
      (expectCode === undefined || code === expectCode) &&
      /^[0-9a-f]{32}$/.test(requestId);
    checks.push({ name, ok, detail: `status ${res.status} code ${code ?? "-"} id ${requestId}` });
    return body;
  } catch (e) {
    checks.push({ name, ok: false, detail: `threw ${(e as Error).message}` });
    return undefined;
  }
}

const json = { "content-type": "application/json" };
const health = await check("health reaches every signer region", "/v1/health", {}, 200);
checks.push({
  name: "health says ok",
  ok: health?.status === "ok",
  detail: JSON.stringify(health?.regions ?? null),
});
await check("no credential", "/v1/networks", {}, 401, "unauthenticated");
await check(
  "expired token",
  "/v1/networks",
  { headers: { authorization: `Bearer ${token("CHECK_TOKEN_EXPIRED")}` } },
  401,
  "invalid_token",
);
await check(
  "read relayed over mTLS",
  "/v1/networks",
  { headers: { authorization: `Bearer ${token("CHECK_TOKEN_READ")}` } },
  200,
);
await check(
  "missing scope",
  "/v1/networks",
  {
    method: "POST",
    headers: { ...json, authorization: `Bearer ${token("CHECK_TOKEN_READ")}` },
    body: JSON.stringify({ name: "rt", cidrs: ["10.77.0.0/16"] }),
  },
  403,
  "insufficient_scope",
);
await check(
  "network created through the signer",
  "/v1/networks",
  {
    method: "POST",
    headers: { ...json, authorization: `Bearer ${token("CHECK_TOKEN_ADMIN")}` },
    body: JSON.stringify({ name: `rt-${runtime}`, cidrs: ["10.77.0.0/16"] }),
  },
  201,
);
await check(
  "malformed JSON stopped at the edge",
  "/v1/enroll",
  { method: "POST", headers: json, body: "{not json" },
  400,
  "invalid_json",
);
await check(
  "unknown enrollment code refused by the signer",
  "/v1/enroll",
  {
    method: "POST",
    headers: json,
    body: JSON.stringify({
      code: "no-such-code-123",
      publicKey: `-----BEGIN NEBULA X25519 PUBLIC KEY-----\n${"A".repeat(43)}=\n-----END NEBULA X25519 PUBLIC KEY-----\n`,
    }),
  },
  401,
  "invalid_enrollment_code",
);
const traceId = "0123456789abcdef0123456789abcdef";
const traced = await app.request("/v1/nowhere", {
  headers: { traceparent: `00-${traceId}-0123456789abcdef-01` },
});
checks.push({
  name: "traceparent kept",
  ok: traced.headers.get("x-request-id") === traceId && traced.status === 404,
  detail: `${traced.status} ${traced.headers.get("x-request-id")}`,
});

process.stdout.write(`RESULT ${JSON.stringify({ runtime, checks })}\n`);
process.exit(0);
