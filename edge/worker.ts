/**
 * The edge on Cloudflare Workers (and in workerd under Miniflare for the local stack and tests).
 * The signer is reached through the `SIGNER` binding: on Cloudflare an `mtls_certificates` binding
 * (its fetch presents the edge's client certificate); under Miniflare a workerd network service
 * with the same client certificate and the relay CA (edge/local.ts). Rate limits use the Workers rate-limiting bindings.
 * The configuration (vars) is read once per isolate, at the first request, and a wrong value is
 * logged with what to fix while every request gets a 500 that says the edge is misconfigured.
 */
import type { Hono } from "hono";
import { ConfigError, createOidcVerifier, oidcOptionsFromEnv } from "../core/auth/index.ts";
import { errorBody, TRACE_ID_HEADER } from "../core/contract/index.ts";
import { createEdgeApp } from "./app.ts";
import { edgeConfigFromEnv, type SignerSite } from "./config.ts";
import { createWorkersRateLimiter, type WorkersRateLimitBinding } from "./limiter.ts";
import { createSignerRelay } from "./relay.ts";
import { traceFromHeader } from "./trace.ts";

/** A binding with a fetch: the mtls_certificates binding, or workerd's network service with TLS options. */
export interface SignerFetcher {
  fetch(request: Request): Promise<Response>;
}

export interface WorkerEnv {
  SIGNER: SignerFetcher;
  RATE_LIMIT_ADDRESS: WorkersRateLimitBinding;
  RATE_LIMIT_SUBJECT: WorkersRateLimitBinding;
  RATE_LIMIT_NETWORK: WorkersRateLimitBinding;
  [variable: string]: unknown;
}

/** The parts of Cloudflare's `request.cf` the edge reads. */
interface CfProperties {
  latitude?: string;
  longitude?: string;
}

type Built = { app: Hono } | { error: string };
let built: Built | undefined;

function stringVars(env: WorkerEnv): Record<string, string | undefined> {
  const vars: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(env)) if (typeof v === "string") vars[k] = v;
  return vars;
}

function callerSite(request: Request): SignerSite | undefined {
  const cf = (request as Request & { cf?: CfProperties }).cf;
  const lat = Number(cf?.latitude);
  const lon = Number(cf?.longitude);
  if (cf?.latitude === undefined || !Number.isFinite(lat) || !Number.isFinite(lon)) {
    return undefined;
  }
  return { lat, lon };
}

function buildEdge(env: WorkerEnv): Built {
  try {
    for (const name of [
      "SIGNER",
      "RATE_LIMIT_ADDRESS",
      "RATE_LIMIT_SUBJECT",
      "RATE_LIMIT_NETWORK",
    ]) {
      if (!env[name]) throw new ConfigError(name, "binding is missing; see wrangler.toml");
    }
    const vars = stringVars(env);
    // On Cloudflare the client address is cf-connecting-ip, set by the platform; a forwarded-for
    // header is the client's own word and is never trusted here.
    const config = { ...edgeConfigFromEnv(vars), trustProxy: false };
    const signer = env.SIGNER;
    const app = createEdgeApp({
      config,
      oidc: createOidcVerifier(oidcOptionsFromEnv(vars)),
      limiter: createWorkersRateLimiter({
        rules: config.rates,
        bindings: {
          address: env.RATE_LIMIT_ADDRESS,
          subject: env.RATE_LIMIT_SUBJECT,
          network: env.RATE_LIMIT_NETWORK,
        },
      }),
      relay: createSignerRelay({
        regions: config.signers,
        transport: (_region, request) => signer.fetch(request),
        timeoutMs: config.signerTimeoutMs,
        cooldownMs: config.signerCooldownMs,
      }),
      clientAddress: (c) => c.req.header("cf-connecting-ip"),
      callerSite: (c) => callerSite(c.req.raw),
      log: (line) => console.log(JSON.stringify(line)),
    });
    return { app: app as unknown as Hono };
  } catch (e) {
    if (e instanceof ConfigError) return { error: e.message };
    throw e;
  }
}

export default {
  async fetch(request: Request, env: WorkerEnv): Promise<Response> {
    built ??= buildEdge(env);
    if ("app" in built) return built.app.fetch(request);
    console.error(`keyhole edge: configuration error: ${built.error}`);
    const traceId = traceFromHeader(request.headers.get("traceparent")).traceId;
    return Response.json(
      errorBody(
        "internal",
        "the edge is misconfigured; its operator can see why in the logs",
        traceId,
      ),
      { status: 500, headers: { [TRACE_ID_HEADER]: traceId } },
    );
  },
};
