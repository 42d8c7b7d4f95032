/**
 * The signer's HTTP app: every `/v1` route of the API behind mutual TLS. It authenticates each call
 * itself (OIDC JWT, enrollment code or host token), builds the KMS context only from what it verified,
 * and maps every error to the contract's wire shape here, in one place. Runtime-agnostic: `main.ts`
 * serves it with Bun; tests call `app.request()`.
 */
import { Hono } from "hono";
import { TRACE_ID_HEADER } from "../core/contract/api.ts";
import { errorBody } from "../core/contract/errors.ts";
import { errorResponseOf, traceIdFrom } from "./http.ts";
import { createSignerMetrics } from "./metrics.ts";
import { registerAuditRoutes } from "./routes/audit.ts";
import { registerEnrollRoutes } from "./routes/enroll.ts";
import { registerHealthRoutes } from "./routes/health.ts";
import { registerHostRoutes } from "./routes/hosts.ts";
import { registerNetworkRoutes } from "./routes/networks.ts";
import { registerSignRoutes } from "./routes/sign.ts";
import type { SignerDeps, SignerRuntime } from "./runtime.ts";

export type { SignerDeps } from "./runtime.ts";

export interface SignerEnv {
  Variables: { traceId: string };
}

export type SignerApp = Hono<SignerEnv>;

export function createSignerApp(deps: SignerDeps): SignerApp & { runtime: SignerRuntime } {
  const rt: SignerRuntime = {
    store: deps.store,
    custody: deps.custody,
    oidc: deps.oidc,
    clock: deps.clock ?? (() => new Date()),
    region: deps.region,
    logger: deps.logger,
    metrics: createSignerMetrics(),
    nebulaListenPort: deps.nebulaListenPort ?? 4242,
  };
  const app = new Hono<SignerEnv>();

  // Trace id in, x-request-id out, and one log line per request (never a header value or a body).
  app.use("*", async (c, next) => {
    const started = performance.now();
    const traceId = traceIdFrom(c.req.header("traceparent"));
    c.set("traceId", traceId);
    await next();
    c.header(TRACE_ID_HEADER, traceId);
    const ms = Math.round((performance.now() - started) * 10) / 10;
    const route = c.req.routePath ?? "unmatched";
    rt.metrics.request(route, c.req.method, c.res.status, ms);
    rt.logger.log(c.res.status >= 500 ? "error" : "info", "request", {
      traceId,
      method: c.req.method,
      route,
      status: c.res.status,
      ms,
      ...(c.res.status >= 400 ? { code: c.res.headers.get("x-keyhole-error") ?? undefined } : {}),
    });
  });

  app.onError((e, c) => {
    const traceId = c.get("traceId") ?? traceIdFrom(undefined);
    const { status, code, body } = errorResponseOf(e, traceId);
    rt.metrics.error(code);
    if (code === "internal") {
      rt.logger.log("error", "unexpected error", {
        traceId,
        error: e instanceof Error ? e.name : typeof e,
        // Messages of unexpected errors may name internals but never hold secrets: nothing here
        // formats a key, code or token into an error.
        detail: e instanceof Error ? e.message.slice(0, 300) : undefined,
      });
    }
    const headers: Record<string, string> = { [TRACE_ID_HEADER]: traceId, "x-keyhole-error": code };
    const retryAfter = body.error.details?.retryAfterSeconds;
    if (typeof retryAfter === "number") headers["retry-after"] = String(retryAfter);
    return c.json(body, status as 400, headers);
  });

  app.notFound((c) => {
    const traceId = c.get("traceId") ?? traceIdFrom(undefined);
    const body = errorBody(
      "not_found",
      `no route ${c.req.method} ${new URL(c.req.url).pathname}`,
      traceId,
    );
    return c.json(body, 404, { "x-keyhole-error": "not_found" });
  });

  registerHealthRoutes(app, rt);
  registerNetworkRoutes(app, rt);
  registerHostRoutes(app, rt);
  registerEnrollRoutes(app, rt);
  registerSignRoutes(app, rt);
  registerAuditRoutes(app, rt);

  return Object.assign(app, { runtime: rt });
}
