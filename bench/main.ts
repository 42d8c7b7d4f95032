/**
 * `npm run bench`: every measurement side by side in one run, as ratios to baselines measured in the
 * same run (these machines are shared and noisy). Writes bench/results/<date>.json and latest.json,
 * and the README's table between its bench markers. `npm run bench -- --json` ends with one JSON
 * object; `--quick` shrinks every scenario (for a smoke run).
 */
import { existsSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { cpus, totalmem } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import {
  fakeAwsEnv,
  type MotoRegion,
  motoServer,
  startMoto,
  stopAllMoto,
} from "../cli/dev/moto.ts";
import { startCfssl } from "./cfssl.ts";
import { benchEnroll, type EnrollBenchResult, type EnrollLevel } from "./e2e.ts";
import { type LoadResult, median, medianOfRuns } from "./load.ts";
import {
  benchSign,
  formatSignBench,
  NEBULA_CERT,
  type NebulaCertLoop,
  type SignBenchResult,
  startNebulaCertLoop,
} from "./sign.ts";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const { values } = parseArgs({
  options: {
    json: { type: "boolean", default: false },
    quick: { type: "boolean", default: false },
    "no-write": { type: "boolean", default: false },
  },
  strict: true,
});
const quick = values.quick;
const log = (line: string) => process.stderr.write(`${line}\n`);

interface Scenario {
  name: string;
  result: EnrollBenchResult | { skipped: string };
}

const CONCURRENCIES = quick ? [1, 16, 64] : [1, 16, 64, 256];
const perLevel = (c: number) => (quick ? (c === 1 ? 50 : 400) : c === 1 ? 200 : 1500);
const MAX_MS = quick ? 5_000 : 12_000;
/** Enrollments each scenario's fresh signer makes before anything is measured. */
const WARM_UP = quick ? 100 : 600;
/** Runs of every load measurement: the table shows their medians. */
const RUNS = quick ? 1 : 3;

async function motoRegions(): Promise<{
  a: MotoRegion;
  b: MotoRegion;
  env: Record<string, string>;
}> {
  const [a, b] = await Promise.all([startMoto(), startMoto()]);
  const [keyA, keyB] = await Promise.all([a.createKey("us-east-1"), b.createKey("eu-west-1")]);
  return {
    a,
    b,
    env: {
      ...fakeAwsEnv(),
      KEYHOLE_KMS: "aws",
      KEYHOLE_KMS_KEYS: `us-east-1=${keyA},eu-west-1=${keyB}`,
      KEYHOLE_KMS_ENDPOINTS: `us-east-1=${a.url},eu-west-1=${b.url}`,
      KEYHOLE_KMS_TIMEOUT_MS: "250",
      KEYHOLE_KMS_HEDGE_MS: "60",
    },
  };
}

async function motoScenario(name: string, fault: "none" | "pause" | "kill"): Promise<Scenario> {
  if (!motoServer.available) return { name, result: { skipped: motoServer.missing } };
  log(
    `== end to end, two moto_server KMS regions, region A ${fault === "none" ? "up" : fault === "pause" ? "paused" : "killed"}`,
  );
  const { a, b, env } = await motoRegions();
  try {
    const result = await benchEnroll({
      concurrencies: [64],
      perLevel: () => (quick ? 400 : 1500),
      maxMsPerLevel: MAX_MS,
      warmUp: WARM_UP,
      runs: RUNS,
      env,
      log,
      during: async () => {
        if (fault === "pause") a.pause();
        if (fault === "kill") await a.kill();
      },
    });
    return { name, result };
  } finally {
    a.resume();
    await Promise.all([a.kill(), b.kill()]);
  }
}

function level(
  r: EnrollBenchResult | { skipped: string } | undefined,
  c: number,
): EnrollLevel | undefined {
  return r && "levels" in r ? r.levels.find((l) => l.concurrency === c) : undefined;
}

function minOrNull(values: (number | null)[]): number | null {
  const known = values.filter((v): v is number => v !== null);
  return known.length > 0 ? Math.min(...known) : null;
}

function fmt(n: number | undefined, digits = 0): string {
  return n === undefined || Number.isNaN(n) ? "-" : n.toFixed(digits);
}

async function main(): Promise<void> {
  const started = new Date();
  log(
    `keyhole bench on ${cpus().length} cores, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}${quick ? " (quick)" : ""}`,
  );

  log("== signing core (in process) vs raw WebCrypto, @noble/curves and nebula-cert");
  const sign: SignBenchResult = await benchSign({
    rounds: quick ? 3 : 7,
    roundMs: quick ? 150 : 300,
    log,
  });
  log(formatSignBench(sign));

  // The alternatives are measured right after each run at 64 concurrent, so that each ratio
  // compares two measurements of the same minute on this shared machine.
  const cfsslServer = await startCfssl();
  const nebulaLoop: NebulaCertLoop | null = existsSync(NEBULA_CERT)
    ? await startNebulaCertLoop(NEBULA_CERT, 2, "CURVE25519")
    : null;
  const paired: { enroll: number[]; cfssl: LoadResult[]; nebulaCert: number[] } = {
    enroll: [],
    cfssl: [],
    nebulaCert: [],
  };
  const alternativesAfter = async (concurrency: number, run: number, result: LoadResult) => {
    if (concurrency !== 64) return;
    paired.enroll.push(result.perSecond);
    if (!("skipped" in cfsslServer)) {
      log(`  cfssl serve, P-256 CSRs at concurrency 64 (run ${run + 1}/${RUNS})...`);
      paired.cfssl.push(
        await cfsslServer.run({ concurrency: 64, total: quick ? 500 : 3000, maxMs: MAX_MS }),
      );
    }
    if (nebulaLoop) {
      log(`  nebula-cert sign loop (run ${run + 1}/${RUNS})...`);
      paired.nebulaCert.push(await nebulaLoop.rate(quick ? 8 : 24));
    }
  };

  log("== end to end, local custody backend (cfssl and nebula-cert after each run at 64)");
  let local: EnrollBenchResult;
  try {
    local = await benchEnroll({
      concurrencies: CONCURRENCIES,
      perLevel,
      maxMsPerLevel: MAX_MS,
      warmUp: WARM_UP,
      runs: RUNS,
      baselines: true,
      afterRun: alternativesAfter,
      log,
    });
  } finally {
    if (!("skipped" in cfsslServer)) await cfsslServer.stop();
    await nebulaLoop?.close();
  }
  const scenarios: Scenario[] = [{ name: "local", result: local }];
  scenarios.push(await motoScenario("moto", "none"));
  scenarios.push(await motoScenario("moto, region A paused", "pause"));
  scenarios.push(await motoScenario("moto, region A killed", "kill"));
  stopAllMoto();

  const cfssl: LoadResult | { skipped: string } =
    "skipped" in cfsslServer ? cfsslServer : medianOfRuns(paired.cfssl);
  const at64 = level(local, 64);
  const nebulaCert = paired.nebulaCert.length > 0 ? median(paired.nebulaCert) : null;
  const cfsslPerSec = "perSecond" in cfssl ? cfssl.perSecond : null;
  /** The median over runs of (enrollments/s in run i) / (baseline in run i). */
  const pairedRatio = (baseline: number[]) =>
    baseline.length === paired.enroll.length && baseline.length > 0
      ? median(paired.enroll.map((e, i) => e / (baseline[i] as number)))
      : null;
  const summary = {
    date: started.toISOString(),
    cores: cpus().length,
    node: process.version,
    quick,
    sign_ratio_vs_webcrypto: Math.min(...sign.rows.map((r) => r.ratio)),
    sign_ratio_vs_node_crypto: minOrNull(sign.rows.map((r) => r.ratioVsNodeCrypto)),
    sign_rows: sign.rows,
    noble_vs_webcrypto: Math.min(...sign.rows.map((r) => r.nobleVsWebCrypto)),
    enroll_per_s: at64?.perSecond ?? null,
    enroll_p50_ms: at64?.p50Ms ?? null,
    enroll_p99_ms: at64?.p99Ms ?? null,
    kms_decrypts_per_cert: at64?.kmsDecryptsPerCert ?? null,
    kms_decrypts_isolated: local.isolatedDecrypts,
    signer_rss_mib: local.signerRssMiB,
    signer_peak_rss_mib: local.signerPeakRssMiB,
    nebula_cert_sign_per_s: nebulaCert,
    cfssl_sign_per_s: cfsslPerSec,
    cfssl_p99_ms: "p99Ms" in cfssl ? cfssl.p99Ms : null,
    enroll_vs_nebula_cert: pairedRatio(paired.nebulaCert),
    enroll_vs_cfssl: pairedRatio(paired.cfssl.map((r) => r.perSecond)),
    /** Each local run at 64 concurrent with the alternatives measured right after it. */
    paired_runs: paired.enroll.map((enrollPerS, i) => ({
      enroll_per_s: enrollPerS,
      cfssl_per_s: paired.cfssl[i]?.perSecond ?? null,
      nebula_cert_per_s: paired.nebulaCert[i] ?? null,
    })),
    cpu_ms_per_enroll: at64?.cpuMsPerEnroll ?? null,
    edge_only_per_s: local.baselines?.edgeOnly.perSecond ?? null,
    relay_round_trip_per_s: local.baselines?.relayRoundTrip.perSecond ?? null,
    enroll_vs_round_trip:
      at64 && local.baselines ? at64.perSecond / local.baselines.relayRoundTrip.perSecond : null,
    scenarios: scenarios.map((s) => ({ name: s.name, ...s.result })),
    cfssl,
  };

  const rows: string[][] = [
    ["scenario", "concurrency", "per second", "p50 ms", "p99 ms", "errors", "KMS decrypts/cert"],
  ];
  const ceilings: [string, LoadResult | undefined][] = [
    ["ceiling: edge alone (404, nothing relayed)", local.baselines?.edgeOnly],
    ["ceiling: edge → mTLS → signer → 401 (one read)", local.baselines?.relayRoundTrip],
  ];
  for (const [name, r] of ceilings) if (r) rows.push(loadRow(name, r, "-"));
  for (const s of scenarios) {
    if ("skipped" in s.result) {
      rows.push([s.name, "-", `skipped: ${s.result.skipped}`, "", "", "", ""]);
      continue;
    }
    for (const l of s.result.levels) rows.push(loadRow(s.name, l, fmt(l.kmsDecryptsPerCert, 4)));
  }
  if ("perSecond" in cfssl) rows.push(loadRow("cfssl serve (P-256 CSR)", cfssl, "-"));
  const table = markdownTable(rows);
  const signTable = markdownTable([
    [
      "certificate",
      "signCertificate/s",
      "raw WebCrypto/s",
      "ratio",
      "raw node:crypto/s",
      "ratio vs node:crypto",
      "@noble/curves vs WebCrypto",
      "nebula-cert sign/s",
    ],
    ...sign.rows.map((r) => [
      `v${r.version} ${r.curve}`,
      fmt(r.signCertificatePerSec),
      fmt(r.rawWebCryptoPerSec),
      fmt(r.ratio, 2),
      fmt(r.rawNodeCryptoPerSec ?? undefined),
      fmt(r.ratioVsNodeCrypto ?? undefined, 2),
      fmt(r.nobleVsWebCrypto, 2),
      fmt(r.nebulaCertPerSec ?? undefined, 1),
    ]),
  ]);
  const cpu = at64?.cpuMsPerEnroll;
  const ratios = [
    `CPU per enrollment at 64 concurrent (local): signer ${fmt(cpu?.signer, 2)} ms, workerd ${fmt(cpu?.workerd, 2)} ms, load generator ${fmt(cpu?.loadGenerator, 2)} ms`,
    `end to end at 64 concurrent vs the edge → signer round trip without issuing (same run): ${fmt(summary.enroll_vs_round_trip ?? undefined, 2)}x`,
    `end to end at 64 concurrent vs a nebula-cert sign loop (${fmt(nebulaCert ?? undefined, 1)}/s, v2 Curve25519) run right after each run: ${fmt(summary.enroll_vs_nebula_cert ?? undefined, 1)}x (median of the per-run ratios)`,
    `end to end at 64 concurrent vs cfssl serve run right after each run: ${fmt(summary.enroll_vs_cfssl ?? undefined, 2)}x (median of the per-run ratios)`,
    `KMS decrypts for one isolated enrollment: ${local.isolatedDecrypts}; signer memory ${fmt(local.signerRssMiB)} MiB (peak ${fmt(local.signerPeakRssMiB)} MiB)`,
  ];
  const report = `Measured ${started.toISOString().slice(0, 10)} on ${cpus().length} cores (${cpus()[0]?.model ?? "cpu"}), node ${process.version}${quick ? ", --quick" : ""}; each load row is the median of ${RUNS} run${RUNS === 1 ? "" : "s"}.\n\n${signTable}\n\n${table}\n\n${ratios.map((r) => `- ${r}`).join("\n")}\n`;
  process.stderr.write(`\n${report}\n`);

  if (!values["no-write"]) {
    const dir = join(ROOT, "bench/results");
    await mkdir(dir, { recursive: true });
    const file = join(dir, `${started.toISOString().slice(0, 10)}${quick ? "-quick" : ""}.json`);
    await writeFile(file, `${JSON.stringify(summary, null, 2)}\n`);
    if (!quick) {
      await writeFile(join(dir, "latest.json"), `${JSON.stringify(summary, null, 2)}\n`);
      await writeFile(join(dir, "latest.md"), report);
      await updateReadme(report);
    }
    log(`results written to ${file}`);
  }
  if (values.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
}

/** One row of the end-to-end table: scenario, concurrency, rate, latency, errors, KMS column. */
function loadRow(name: string, r: LoadResult, kms: string): string[] {
  return [
    name,
    String(r.concurrency),
    fmt(r.perSecond),
    fmt(r.p50Ms, 1),
    fmt(r.p99Ms, 1),
    String(r.errors),
    kms,
  ];
}

function markdownTable(rows: string[][]): string {
  const [head, ...body] = rows;
  if (!head) return "";
  const line = (r: string[]) => `| ${r.join(" | ")} |`;
  return [line(head), line(head.map(() => "---")), ...body.map(line)].join("\n");
}

async function updateReadme(report: string): Promise<void> {
  const readme = join(ROOT, "README.md");
  if (!existsSync(readme)) return;
  const text = await readFile(readme, "utf8");
  const start = "<!-- bench:start -->";
  const end = "<!-- bench:end -->";
  const i = text.indexOf(start);
  const j = text.indexOf(end);
  if (i < 0 || j < i) return;
  await writeFile(readme, `${text.slice(0, i + start.length)}\n${report}${text.slice(j)}`);
}

await main();
