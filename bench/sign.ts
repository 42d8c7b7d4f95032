/**
 * Signing speed: host certificates per second through core/cert's `signCertificate` (v1/v2 x
 * Curve25519/P-256), measured in the same run against
 *   - a raw WebCrypto sign loop over a message of the same size (target ratio >= 0.85),
 *   - a raw node:crypto one-shot sign loop, the primitive signCertificate uses where the runtime has
 *     it: what is left between the two is the library's own work (validation, encoding, hashing),
 *   - the same signing with the pure-JS @noble/curves signer (for runtimes without WebCrypto Ed25519),
 *   - a `nebula-cert sign` loop, one process per certificate, as people script it today.
 * Each measurement is the median of several short rounds, configurations interleaved so that drift
 * on a shared machine hits all of them alike. Stand-alone: `node bin/run-ts.mjs bench/sign.ts`.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { promisify } from "node:util";
import {
  type CaSigner,
  type CertVersion,
  type Curve,
  generateCaKeyPair,
  generateHostKeyPair,
  type NebulaCertificate,
  nobleSignerFromPrivateKey,
  signCertificate,
  signerFromPrivateKey,
} from "../core/cert/index.ts";
import { nodeCrypto } from "../core/cert/native.ts";
import { median } from "./load.ts";

const run = promisify(execFile);

export const SIGN_RATIO_TARGET = 0.85;

export interface SignBenchOptions {
  /** Rounds per measurement; the median is reported. Default 12. */
  rounds?: number;
  /** Length of one in-process round in milliseconds. Default 100. */
  roundMs?: number;
  /** Path of nebula-cert 1.11; null skips the subprocess loop. Default: the project's .cache copy. */
  nebulaCert?: string | null;
  /** Processes per nebula-cert round. Default 8. */
  nebulaCertPerRound?: number;
  /** Progress lines; default silent. */
  log?: (line: string) => void;
}

export interface SignBenchRow {
  version: CertVersion;
  curve: Curve;
  /** Bytes WebCrypto signs in the raw loop (the certificate minus its signature). */
  messageBytes: number;
  /** signCertificate with the default (WebCrypto) signer, certificates per second. */
  signCertificatePerSec: number;
  /** The CaSigner alone (signerFromPrivateKey) over `messageBytes` bytes: signer overhead vs raw. */
  signerPerSec: number;
  /** Raw crypto.subtle.sign over `messageBytes` bytes, signatures per second. */
  rawWebCryptoPerSec: number;
  /** signCertificate / raw WebCrypto: the median of the per-round ratios. */
  ratio: number;
  /** Raw node:crypto one-shot signs per second over `messageBytes` bytes; null without node:crypto. */
  rawNodeCryptoPerSec: number | null;
  /** signCertificate / raw node:crypto (what the library's own work costs); null without it. */
  ratioVsNodeCrypto: number | null;
  /** signCertificate with the @noble/curves signer, certificates per second. */
  noblePerSec: number;
  /** noble / WebCrypto signCertificate: the median of the per-round ratios. */
  nobleVsWebCrypto: number;
  /** `nebula-cert sign` subprocesses per second; null when nebula-cert was not run. */
  nebulaCertPerSec: number | null;
}

export interface SignBenchResult {
  runtime: string;
  rounds: number;
  roundMs: number;
  target: number;
  /** Every row's ratio is at least the target. */
  meetsTarget: boolean;
  rows: SignBenchRow[];
  /** Why nebula-cert was not measured, when it was not. */
  nebulaCertSkipped?: string;
}

const COMBOS: { version: CertVersion; curve: Curve }[] = [
  { version: 1, curve: "CURVE25519" },
  { version: 2, curve: "CURVE25519" },
  { version: 1, curve: "P256" },
  { version: 2, curve: "P256" },
];

interface Fixture {
  version: CertVersion;
  curve: Curve;
  ca: NebulaCertificate;
  signer: CaSigner;
  noble: CaSigner;
  hostPublicKey: Uint8Array;
  message: Uint8Array<ArrayBuffer>;
  rawKey: CryptoKey;
  rawAlgorithm: AlgorithmIdentifier | EcdsaParams;
  /** The same raw key as a node:crypto key object, when the runtime has node:crypto. */
  rawNodeKey: import("node:crypto").KeyObject | null;
}

export async function benchSign(opts: SignBenchOptions = {}): Promise<SignBenchResult> {
  const rounds = opts.rounds ?? 12;
  const roundMs = opts.roundMs ?? 100;
  const log = opts.log ?? (() => {});
  const fixtures = await Promise.all(COMBOS.map((c) => makeFixture(c.version, c.curve)));

  const loops: { key: string; step: (f: Fixture, i: number) => Promise<unknown> }[] = [
    { key: "lib", step: (f, i) => signCertificate(hostDetails(f, i), f.ca, f.signer) },
    { key: "signer", step: (f) => f.signer.sign(f.message) },
    { key: "raw", step: (f) => crypto.subtle.sign(f.rawAlgorithm, f.rawKey, f.message) },
    ...(nodeCrypto ? [{ key: "rawNode", step: async (f: Fixture) => rawNodeSign(f) }] : []),
    { key: "noble", step: (f, i) => signCertificate(hostDetails(f, i), f.ca, f.noble) },
  ];
  const samples = new Map<string, number[]>();
  // One unrecorded round first, so that every path is compiled before it is timed.
  for (let r = -1; r < rounds; r++) {
    for (const f of fixtures) {
      for (const loop of loops) {
        // Noble P-256 and Ed25519 are slow; shorter rounds keep the whole run bounded.
        const ms = loop.key === "noble" ? roundMs / 2 : roundMs;
        const rate = await ratePerSecond(ms, (i) => loop.step(f, i));
        const id = `${f.version}/${f.curve}/${loop.key}`;
        if (r >= 0) samples.set(id, [...(samples.get(id) ?? []), rate]);
      }
    }
    log(r < 0 ? "warm-up round done" : `round ${r + 1}/${rounds} done`);
  }

  const nebula = await benchNebulaCert(opts, Math.max(3, Math.ceil(rounds / 2)), log);
  const rows: SignBenchRow[] = fixtures.map((f) => {
    const series = (k: string) => samples.get(`${f.version}/${f.curve}/${k}`) ?? [];
    const at = (k: string) => median(series(k));
    // Ratios pair the loops of the same round (run back to back), so load on a shared machine
    // cancels out better than in a ratio of two medians.
    const paired = (a: string, b: string) =>
      median(series(a).map((x, i) => x / (series(b)[i] ?? Number.NaN)));
    const lib = at("lib");
    const raw = at("raw");
    const noble = at("noble");
    return {
      version: f.version,
      curve: f.curve,
      messageBytes: f.message.length,
      signCertificatePerSec: lib,
      signerPerSec: at("signer"),
      rawWebCryptoPerSec: raw,
      ratio: paired("lib", "raw"),
      rawNodeCryptoPerSec: nodeCrypto ? at("rawNode") : null,
      ratioVsNodeCrypto: nodeCrypto ? paired("lib", "rawNode") : null,
      noblePerSec: noble,
      nobleVsWebCrypto: paired("noble", "lib"),
      nebulaCertPerSec: nebula.rates?.get(`${f.version}/${f.curve}`) ?? null,
    };
  });
  const result: SignBenchResult = {
    runtime: runtimeName(),
    rounds,
    roundMs,
    target: SIGN_RATIO_TARGET,
    meetsTarget: rows.every((r) => r.ratio >= SIGN_RATIO_TARGET),
    rows,
  };
  if (nebula.skipped) result.nebulaCertSkipped = nebula.skipped;
  return result;
}

/** The readable table `npm run bench` prints. */
export function formatSignBench(result: SignBenchResult): string {
  const head = [
    "cert",
    "signCertificate/s",
    "CaSigner.sign/s",
    "raw WebCrypto/s",
    "ratio",
    "raw node:crypto/s",
    "÷node:crypto",
    "noble/s",
    "noble÷WebCrypto",
    "nebula-cert/s",
  ];
  const body = result.rows.map((r) => [
    `v${r.version} ${r.curve === "P256" ? "P256" : "25519"}`,
    r.signCertificatePerSec.toFixed(0),
    r.signerPerSec.toFixed(0),
    r.rawWebCryptoPerSec.toFixed(0),
    `${r.ratio.toFixed(2)}${r.ratio >= result.target ? "" : " (below target)"}`,
    r.rawNodeCryptoPerSec === null ? "-" : r.rawNodeCryptoPerSec.toFixed(0),
    r.ratioVsNodeCrypto === null ? "-" : r.ratioVsNodeCrypto.toFixed(2),
    r.noblePerSec.toFixed(0),
    r.nobleVsWebCrypto.toFixed(2),
    r.nebulaCertPerSec === null ? "-" : r.nebulaCertPerSec.toFixed(1),
  ]);
  const widths = head.map((h, i) =>
    Math.max(h.length, ...body.map((row) => (row[i] as string).length)),
  );
  const line = (cells: string[]) => cells.map((c, i) => c.padStart(widths[i] as number)).join("  ");
  const lines = [
    `Signing on ${result.runtime}: medians of ${result.rounds} rounds of ${result.roundMs} ms, one signature at a time`,
    line(head),
    ...body.map(line),
    `target: signCertificate >= ${result.target} x raw WebCrypto: ${result.meetsTarget ? "met" : "NOT met"}`,
  ];
  if (result.nebulaCertSkipped) lines.push(`nebula-cert loop skipped: ${result.nebulaCertSkipped}`);
  return `${lines.join("\n")}\n`;
}

async function makeFixture(version: CertVersion, curve: Curve): Promise<Fixture> {
  const keys = await generateCaKeyPair(curve);
  const signer = await signerFromPrivateKey(curve, keys.privateKey);
  const noble = nobleSignerFromPrivateKey(curve, keys.privateKey.slice());
  const now = new Date(Math.floor(Date.now() / 1000) * 1000);
  const ca = await signCertificate(
    {
      version,
      name: `bench CA v${version} ${curve}`,
      networks: ["10.80.0.0/16"],
      unsafeNetworks: [],
      groups: ["servers", "ops"],
      isCA: true,
      notBefore: now,
      notAfter: new Date(now.getTime() + 86400_000),
      publicKey: keys.publicKey,
      curve,
    },
    null,
    signer,
  );
  const host = await generateHostKeyPair(curve);
  const f: Fixture = {
    version,
    curve,
    ca,
    signer,
    noble,
    hostPublicKey: host.publicKey,
    message: new Uint8Array(0),
    rawKey: undefined as unknown as CryptoKey,
    rawAlgorithm: { name: "Ed25519" },
    rawNodeKey: null,
  };
  const sample = await signCertificate(hostDetails(f, 0), ca, signer);
  f.message = crypto.getRandomValues(new Uint8Array(sample.raw.length - sample.signature.length));
  if (curve === "CURVE25519") {
    const pair = (await crypto.subtle.generateKey({ name: "Ed25519" }, false, [
      "sign",
      "verify",
    ])) as CryptoKeyPair;
    f.rawKey = pair.privateKey;
    f.rawAlgorithm = { name: "Ed25519" };
  } else {
    const pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, [
      "sign",
      "verify",
    ]);
    f.rawKey = pair.privateKey;
    f.rawAlgorithm = { name: "ECDSA", hash: "SHA-256" } as EcdsaParams;
  }
  f.rawNodeKey = nodeCrypto ? nodeCrypto.KeyObject.from(f.rawKey) : null;
  keys.privateKey.fill(0);
  return f;
}

/** One raw node:crypto signature as signCertificate's signer makes it (P-256 as r||s, like WebCrypto). */
function rawNodeSign(f: Fixture): Uint8Array {
  if (!nodeCrypto || !f.rawNodeKey) throw new Error("node:crypto is not available");
  return f.curve === "CURVE25519"
    ? nodeCrypto.sign(null, f.message, f.rawNodeKey)
    : nodeCrypto.sign("sha256", f.message, { key: f.rawNodeKey, dsaEncoding: "ieee-p1363" });
}

function hostDetails(f: Fixture, i: number) {
  const now = new Date(Math.floor(Date.now() / 1000) * 1000);
  return {
    version: f.version,
    name: `host-${i}.bench.example`,
    networks: [`10.80.${(i >> 8) & 0xff}.${i & 0xff || 1}/16`],
    unsafeNetworks: [],
    groups: ["servers"],
    isCA: false,
    notBefore: now,
    notAfter: new Date(now.getTime() + 3600_000),
    publicKey: f.hostPublicKey,
    curve: f.curve,
  };
}

async function ratePerSecond(ms: number, step: (i: number) => Promise<unknown>): Promise<number> {
  await step(0); // warm
  let n = 0;
  const start = performance.now();
  let elapsed = 0;
  while (elapsed < ms) {
    await step(++n);
    elapsed = performance.now() - start;
  }
  return (n * 1000) / elapsed;
}

/** The nebula-cert 1.11 this project installs (scripts/install-nebula.sh). */
export const NEBULA_CERT = resolve(
  dirname(fileURLToPath(import.meta.url)),
  "../.cache/nebula-1.11/usr/bin/nebula-cert",
);

/**
 * A `nebula-cert sign` loop as people script it: one process per certificate, against a CA and a
 * host public key made once in a temporary folder.
 */
export interface NebulaCertLoop {
  /** Signs `count` certificates one process after another; certificates per second. */
  rate(count: number): Promise<number>;
  close(): Promise<void>;
}

let serial = 0;

export async function startNebulaCertLoop(
  tool: string,
  version: CertVersion,
  curve: Curve,
): Promise<NebulaCertLoop> {
  const dir = await mkdtemp(join(tmpdir(), "keyhole-bench-nebula-"));
  const close = () => rm(dir, { recursive: true, force: true });
  try {
    const c = curve === "P256" ? "P256" : "25519";
    await run(tool, ["ca", "-name", "bench", "-version", String(version), "-curve", c], {
      cwd: dir,
    });
    await run(tool, ["keygen", "-curve", c, "-out-key", "host.key", "-out-pub", "host.pub"], {
      cwd: dir,
    });
  } catch (e) {
    await close();
    throw e;
  }
  return {
    async rate(count) {
      const start = performance.now();
      for (let i = 0; i < count; i++) {
        serial++;
        const ip = `10.80.${(serial >> 8) & 0xff}.${serial & 0xff || 1}/16`;
        await run(tool, ["sign", "-name", `h${serial}`, "-networks", ip, "-in-pub", "host.pub"], {
          cwd: dir,
        });
      }
      return (count * 1000) / (performance.now() - start);
    },
    close,
  };
}

async function benchNebulaCert(
  opts: SignBenchOptions,
  rounds: number,
  log: (line: string) => void,
): Promise<{ rates?: Map<string, number>; skipped?: string }> {
  if (opts.nebulaCert === null) return { skipped: "disabled by the caller" };
  const tool = opts.nebulaCert ?? NEBULA_CERT;
  if (!existsSync(tool)) return { skipped: `${tool} not found (sh scripts/install-nebula.sh)` };
  const perRound = opts.nebulaCertPerRound ?? 8;
  const loops = await Promise.all(COMBOS.map((c) => startNebulaCertLoop(tool, c.version, c.curve)));
  try {
    const samples = new Map<string, number[]>();
    for (let r = 0; r < rounds; r++) {
      for (const [i, c] of COMBOS.entries()) {
        const id = `${c.version}/${c.curve}`;
        samples.set(id, [
          ...(samples.get(id) ?? []),
          await (loops[i] as NebulaCertLoop).rate(perRound),
        ]);
      }
      log(`nebula-cert round ${r + 1}/${rounds} done`);
    }
    return { rates: new Map([...samples].map(([id, s]) => [id, median(s)])) };
  } finally {
    await Promise.all(loops.map((l) => l.close()));
  }
}

function runtimeName(): string {
  const g = globalThis as { Bun?: { version: string }; Deno?: { version: { deno: string } } };
  if (g.Bun) return `Bun ${g.Bun.version}`;
  if (g.Deno) return `Deno ${g.Deno.version.deno}`;
  return `Node ${process.versions.node}`;
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const started = performance.now();
  const result = await benchSign({ log: (l) => process.stderr.write(`bench/sign: ${l}\n`) });
  process.stdout.write(formatSignBench(result));
  process.stdout.write(`(${((performance.now() - started) / 1000).toFixed(1)} s)\n`);
}
