/**
 * Runs the edge worker (edge/worker.ts, bundled with esbuild) in workerd through Miniflare, as the
 * local stack (`npm start`) and the edge's integration tests do. The Workers rate-limiting
 * bindings are Miniflare's own. The `SIGNER` binding is a workerd network service holding the
 * edge's client certificate and trusting only the relay CA: workerd itself makes the mutual-TLS
 * connection to each signer region, as Cloudflare's mtls_certificates binding does, with no Node
 * process in the path. The worker's structured log lines (stdout) are parsed here: tests read which
 * regions a request was relayed to from the edge's own log, as an operator would.
 */
import { readFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { createInterface } from "node:readline";
import type { Readable } from "node:stream";
import { fileURLToPath } from "node:url";
import { stripVTControlCharacters } from "node:util";
import { build } from "esbuild";
import { Miniflare } from "miniflare";
import type { EdgeLogLine } from "./app.ts";
import { DEFAULT_RATES, parseSigners, type RateRule, type RateRules } from "./config.ts";
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
  /** The relay attempts of the last 1,000 requests, read from the worker's log lines (for tests). */
  relayed: RelayedRequest[];
  /** The worker's log line for one request (by trace id), once workerd has written it. */
  requestLog(traceId: string, timeoutMs?: number): Promise<EdgeLogLine>;
  dispose(): Promise<void>;
}

export interface RelayedRequest {
  traceId: string;
  method: string;
  /** The route pattern, e.g. /v1/networks/:id/hosts. */
  route: string;
  region: string;
  /** The region's URL from KEYHOLE_SIGNERS. */
  regionUrl: string;
  /** The signer's status, 0 when it could not be reached. */
  status: number;
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
  const rates: RateRules = { ...DEFAULT_RATES, ...options.rates };
  const log = workerLog(options.vars.KEYHOLE_SIGNERS);
  // workerd's last words, for a start-up error that would otherwise point at output nobody saw.
  const stderrTail: string[] = [];
  let stderrClosed: Promise<void> = Promise.resolve();

  const mf = new Miniflare({
    modules: true,
    script,
    compatibilityDate: COMPATIBILITY_DATE,
    // Callers reach the edge worker on a socket of its own, as on Cloudflare. Miniflare's entry
    // socket (a dev-server worker in front of ours, ~0.3 ms of workerd CPU per request here) stays
    // on a free loopback port and is not used. Without it no cf-connecting-ip is set: the local
    // edge's callers are all on loopback and share one address bucket, as they did before.
    host: "127.0.0.1",
    port: 0,
    unsafeDirectSockets: [{ host: options.host ?? "127.0.0.1", port: options.port ?? 0 }],
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
      SIGNER: {
        network: {
          allow: ["public", "private", "local"],
          tlsOptions: {
            keypair: { privateKey: tls.key, certificateChain: tls.cert },
            trustedCertificates: [tls.ca],
          },
        },
      },
    },
    handleRuntimeStdio(stdout: Readable, stderr: Readable) {
      createInterface({ input: stdout }).on("line", (line) => {
        log.read(line);
        if (options.verbose) process.stderr.write(`${line}\n`);
      });
      if (options.verbose) stderr.pipe(process.stderr);
      const lines = createInterface({ input: stderr });
      stderrClosed = new Promise((done) => lines.once("close", done));
      lines.on("line", (line) => {
        const plain = stripVTControlCharacters(line).trim();
        if (plain === "" || plain.startsWith("stack: ")) return;
        stderrTail.push(plain.slice(0, 300));
        if (stderrTail.length > STDERR_LINES_KEPT) stderrTail.shift();
      });
    },
  });
  let url: string;
  try {
    await mf.ready;
    url = (await mf.unsafeGetDirectURL()).toString().replace(/\/$/, "");
  } catch (e) {
    // A port in use, for one: what Miniflare started (workerd, its loopback server) must not keep
    // this process alive after the error is reported.
    await mf.dispose().catch(() => {});
    // workerd's stderr may still be on its way when Miniflare gives up; wait for it, briefly.
    await Promise.race([stderrClosed, new Promise((r) => setTimeout(r, 1_000).unref())]);
    log.close();
    throw startupError(e, stderrTail);
  }
  return {
    url,
    mf,
    get relayed() {
      return log.relayed();
    },
    requestLog: log.waitFor,
    async dispose() {
      await mf.dispose();
      log.close();
    },
  };
}

const STDERR_LINES_KEPT = 12;

/**
 * Miniflare's start-up error, made to say what happened: a port in use is named (Miniflare names it
 * only when it read workerd's output in time), any other failure carries workerd's last lines.
 */
function startupError(e: unknown, workerdSaid: readonly string[]): Error {
  const error = e instanceof Error ? e : new Error(String(e));
  const taken =
    /Address already in use \(([^)\s]+)\)/.exec(error.message)?.[1] ??
    workerdSaid
      .map((line) => /Address already in use; toString\(\) = (\S+)/.exec(line)?.[1])
      .find((address) => address !== undefined);
  if (taken !== undefined) {
    return new Error(
      `the edge cannot listen on ${taken}: the address is in use; stop what runs there or choose another port`,
      { cause: error },
    );
  }
  if (workerdSaid.length === 0) return error;
  const message = error.message.replace(/ There is likely additional logging output above\.$/, "");
  return new Error(`${message} workerd said:\n  ${workerdSaid.join("\n  ")}`, { cause: error });
}

/** Reads the worker's stdout: its "edge request" lines, kept by trace id and as relay attempts. */
function workerLog(signersVar: string | undefined) {
  let regionUrls = new Map<string, string>();
  try {
    regionUrls = new Map(parseSigners(signersVar).map((r) => [r.name, r.url]));
  } catch {
    // A misconfigured edge answers 500 before it relays anything.
  }
  const lines = new Map<string, EdgeLogLine>();
  const waiters = new Map<string, ((line: EdgeLogLine) => void)[]>();
  const KEEP = 1000;
  return {
    /** Every relay attempt of the lines kept, oldest first. */
    relayed(): RelayedRequest[] {
      return [...lines.values()].flatMap((line) =>
        (line.relay ?? []).map((a) => ({
          traceId: line.traceId,
          method: line.method,
          route: line.route,
          region: a.region,
          regionUrl: regionUrls.get(a.region) ?? "",
          status: a.status,
        })),
      );
    },
    read(text: string) {
      let line: EdgeLogLine;
      try {
        line = JSON.parse(text) as EdgeLogLine;
      } catch {
        return;
      }
      if (line?.msg !== "edge request" || typeof line.traceId !== "string") return;
      lines.set(line.traceId, line);
      if (lines.size > KEEP) lines.delete(lines.keys().next().value as string);
      for (const done of waiters.get(line.traceId) ?? []) done(line);
      waiters.delete(line.traceId);
    },
    waitFor(traceId: string, timeoutMs = 5000): Promise<EdgeLogLine> {
      const seen = lines.get(traceId);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () =>
            reject(new Error(`the edge wrote no log line for trace ${traceId} in ${timeoutMs} ms`)),
          timeoutMs,
        );
        const list = waiters.get(traceId) ?? [];
        list.push((line) => {
          clearTimeout(timer);
          resolve(line);
        });
        waiters.set(traceId, list);
      });
    },
    close() {
      waiters.clear();
    },
  };
}
