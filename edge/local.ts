/**
 * Runs the edge worker (edge/worker.ts, bundled with esbuild) in workerd through Miniflare, as the
 * local stack (`npm start`) and the edge's integration tests do. The Workers rate-limiting
 * bindings are Miniflare's own. The `SIGNER` binding is a Node function that relays each request with an undici Agent holding
 * the edge's client certificate and the relay CA: real mutual TLS to the signers (a plain service
 * binding to an external HTTPS URL was seen to drop its TLS options). On Cloudflare the same binding
 * name is the mtls_certificates binding, a Fetcher either way.
 */
import { readFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import type { Readable } from "node:stream";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import {
  Miniflare,
  type Request as MiniflareRequest,
  Response as MiniflareResponse,
} from "miniflare";
import { Agent, fetch as undiciFetch } from "undici";
import { DEFAULT_RATES, type RateRule, type RateRules } from "./config.ts";
import type { RelayTls } from "./selfhost.ts";

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");

export interface EdgeInMiniflareOptions {
  /** Worker vars: KEYHOLE_SIGNERS, KEYHOLE_OIDC_ISSUERS, KEYHOLE_OIDC_AUDIENCE, ... */
  vars: Record<string, string>;
  /** The relay's TLS material, PEM text or file paths (`{caFile, certFile, keyFile}`). */
  tls: RelayTls | { caFile: string; certFile: string; keyFile: string };
  /** Rate limits of the three bindings; periods must be 10 or 60 s (the platform's choice). */
  rates?: Partial<RateRules>;
  host?: string;
  /** 0 (default) picks a free port; the local stack passes 8787. */
  port?: number;
  /** Print the worker's console output (default false). */
  verbose?: boolean;
}

export interface EdgeInMiniflare {
  url: string;
  mf: Miniflare;
  /** The last 1,000 requests the SIGNER binding relayed, with the region URL each went to (for tests). */
  relayed: { url: string; method: string }[];
  dispose(): Promise<void>;
}

export const COMPATIBILITY_DATE = "2026-04-01";

let bundle: Promise<string> | undefined;

/** Bundles edge/worker.ts for workerd (once per process). */
export function bundleEdgeWorker(): Promise<string> {
  bundle ??= build({
    entryPoints: [resolve(REPO_ROOT, "edge/worker.ts")],
    bundle: true,
    write: false,
    format: "esm",
    platform: "browser",
    conditions: ["workerd", "worker", "browser"],
    target: "es2022",
    minify: false,
    logLevel: "silent",
  }).then((out) => {
    const file = out.outputFiles[0];
    if (!file) throw new Error("esbuild produced no output for edge/worker.ts");
    return file.text;
  });
  return bundle;
}

async function relayTls(tls: EdgeInMiniflareOptions["tls"]): Promise<RelayTls> {
  if ("ca" in tls) return tls;
  const [ca, cert, key] = await Promise.all([
    readFile(tls.caFile, "utf8"),
    readFile(tls.certFile, "utf8"),
    readFile(tls.keyFile, "utf8"),
  ]);
  return { ca, cert, key };
}

function binding(rule: RateRule): { simple: { limit: number; period: 10 | 60 } } {
  if (rule.periodSec !== 10 && rule.periodSec !== 60) {
    throw new Error(`Workers rate limits take a period of 10 or 60 s, not ${rule.periodSec}`);
  }
  return { simple: { limit: rule.limit, period: rule.periodSec } };
}

function rateText(rule: RateRule): string {
  return `${rule.limit}/${rule.periodSec}`;
}

export async function startEdgeInMiniflare(
  options: EdgeInMiniflareOptions,
): Promise<EdgeInMiniflare> {
  const script = await bundleEdgeWorker();
  const tls = await relayTls(options.tls);
  const agent = new Agent({
    connect: { ca: tls.ca, cert: tls.cert, key: tls.key, rejectUnauthorized: true },
  });
  const rates: RateRules = { ...DEFAULT_RATES, ...options.rates };
  const relayed: EdgeInMiniflare["relayed"] = [];

  const mf = new Miniflare({
    modules: true,
    script,
    compatibilityDate: COMPATIBILITY_DATE,
    host: options.host ?? "127.0.0.1",
    port: options.port ?? 0,
    bindings: {
      KEYHOLE_RATE_ADDRESS: rateText(rates.address),
      KEYHOLE_RATE_SUBJECT: rateText(rates.subject),
      KEYHOLE_RATE_NETWORK: rateText(rates.network),
      ...options.vars,
    },
    ratelimits: {
      RATE_LIMIT_ADDRESS: binding(rates.address),
      RATE_LIMIT_SUBJECT: binding(rates.subject),
      RATE_LIMIT_NETWORK: binding(rates.network),
    },
    serviceBindings: {
      async SIGNER(request: MiniflareRequest) {
        relayed.push({ url: request.url, method: request.method });
        if (relayed.length > 1000) relayed.splice(0, relayed.length - 1000);
        const init: Parameters<typeof undiciFetch>[1] = {
          method: request.method,
          headers: [...request.headers],
          redirect: "manual",
          dispatcher: agent,
        };
        if (request.method !== "GET" && request.method !== "HEAD") {
          init.body = new Uint8Array(await request.arrayBuffer());
        }
        // A signer that cannot be reached answers 502 with a plain-text reason, like the
        // platform's own 52x pages: not a Keyhole error body, so the relay fails over.
        let res: Awaited<ReturnType<typeof undiciFetch>>;
        try {
          res = await undiciFetch(request.url, init);
        } catch (e) {
          const cause = (e as { cause?: { message?: string } }).cause?.message ?? String(e);
          return new MiniflareResponse(`signer unreachable: ${cause}`, { status: 502 });
        }
        return new MiniflareResponse(await res.arrayBuffer(), {
          status: res.status,
          headers: [...res.headers],
        });
      },
    },
    handleRuntimeStdio(stdout: Readable, stderr: Readable) {
      if (options.verbose) {
        stdout.pipe(process.stderr);
        stderr.pipe(process.stderr);
      } else {
        stdout.resume();
        stderr.resume();
      }
    },
  });
  const url = (await mf.ready).toString().replace(/\/$/, "");
  return {
    url,
    mf,
    relayed,
    async dispose() {
      await mf.dispose();
      await agent.close();
    },
  };
}
