/**
 * `npm run bench -- --quick --json --no-write` as a user runs it (starts: the bench's own stacks,
 * moto_server regions, cfssl serve and a nebula-cert loop). What is checked is that every
 * measurement the benchmark promises is made and reported, and the targets that are behaviour, not
 * speed: one KMS decrypt for an isolated enrollment, shared decrypts under load, no failed request
 * with region A paused or killed. Rates are not asserted here: they are measured, by `npm run bench`.
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { beforeAll, expect, it } from "vitest";
import { CFSSL } from "../bench/cfssl.ts";
import { motoServer } from "./support/moto.ts";
import { describeWith, nebulaCert111, probe, REPO_ROOT } from "./support/tools.ts";

const cfssl = probe(
  "cfssl",
  CFSSL,
  ["version"],
  /Version:/,
  "Run `sh scripts/install-nebula.sh` as root (it installs golang-cfssl too).",
);

interface Level {
  concurrency: number;
  requests: number;
  errors: number;
  cpuMsPerEnroll: { signer: number; workerd: number };
}
interface Scenario {
  name: string;
  skipped?: string;
  levels?: Level[];
}
interface Summary {
  cores: number;
  quick: boolean;
  sign_ratio_vs_webcrypto: number;
  sign_rows: {
    version: number;
    curve: string;
    ratio: number;
    signCertificatePerSec: number;
    rawWebCryptoPerSec: number;
    nobleVsWebCrypto: number;
    nebulaCertPerSec: number;
  }[];
  noble_vs_webcrypto: number;
  enroll_per_s: number;
  enroll_p99_ms: number;
  kms_decrypts_per_cert: number;
  kms_decrypts_isolated: number;
  signer_rss_mib: number;
  nebula_cert_sign_per_s: number;
  cfssl_sign_per_s: number;
  enroll_vs_nebula_cert: number;
  enroll_vs_cfssl: number;
  edge_only_per_s: number;
  relay_round_trip_per_s: number;
  scenarios: Scenario[];
}

/** What the bench may write, by path and content hash: `--no-write` must leave all of it alone. */
function writtenFiles(): Map<string, string> {
  const out = new Map<string, string>();
  const hash = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");
  out.set("README.md", hash(join(REPO_ROOT, "README.md")));
  const results = join(REPO_ROOT, "bench/results");
  if (existsSync(results)) {
    for (const f of readdirSync(results)) out.set(`bench/results/${f}`, hash(join(results, f)));
  }
  return out;
}

const isPositive = (x: unknown) => typeof x === "number" && Number.isFinite(x) && x > 0;

describeWith([motoServer, cfssl, nebulaCert111], "npm run bench -- --quick --json", () => {
  let summary: Summary;
  let progress = "";
  let before: Map<string, string>;

  beforeAll(async () => {
    before = writtenFiles();
    const child = spawn(
      process.execPath,
      ["bin/run-ts.mjs", "bench/main.ts", "--quick", "--json", "--no-write"],
      { cwd: REPO_ROOT, stdio: ["ignore", "pipe", "pipe"] },
    );
    let out = "";
    child.stdout.on("data", (d) => {
      out += d;
    });
    child.stderr.on("data", (d) => {
      progress += d;
    });
    const code = await new Promise<number | null>((done) => child.on("close", done));
    if (code !== 0) throw new Error(`the bench exited with ${code}:\n${progress.slice(-3000)}`);
    const last = out.trim().split("\n").at(-1) ?? "";
    summary = JSON.parse(last) as Summary;
  }, 600_000);

  it("prints one JSON object with every figure the benchmark promises, for this machine", () => {
    expect(summary.cores).toBe(cpus().length);
    expect(summary.quick).toBe(true);
    for (const key of [
      "sign_ratio_vs_webcrypto",
      "noble_vs_webcrypto",
      "enroll_per_s",
      "enroll_p99_ms",
      "nebula_cert_sign_per_s",
      "cfssl_sign_per_s",
      "enroll_vs_nebula_cert",
      "enroll_vs_cfssl",
      "edge_only_per_s",
      "relay_round_trip_per_s",
      "signer_rss_mib",
    ] as const) {
      expect(isPositive(summary[key]), `${key}: ${summary[key]}`).toBe(true);
    }
    // Signing: v1 and v2, Curve25519 and P-256, each against WebCrypto in the same process.
    expect(summary.sign_rows.map((r) => `v${r.version} ${r.curve}`).sort()).toEqual([
      "v1 CURVE25519",
      "v1 P256",
      "v2 CURVE25519",
      "v2 P256",
    ]);
    for (const row of summary.sign_rows) {
      const figures = [
        row.ratio,
        row.signCertificatePerSec,
        row.rawWebCryptoPerSec,
        row.nobleVsWebCrypto,
        row.nebulaCertPerSec,
      ];
      expect(figures.every(isPositive), `v${row.version} ${row.curve}: ${figures}`).toBe(true);
    }
  });

  it("runs every end-to-end scenario with no failed request: local, moto, region A paused, region A killed", () => {
    const byName = new Map(summary.scenarios.map((s) => [s.name, s]));
    for (const name of ["local", "moto", "moto, region A paused", "moto, region A killed"]) {
      const s = byName.get(name);
      expect(s, name).toBeDefined();
      expect(s?.skipped, name).toBeUndefined();
      for (const level of s?.levels ?? []) {
        expect([name, level.concurrency, level.errors]).toEqual([name, level.concurrency, 0]);
        expect(level.requests, name).toBeGreaterThan(0);
        expect(isPositive(level.cpuMsPerEnroll.signer), name).toBe(true);
        expect(isPositive(level.cpuMsPerEnroll.workerd), name).toBe(true);
      }
    }
    const local = byName.get("local");
    expect(local?.levels?.map((l) => l.concurrency)).toEqual([1, 16, 64]);
  });

  it("opens the CA key once for an isolated enrollment, and shares decrypts under load", () => {
    expect(summary.kms_decrypts_isolated).toBe(1);
    // Without sharing every certificate would cost a decrypt (1.0); at 64 concurrent they share.
    expect(summary.kms_decrypts_per_cert).toBeGreaterThan(0);
    expect(summary.kms_decrypts_per_cert).toBeLessThan(0.25);
  });

  it("with --no-write leaves the README and bench/results as they were", () => {
    expect(writtenFiles()).toEqual(before);
  });
});
