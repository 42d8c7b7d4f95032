/**
 * The edge: one Hono app used unchanged on Cloudflare Workers, Bun and Node. It gives every request
 * a trace id, authenticates (OIDC JWT with scope and MFA; enrollment codes and host tokens are only
 * shape-checked here because the signer verifies them), rate-limits, reads and validates the body
 * against core/contract's schemas, and only then relays to a signer region. Junk never reaches the
 * signer. It holds no key, no database and no KMS right.
 */
import { type Context, Hono } from "hono";
import type { z } from "zod";
import { bearerCredential, type OidcVerifier, requireScope } from "../core/auth/index.ts";
import {
  CLIENT_ADDRESS_HEADER,
  type ErrorCode,
  errorBody,
  type HealthView,
  statusOf,
  TRACE_ID_HEADER,
} from "../core/contract/index.ts";
import { isKeyholeError, KeyholeError } from "../core/errors.ts";
import { readJsonBody } from "./body.ts";
import type { EdgeConfig, SignerSite } from "./config.ts";
import type { RateBucket, RateDecision, RateLimiter } from "./limiter.ts";
import { DOCS_HTML, openApiDocument } from "./openapi.ts";
import { type RelayAttempt, relayAttemptsOf, type SignerRelay } from "./relay.ts";
import { IdempotencyKeySchema, ResourceIdSchema, ROUTES, type RouteSpec } from "./routes.ts";
import { relayTraceparent, type TraceContext, traceFromHeader } from "./trace.ts";

export interface EdgeLogLine {
  msg: "edge request";
  traceId: string;
  method: string;
  route: string;
  status: number;
  ms: number;
  region?: string;
  /** Every signer region tried, in order (absent when the request was not relayed). */
  relay?: RelayAttempt[];
  code?: string;
}

export interface EdgeDeps {
  relay: SignerRelay;
  oidc: OidcVerifier;
  limiter: RateLimiter;
  config: EdgeConfig;
  /** The caller's address as this runtime sees it (cf-connecting-ip, the socket, ...). */
  clientAddress: (c: Context) => string | undefined;
  /** The caller's location, to try the nearest signer region first (Cloudflare's request.cf). */
  callerSite?: (c: Context) => SignerSite | undefined;
  /** One line per request; never given a credential or a body. */
  log?: (line: EdgeLogLine) => void;
}

interface EdgeVars {
  trace: TraceContext;
  rate: RateDecision | undefined;
  region: string | undefined;
  relay: RelayAttempt[] | undefined;
}

type EdgeEnv = { Variables: EdgeVars };
type EdgeContext = Context<EdgeEnv>;

/** Response headers of the signer that the client may see. */
const PASSED_RESPONSE_HEADERS = [
  "content-type",
  "cache-control",
  "location",
  "idempotent-replayed",
  "retry-after",
];

const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

function rateHeaders(headers: Headers, d: RateDecision): void {
  headers.set("RateLimit-Limit", String(d.limit));
  if (d.remaining !== undefined) headers.set("RateLimit-Remaining", String(d.remaining));
  headers.set("RateLimit-Reset", String(d.resetSec));
  if (!d.allowed) headers.set("Retry-After", String(d.resetSec));
}

/** Keeps the tightest decision seen so far (the one the headers should describe). */
function tighter(a: RateDecision | undefined, b: RateDecision): RateDecision {
  if (!a) return b;
  if (!b.allowed) return b;
  if (!a.allowed) return a;
  return (b.remaining ?? b.limit) < (a.remaining ?? a.limit) ? b : a;
}

function validationError(where: string, error: z.ZodError): KeyholeError {
  const issues = error.issues.slice(0, 10).map((i) => ({
    path: i.path.map(String).join("."),
    message: i.message,
  }));
  const first = issues[0];
  const at = first?.path ? `${where}.${first.path}` : where;
  return new KeyholeError(
    "invalid_request",
    `${at}: ${first?.message ?? "invalid"}; see /openapi.json for the expected shape`,
    { issues },
  );
}

export function createEdgeApp(deps: EdgeDeps): Hono<EdgeEnv> {
  const { relay, oidc, limiter, config } = deps;
  const app = new Hono<EdgeEnv>();
  const openapi = openApiDocument(config.version);

  app.use(async (c, next) => {
    const started = Date.now();
    const trace = traceFromHeader(c.req.header("traceparent"));
    c.set("trace", trace);
    c.set("rate", undefined);
    c.set("region", undefined);
    c.set("relay", undefined);
    await next();
    c.res.headers.set(TRACE_ID_HEADER, trace.traceId);
    const rate = c.get("rate");
    if (rate) rateHeaders(c.res.headers, rate);
    const region = c.get("region");
    if (region) c.res.headers.set("x-keyhole-region", region);
    if (deps.log) {
      const line: EdgeLogLine = {
        msg: "edge request",
        traceId: trace.traceId,
        method: c.req.method,
        route: c.req.routePath,
        status: c.res.status,
        ms: Date.now() - started,
      };
      if (region) line.region = region;
      const attempts = c.get("relay");
      if (attempts) line.relay = attempts;
      const code = c.error && isKeyholeError(c.error) ? c.error.code : undefined;
      if (code) line.code = code;
      deps.log(line);
    }
  });

  app.onError((err, c) => {
    const traceId = (c as unknown as EdgeContext).get("trace")?.traceId ?? "";
    let code: ErrorCode = "internal";
    let message = "the edge failed to handle this request; quote the trace id when reporting it";
    let details: Record<string, unknown> | undefined;
    if (isKeyholeError(err)) {
      code = err.code;
      message = err.message;
      details = err.details ? { ...err.details } : undefined;
    }
    return c.json(errorBody(code, message, traceId, details), statusOf(code));
  });

  app.notFound((c) => {
    const traceId = (c as unknown as EdgeContext).get("trace")?.traceId ?? "";
    return c.json(
      errorBody("not_found", `no route ${c.req.method} ${c.req.path}; see /docs`, traceId),
      404,
    );
  });

  app.get("/openapi.json", (c) => c.json(openapi));
  app.get("/docs", (c) => c.html(DOCS_HTML));

  app.get("/v1/health", async (c) => {
    const headers = new Headers({ traceparent: relayTraceparent(c.get("trace")) });
    const regions = await relay.health(headers);
    const up = Object.values(regions).filter((r) => r.status === "ok").length;
    const status: HealthView["status"] =
      up === relay.regions.length ? "ok" : up > 0 ? "degraded" : "down";
    const view: HealthView = { status, role: "edge", regions, version: config.version };
    return c.json(view, status === "down" ? 503 : 200);
  });

  async function checkLimit(c: EdgeContext, bucket: RateBucket, key: string): Promise<void> {
    const decision = await limiter.check(bucket, key);
    c.set("rate", tighter(c.get("rate"), decision));
    if (!decision.allowed) {
      throw new KeyholeError(
        "rate_limited",
        `too many requests; wait ${decision.resetSec} s before trying again`,
        { bucket, retryAfterSec: decision.resetSec },
      );
    }
  }

  function clientAddressOf(c: EdgeContext): string {
    if (config.trustProxy) {
      const forwarded = c.req.header("x-forwarded-for")?.split(",")[0]?.trim();
      if (forwarded) return forwarded;
    }
    return deps.clientAddress(c) ?? "unknown";
  }

  async function authenticate(c: EdgeContext, route: RouteSpec): Promise<string | undefined> {
    const header = c.req.header("authorization");
    const auth = route.auth;
    switch (auth.kind) {
      case "none":
      case "enrollment":
        return undefined;
      case "hostToken":
        bearerCredential(header);
        return undefined;
      case "oidc":
      case "oidcOrHostToken": {
        const token = bearerCredential(header);
        if (auth.kind === "oidcOrHostToken" && !JWT_SHAPE.test(token)) return undefined;
        const principal = await oidc.verify(token);
        requireScope(principal, auth.scope, auth.kind === "oidc" && auth.mfa ? { mfa: true } : {});
        return `${principal.org}|${principal.issuer}|${principal.subject}`;
      }
    }
  }

  function relayHandler(route: RouteSpec) {
    return async (c: EdgeContext): Promise<Response> => {
      const trace = c.get("trace");
      const address = clientAddressOf(c);
      // Cut off guessing before any work: the address bucket is counted before anything is checked.
      if (route.limits.includes("address")) await checkLimit(c, "address", address);

      const subject = await authenticate(c, route);
      if (subject !== undefined && route.limits.includes("subject")) {
        await checkLimit(c, "subject", subject);
      }

      const id = c.req.param("id");
      if (id !== undefined) {
        const parsed = ResourceIdSchema.safeParse(id);
        if (!parsed.success) throw validationError("id", parsed.error);
        if (route.limits.includes("network")) await checkLimit(c, "network", id);
      }

      const url = new URL(c.req.url);
      if (route.query) {
        const query: Record<string, string> = {};
        for (const [k, v] of url.searchParams) {
          if (Object.hasOwn(query, k)) {
            throw new KeyholeError("invalid_request", `query parameter ${k} is given twice`);
          }
          query[k] = v;
        }
        const parsed = route.query.safeParse(query);
        if (!parsed.success) throw validationError("query", parsed.error);
      } else if (url.search !== "") {
        throw new KeyholeError("invalid_request", `${route.path} takes no query parameters`);
      }

      const headers = new Headers({
        accept: "application/json",
        traceparent: relayTraceparent(trace),
        [CLIENT_ADDRESS_HEADER]: address,
      });
      const authorization = c.req.header("authorization");
      if (authorization !== undefined && route.auth.kind !== "enrollment") {
        headers.set("authorization", authorization);
      }

      let body: Uint8Array | undefined;
      if (route.body) {
        const read = await readJsonBody(c.req.raw, route.bodyOptional === true);
        const parsed = route.body.safeParse(read.value);
        if (!parsed.success) throw validationError("body", parsed.error);
        body = read.bytes;
        headers.set("content-type", "application/json");
      }
      if (route.method === "POST") {
        const clientKey = c.req.header("idempotency-key");
        if (clientKey !== undefined) {
          const parsed = IdempotencyKeySchema.safeParse(clientKey);
          if (!parsed.success) throw validationError("Idempotency-Key", parsed.error);
        }
        headers.set("idempotency-key", clientKey ?? crypto.randomUUID());
      }

      const near = deps.callerSite?.(c);
      const result = await relay
        .relay({
          method: route.method,
          path: `${url.pathname}${url.search}`,
          headers,
          ...(body ? { body } : {}),
          ...(near ? { near } : {}),
        })
        .catch((e: unknown) => {
          c.set("relay", relayAttemptsOf(e));
          throw e;
        });
      c.set("region", result.region);
      c.set("relay", result.attempts);
      const out = new Headers();
      for (const name of PASSED_RESPONSE_HEADERS) {
        const value = result.response.headers.get(name);
        if (value !== null) out.set(name, value);
      }
      return new Response(result.response.body, { status: result.response.status, headers: out });
    };
  }

  for (const route of ROUTES) {
    if (route.method === "GET") app.get(route.path, relayHandler(route));
    else app.post(route.path, relayHandler(route));
  }
  return app;
}
