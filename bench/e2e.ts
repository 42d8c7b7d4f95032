/**
 * End to end through the local stack: client -> edge in workerd -> mutual TLS -> Bun signer -> key
 * custody -> audit committed in libSQL -> certificate back. Enrollments per second and latency at
 * several concurrencies, KMS decrypts per certificate (read from the signer's own counters), and the
 * signer's memory. The stack is started fresh for each scenario in a temporary data folder.
 */
import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Agent, fetch as undiciFetch } from "undici";
import { freePort } from "../cli/dev/moto.ts";
import { type RunningStack, startStack } from "../cli/stack.ts";
import { stackPaths } from "../cli/stack-state.ts";
import { generateHostKeyPair, publicKeyToPem } from "../core/cert/index.ts";
import type {
  IssuedCertificate,
  NetworkView,
  RegisterHostResponse,
} from "../core/contract/index.ts";
import { type LoadResult, runLoad } from "./load.ts";

export interface EnrollLevel extends LoadResult {
  kmsDecrypts: number;
  kmsDecryptsPerCert: number;
}

export interface EnrollBenchResult {
  backend: string;
  levels: EnrollLevel[];
  /** Decrypts for one enrollment on an idle signer (expected: exactly 1). */
  isolatedDecrypts: number;
  signerRssMiB: number;
  signerPeakRssMiB: number;
}

export interface EnrollBenchOptions {
  concurrencies: number[];
  /** Enrollments per level (upper bound). */
  perLevel: (concurrency: number) => number;
  /** Time bound per level. */
  maxMsPerLevel: number;
  /** Signer environment (KMS settings); default local custody. */
  env?: Record<string, string | undefined>;
  /** Called once the load of the given level is running (fault injection). */
  during?: (concurrency: number) => Promise<void> | void;
  log?: (line: string) => void;
}

const UNLIMITED = "9999999/60";

function rss(pid: number | undefined): { now: number; peak: number } {
  if (!pid) return { now: Number.NaN, peak: Number.NaN };
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kib = (field: string) =>
    Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? Number.NaN);
  return { now: kib("VmRSS") / 1024, peak: kib("VmHWM") / 1024 };
}

/** A running stack with a network and an admin token, ready for load. */
export interface BenchStack {
  stack: RunningStack;
  token: string;
  network: NetworkView;
  signerMetrics(): Promise<{ decrypts: number }>;
  stop(): Promise<void>;
}

export async function startBenchStack(
  env: Record<string, string | undefined> = {},
): Promise<BenchStack> {
  const dir = await mkdtemp(join(tmpdir(), "keyhole-bench-"));
  const stack = await startStack({
    paths: stackPaths(dir),
    edgePort: await freePort(),
    signerPort: await freePort(),
    issuerPort: await freePort(),
    env: {
      ...process.env,
      KEYHOLE_RATE_ADDRESS: UNLIMITED,
      KEYHOLE_RATE_SUBJECT: UNLIMITED,
      KEYHOLE_RATE_NETWORK: UNLIMITED,
      ...env,
    },
    echoSignerLogs: false,
    log: () => undefined,
  });
  const token = await stack.issuer.mint({
    org: "bench",
    scope: ["networks:write", "hosts:write", "hosts:read", "certs:sign", "audit:read"],
    amr: ["pwd", "mfa"],
    expiresInSec: 3600,
  });
  const network = await api<NetworkView>(stack.api, "POST", "/v1/networks", token, {
    name: "bench",
    cidrs: ["10.64.0.0/10"],
    curve: "25519",
    certVersion: 2,
  });
  const pki = stack.pki;
  const agent = new Agent({
    connect: {
      ca: readFileSync(pki.caCert, "utf8"),
      cert: readFileSync(pki.clientCert, "utf8"),
      key: readFileSync(pki.clientKey, "utf8"),
    },
  });
  const signerUrl = stack.signers[0]?.url ?? "";
  return {
    stack,
    token,
    network,
    async signerMetrics() {
      const res = await undiciFetch(`${signerUrl}/v1/metrics`, { dispatcher: agent });
      const body = (await res.json()) as { custody?: { kmsDecryptCalls?: Record<string, number> } };
      const calls = body.custody?.kmsDecryptCalls ?? {};
      return { decrypts: Object.values(calls).reduce((a, b) => a + b, 0) };
    },
    async stop() {
      await agent.close();
      await stack.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export async function api<T>(
  base: string,
  method: string,
  path: string,
  token: string,
  body?: unknown,
): Promise<T> {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text.slice(0, 200)}`);
  return JSON.parse(text) as T;
}

/** Registers `count` hosts and returns their one-time codes. */
export async function registerHosts(b: BenchStack, count: number, tag: string): Promise<string[]> {
  const codes: string[] = new Array(count);
  const result = await runLoad({
    concurrency: 16,
    total: count,
    maxMs: 600_000,
    request: async (i) => {
      const r = await api<RegisterHostResponse>(
        b.stack.api,
        "POST",
        `/v1/networks/${b.network.id}/hosts`,
        b.token,
        {
          name: `${tag}-${i}`,
        },
      );
      codes[i] = r.enrollmentCode;
    },
  });
  if (result.errors > 0)
    throw new Error(`registering hosts failed: ${result.errorSamples.join("; ")}`);
  return codes;
}

export async function publicKeyPool(size: number): Promise<string[]> {
  return Promise.all(
    Array.from({ length: size }, async () => {
      const kp = await generateHostKeyPair("CURVE25519");
      return publicKeyToPem("CURVE25519", kp.publicKey);
    }),
  );
}

export async function enroll(
  base: string,
  code: string,
  publicKey: string,
): Promise<IssuedCertificate> {
  const res = await fetch(`${base}/v1/enroll`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ code, publicKey }),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`enroll: ${res.status} ${text.slice(0, 160)}`);
  return JSON.parse(text) as IssuedCertificate;
}

export async function benchEnroll(options: EnrollBenchOptions): Promise<EnrollBenchResult> {
  const log = options.log ?? (() => undefined);
  const b = await startBenchStack(options.env);
  try {
    const keys = await publicKeyPool(64);
    // Isolated request first, on an idle signer.
    const [first] = await registerHosts(b, 1, "isolated");
    const before = await b.signerMetrics();
    await enroll(b.stack.api, first as string, keys[0] as string);
    const isolatedDecrypts = (await b.signerMetrics()).decrypts - before.decrypts;
    const levels: EnrollLevel[] = [];
    for (const concurrency of options.concurrencies) {
      const total = options.perLevel(concurrency);
      log(`  registering ${total} hosts for concurrency ${concurrency}...`);
      const codes = await registerHosts(b, total, `c${concurrency}`);
      // Warm-up so that JIT and connection pools are hot for every level alike.
      await new Promise((r) => setTimeout(r, 200));
      const m0 = await b.signerMetrics();
      log(`  enrolling at concurrency ${concurrency}...`);
      const load = runLoad({
        concurrency,
        total,
        maxMs: options.maxMsPerLevel,
        request: async (i) => {
          await enroll(b.stack.api, codes[i] as string, keys[i % keys.length] as string);
        },
      });
      if (options.during) await options.during(concurrency);
      const result = await load;
      const m1 = await b.signerMetrics();
      const kmsDecrypts = m1.decrypts - m0.decrypts;
      levels.push({
        ...result,
        kmsDecrypts,
        kmsDecryptsPerCert: result.requests ? kmsDecrypts / result.requests : Number.NaN,
      });
      log(
        `  c=${concurrency}: ${result.perSecond.toFixed(0)}/s p50 ${result.p50Ms.toFixed(1)} ms p99 ${result.p99Ms.toFixed(1)} ms, errors ${result.errors}, decrypts/cert ${(kmsDecrypts / Math.max(1, result.requests)).toFixed(4)}`,
      );
    }
    const mem = rss(b.stack.signers[0]?.child.pid);
    return {
      backend: options.env?.KEYHOLE_KMS ?? "local",
      levels,
      isolatedDecrypts,
      signerRssMiB: mem.now,
      signerPeakRssMiB: mem.peak,
    };
  } finally {
    await b.stop();
  }
}
