/**
 * End to end through the local stack: client -> edge in workerd -> mutual TLS -> Bun signer -> key
 * custody -> audit committed in libSQL -> certificate back. Enrollments per second and latency at
 * several concurrencies, KMS decrypts per certificate (read from the signer's own counters), and the
 * signer's memory. The stack is started fresh for each scenario in a temporary data folder.
 */
import { readdirSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Agent, Pool, fetch as undiciFetch } from "undici";
import { freePort } from "../cli/dev/moto.ts";
import { type RunningStack, startStack } from "../cli/stack.ts";
import { stackPaths } from "../cli/stack-state.ts";
import { generateHostKeyPair, publicKeyToPem } from "../core/cert/index.ts";
import type {
  IssuedCertificate,
  NetworkView,
  RegisterHostResponse,
} from "../core/contract/index.ts";
import { type LoadResult, medianOfRuns, runLoad } from "./load.ts";

export interface EnrollLevel extends LoadResult {
  kmsDecrypts: number;
  kmsDecryptsPerCert: number;
  /** CPU milliseconds per enrollment of each process of the run (user + system, from /proc). */
  cpuMsPerEnroll: { signer: number; workerd: number; loadGenerator: number };
}

/**
 * What the same client, edge and signer do at 64 concurrent without issuing anything, measured in
 * the same run: the ceiling an enrollment rate can be read against on this machine.
 */
export interface EnrollBaselines {
  /** The edge alone answering (an unknown route: routing, trace id, JSON error; nothing relayed). */
  edgeOnly: LoadResult;
  /** Edge -> mutual TLS -> signer -> one indexed read -> 401 back (an unknown enrollment code). */
  relayRoundTrip: LoadResult;
}

export interface EnrollBenchResult {
  backend: string;
  /** Present when asked for (the local backend). */
  baselines?: EnrollBaselines;
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
  /** Enrollments run (and not recorded) before the first level; default 0. */
  warmUp?: number;
  /**
   * Runs of each level (and of each ceiling); rates and percentiles are the medians over them, CPU
   * and KMS decrypts are counted over all of them. Default 1.
   */
  runs?: number;
  /** Measure the same-run ceilings (EnrollBaselines) before the levels. */
  baselines?: boolean;
  /** Called once the load of the given level is running (fault injection). */
  during?: (concurrency: number) => Promise<void> | void;
  /**
   * Called after each run of each level with that run's result, before the next run starts: a
   * baseline measured here (cfssl, a nebula-cert loop) sees the same moment of a shared machine as
   * the run it is compared with. Its CPU is not counted in the level's.
   */
  afterRun?: (concurrency: number, run: number, result: LoadResult) => Promise<void>;
  log?: (line: string) => void;
}

const UNLIMITED = "9999999/60";

/** CPU milliseconds used so far (user + system) by a process, from /proc/<pid>/stat. */
function processCpuMs(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
    const ticks = Number(fields[11]) + Number(fields[12]);
    return Number.isFinite(ticks) ? ticks * (1000 / CLOCK_TICKS) : 0;
  } catch {
    return 0;
  }
}

/** Clock ticks per second of /proc's times (USER_HZ; 100 on Linux). */
const CLOCK_TICKS = 100;

/** workerd processes this process started (Miniflare's runtime). */
function workerdPids(): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.split(") ")[1]?.split(" ")[1]);
      if (ppid === process.pid && stat.includes("(workerd")) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

function cpuTimes(b: BenchStack): { signer: number; workerd: number; loadGenerator: number } {
  const signerPid = b.stack.signers[0]?.child.pid;
  const own = process.cpuUsage();
  return {
    signer: signerPid ? processCpuMs(signerPid) : Number.NaN,
    workerd: workerdPids().reduce((sum, pid) => sum + processCpuMs(pid), 0),
    loadGenerator: (own.user + own.system) / 1000,
  };
}

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
  /**
   * Keep-alive connections to the edge (undici Pool): the load generator shares the cores with the
   * edge and the signer, so it should cost as little per request as a client can.
   */
  client: Pool;
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
  // Idle sockets are closed by the client after 2 s, before the edge's own idle timeout can close
  // one just as a request is sent on it (a keep-alive race a client, not the server, must avoid).
  const client = new Pool(stack.api, {
    connections: 512,
    keepAliveTimeout: 2_000,
    keepAliveMaxTimeout: 2_000,
  });
  const network = await api<NetworkView>(client, "POST", "/v1/networks", token, {
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
    client,
    token,
    network,
    async signerMetrics() {
      const res = await undiciFetch(`${signerUrl}/v1/metrics`, { dispatcher: agent });
      const body = (await res.json()) as { custody?: { kmsDecryptCalls?: Record<string, number> } };
      const calls = body.custody?.kmsDecryptCalls ?? {};
      return { decrypts: Object.values(calls).reduce((a, b) => a + b, 0) };
    },
    async stop() {
      await client.close();
      await agent.close();
      await stack.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export async function api<T>(
  client: Pool,
  method: "GET" | "POST",
  path: string,
  token: string,
  body?: unknown,
): Promise<T> {
  const res = await client.request({
    method,
    path,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.body.text();
  if (res.statusCode >= 300) {
    throw new Error(`${method} ${path}: ${res.statusCode} ${text.slice(0, 200)}`);
  }
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
        b.client,
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

async function post(client: Pool, path: string, body: unknown) {
  const res = await client.request({
    method: "POST",
    path,
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: res.statusCode, text: await res.body.text() };
}

export async function enroll(
  client: Pool,
  code: string,
  publicKey: string,
): Promise<IssuedCertificate> {
  const res = await post(client, "/v1/enroll", { code, publicKey });
  if (res.status !== 201) throw new Error(`enroll: ${res.status} ${res.text.slice(0, 160)}`);
  return JSON.parse(res.text) as IssuedCertificate;
}

/** Enrolls with `codes` from index `from` on, under the given load. */
function enrollLoad(
  b: BenchStack,
  codes: string[],
  keys: string[],
  from: number,
  load: { concurrency: number; total: number; maxMs: number },
): Promise<LoadResult> {
  return runLoad({
    ...load,
    request: async (i) => {
      const at = from + i;
      await enroll(b.client, codes[at] as string, keys[at % keys.length] as string);
    },
  });
}

/** The same-run ceilings at 64 concurrent (see EnrollBaselines). */
async function measureBaselines(
  b: BenchStack,
  publicKey: string,
  maxMs: number,
  runs: number,
): Promise<EnrollBaselines> {
  const expect = (status: number, want: number, text: string) => {
    if (status !== want) throw new Error(`expected ${want}, got ${status} ${text.slice(0, 120)}`);
  };
  const edge: LoadResult[] = [];
  const relayed: LoadResult[] = [];
  for (let r = 0; r < runs; r++) {
    edge.push(
      await runLoad({
        concurrency: 64,
        total: 4000,
        maxMs,
        request: async () => {
          const res = await b.client.request({ method: "GET", path: "/v1/no-such-route" });
          expect(res.statusCode, 404, await res.body.text());
        },
      }),
    );
    relayed.push(
      await runLoad({
        concurrency: 64,
        total: 4000,
        maxMs,
        request: async (i) => {
          const res = await post(b.client, "/v1/enroll", { code: `unknown-${r}-${i}`, publicKey });
          expect(res.status, 401, res.text);
        },
      }),
    );
  }
  return { edgeOnly: medianOfRuns(edge), relayRoundTrip: medianOfRuns(relayed) };
}

export async function benchEnroll(options: EnrollBenchOptions): Promise<EnrollBenchResult> {
  const log = options.log ?? (() => undefined);
  const runs = Math.max(1, options.runs ?? 1);
  const b = await startBenchStack(options.env);
  try {
    const keys = await publicKeyPool(64);
    // Isolated request first, on an idle signer.
    const [first] = await registerHosts(b, 1, "isolated");
    const before = await b.signerMetrics();
    await enroll(b.client, first as string, keys[0] as string);
    const isolatedDecrypts = (await b.signerMetrics()).decrypts - before.decrypts;
    let baselines: EnrollBaselines | undefined;
    if (options.baselines) {
      log("  same-run ceilings at concurrency 64: edge alone, edge -> signer round trip...");
      baselines = await measureBaselines(b, keys[0] as string, options.maxMsPerLevel, runs);
      log(
        `  edge alone ${baselines.edgeOnly.perSecond.toFixed(0)}/s, round trip ${baselines.relayRoundTrip.perSecond.toFixed(0)}/s (p99 ${baselines.relayRoundTrip.p99Ms.toFixed(1)} ms)`,
      );
    }
    // Warm-up, unrecorded: the signer starts fresh for each scenario, and its first enrollments at
    // load run cold code and fill caches. Every scenario's levels are measured on a warm signer alike.
    const warmUp = options.warmUp ?? 0;
    if (warmUp > 0) {
      log(`  warming up with ${warmUp} enrollments at concurrency 16...`);
      const codes = await registerHosts(b, warmUp, "warm");
      const w = await enrollLoad(b, codes, keys, 0, {
        concurrency: 16,
        total: warmUp,
        maxMs: options.maxMsPerLevel,
      });
      if (w.errors > 0) throw new Error(`warm-up failed: ${w.errorSamples.join("; ")}`);
    }
    const levels: EnrollLevel[] = [];
    for (const concurrency of options.concurrencies) {
      const total = options.perLevel(concurrency);
      log(`  registering ${total * runs} hosts for concurrency ${concurrency}...`);
      const codes = await registerHosts(b, total * runs, `c${concurrency}`);
      // A short pause, so that the registrations' last commits do not overlap the level.
      await new Promise((r) => setTimeout(r, 200));
      const m0 = await b.signerMetrics();
      const results: LoadResult[] = [];
      const cpuUsed = { signer: 0, workerd: 0, loadGenerator: 0 };
      for (let r = 0; r < runs; r++) {
        log(`  enrolling at concurrency ${concurrency} (run ${r + 1}/${runs})...`);
        const cpu0 = cpuTimes(b);
        const load = enrollLoad(b, codes, keys, r * total, {
          concurrency,
          total,
          maxMs: options.maxMsPerLevel,
        });
        if (r === 0 && options.during) await options.during(concurrency);
        const run = await load;
        const cpu1 = cpuTimes(b);
        for (const k of Object.keys(cpuUsed) as (keyof typeof cpuUsed)[]) {
          cpuUsed[k] += cpu1[k] - cpu0[k];
        }
        results.push(run);
        await options.afterRun?.(concurrency, r, run);
      }
      const result = medianOfRuns(results);
      const m1 = await b.signerMetrics();
      const kmsDecrypts = m1.decrypts - m0.decrypts;
      const perEnroll = (k: keyof typeof cpuUsed) =>
        result.requests ? cpuUsed[k] / result.requests : Number.NaN;
      levels.push({
        ...result,
        kmsDecrypts,
        kmsDecryptsPerCert: result.requests ? kmsDecrypts / result.requests : Number.NaN,
        cpuMsPerEnroll: {
          signer: perEnroll("signer"),
          workerd: perEnroll("workerd"),
          loadGenerator: perEnroll("loadGenerator"),
        },
      });
      log(
        `  c=${concurrency}: ${result.perSecond.toFixed(0)}/s p50 ${result.p50Ms.toFixed(1)} ms p99 ${result.p99Ms.toFixed(1)} ms, errors ${result.errors}, decrypts/cert ${(kmsDecrypts / Math.max(1, result.requests)).toFixed(4)}, CPU ms/enrollment signer ${perEnroll("signer").toFixed(2)} workerd ${perEnroll("workerd").toFixed(2)} client ${perEnroll("loadGenerator").toFixed(2)}`,
      );
    }
    const mem = rss(b.stack.signers[0]?.child.pid);
    return {
      backend: options.env?.KEYHOLE_KMS ?? "local",
      ...(baselines ? { baselines } : {}),
      levels,
      isolatedDecrypts,
      signerRssMiB: mem.now,
      signerPeakRssMiB: mem.peak,
    };
  } finally {
    await b.stop();
  }
}
