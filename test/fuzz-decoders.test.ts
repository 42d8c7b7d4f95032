/**
 * Fuzzing of everything in core/cert that reads bytes or text from outside: the v1 (protobuf) and
 * v2 (ASN.1) certificate decoders, the PEM parsers and the encrypted-key reader. The inputs are
 * random bytes, mutations of certificates made by the real nebula-cert (bit flips, truncation,
 * inflated length fields, deep nesting, splices) and PEM-shaped text. For each input the only
 * acceptable outcomes are a value or a CertError; every input must finish within a time bound and
 * the heap must not grow with the number of inputs. A summary line per decoder says how many
 * inputs were tried and how they were refused.
 */
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import {
  CertError,
  type CertVersion,
  decodeCertificate,
  decryptPrivateKeyPem,
  encryptPrivateKeyPem,
  generateCaKeyPair,
  parseCertificatesPem,
  parsePrivateKeyPem,
  parsePublicKeyPem,
} from "../core/cert/index.ts";
import { REPO_ROOT } from "./support/tools.ts";

const FIXTURES = resolve(REPO_ROOT, "test/fixtures/nebula");
const SETS = [
  "v1-25519",
  "v1-25519-nebula-1.6",
  "v1-p256",
  "v2-25519",
  "v2-p256",
  "encrypted-ca-25519",
];
const RUNS = Number(process.env.KEYHOLE_FUZZ_RUNS ?? 20_000);
/**
 * Time budget per decoder: the run stops at RUNS inputs or at this many milliseconds, whichever
 * comes first (the summary line says which), so the suite stays near 20 s on a loaded machine.
 * KEYHOLE_FUZZ_MS=0 removes the budget.
 */
const BUDGET_MS = Number(process.env.KEYHOLE_FUZZ_MS ?? 3_500);
/** Fewer than this many inputs within the budget means the harness, not the decoder, is broken. */
const MIN_INPUTS = 1_000;
/** Generous for a loaded 2-core machine; a decoder that loops on a length field blows it by far. */
const PER_INPUT_MS = 1_000;
/** Inputs near the 1 MiB PEM limit are walked character by character: linear, but not instant. */
const OVERSIZED_INPUT_MS = 5_000;
/** Heap growth allowed across a whole decoder's run, after a full collection. */
const HEAP_SLACK_BYTES = 48 * 1024 * 1024;

function fixture(set: string, file: string): string {
  return readFileSync(resolve(FIXTURES, set, file), "utf8");
}

function pemBody(pem: string): Uint8Array {
  const b64 = pem
    .replace(/-----[^-]+-----/g, "")
    .replace(/\s+/g, "")
    .trim();
  return new Uint8Array(Buffer.from(b64, "base64"));
}

function toPem(type: string, bytes: Uint8Array, width = 64): string {
  const b64 = Buffer.from(bytes).toString("base64");
  let out = `-----BEGIN ${type}-----\n`;
  for (let i = 0; i < b64.length; i += width) out += `${b64.slice(i, i + width)}\n`;
  return `${out}-----END ${type}-----\n`;
}

const certPems: { set: string; version: CertVersion; pem: string }[] = [];
for (const set of SETS) {
  for (const file of ["ca.crt", "host.crt"]) {
    const pem = fixture(set, file);
    certPems.push({ set, version: pem.includes("CERTIFICATE V2") ? 2 : 1, pem });
  }
}
const v1Raw = certPems.filter((c) => c.version === 1).map((c) => pemBody(c.pem));
const v2Raw = certPems.filter((c) => c.version === 2).map((c) => pemBody(c.pem));
const pubPems = SETS.map((s) => fixture(s, "host.pub"));
const keyPems = SETS.flatMap((s) => [
  fixture(s, "host.key"),
  ...(s.startsWith("encrypted") ? [] : [fixture(s, "ca.key")]),
]);

const BANNERS = [
  "NEBULA CERTIFICATE",
  "NEBULA CERTIFICATE V2",
  "NEBULA X25519 PUBLIC KEY",
  "NEBULA P256 PUBLIC KEY",
  "NEBULA X25519 PRIVATE KEY",
  "NEBULA P256 PRIVATE KEY",
  "NEBULA ED25519 PRIVATE KEY",
  "NEBULA ECDSA P256 PRIVATE KEY",
  "NEBULA ED25519 PUBLIC KEY",
  "NEBULA ECDSA P256 PUBLIC KEY",
  "NEBULA ED25519 ENCRYPTED PRIVATE KEY",
  "NEBULA ECDSA P256 ENCRYPTED PRIVATE KEY",
  "CERTIFICATE",
  "PRIVATE KEY",
];

// ---- byte mutations ----

type Mutation =
  | { kind: "flip"; at: number; bit: number }
  | { kind: "set"; at: number; value: number }
  | { kind: "truncate"; at: number }
  | { kind: "delete"; at: number; count: number }
  | { kind: "insert"; at: number; bytes: Uint8Array }
  | { kind: "inflate"; at: number; form: number }
  | { kind: "nest"; depth: number; form: number }
  | { kind: "splice"; at: number; other: number; from: number };

/** Length encodings that claim far more bytes than exist: DER long form and protobuf varints. */
const HUGE_LENGTHS = [
  [0x84, 0x7f, 0xff, 0xff, 0xff],
  [0x84, 0xff, 0xff, 0xff, 0xff],
  [0x88, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
  [0x83, 0x10, 0x00, 0x00],
  [0x80],
  [0xff, 0xff, 0xff, 0xff, 0x0f],
  [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
  [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80],
];

const mutationArb = (max: number): fc.Arbitrary<Mutation> =>
  fc.oneof(
    {
      weight: 4,
      arbitrary: fc.record({ kind: fc.constant("flip" as const), at: fc.nat(max), bit: fc.nat(7) }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        kind: fc.constant("set" as const),
        at: fc.nat(max),
        value: fc.constantFrom(0, 0x7f, 0x80, 0xff, 0x30, 0x0a, 0xa0, 0x81, 0x82),
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({ kind: fc.constant("truncate" as const), at: fc.nat(max) }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant("delete" as const),
        at: fc.nat(max),
        count: fc.integer({ min: 1, max: 16 }),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant("insert" as const),
        at: fc.nat(max),
        bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }),
      }),
    },
    {
      weight: 3,
      arbitrary: fc.record({
        kind: fc.constant("inflate" as const),
        at: fc.nat(max),
        form: fc.nat(HUGE_LENGTHS.length - 1),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant("nest" as const),
        depth: fc.integer({ min: 1, max: 20_000 }),
        form: fc.nat(3),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant("splice" as const),
        at: fc.nat(max),
        other: fc.nat(64),
        from: fc.nat(max),
      }),
    },
  );

function concat(...parts: ArrayLike<number>[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** `depth` nested containers around `inner`: DER SEQUENCE / context tags, or protobuf sub-messages. */
function nest(inner: Uint8Array, depth: number, form: number): Uint8Array {
  if (form === 0 || form === 1) {
    // Indefinite or huge-length headers, no real content: the cheapest deep nesting to build.
    const head = form === 0 ? [0x30, 0x80] : [0xa0, 0x84, 0x7f, 0xff, 0xff, 0xff];
    const out = new Uint8Array(head.length * depth + inner.length);
    for (let i = 0; i < depth; i++) out.set(head, i * head.length);
    out.set(inner, head.length * depth);
    return out;
  }
  // Correctly sized nesting (bounded so the build stays cheap).
  let cur = inner;
  const levels = Math.min(depth, 400);
  for (let i = 0; i < levels; i++) {
    const len = cur.length;
    const header =
      form === 2
        ? len < 0x80
          ? [0x30, len]
          : [0x30, 0x82, (len >> 8) & 0xff, len & 0xff]
        : [0x0a, ...varint(len)];
    cur = concat(header, cur);
  }
  return cur;
}

function varint(n: number): number[] {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return out;
}

function mutate(base: Uint8Array, mutations: Mutation[], pool: Uint8Array[]): Uint8Array {
  let b: Uint8Array = base.slice();
  for (const m of mutations) {
    const at = b.length === 0 ? 0 : ("at" in m ? m.at : 0) % (b.length + 1);
    switch (m.kind) {
      case "flip":
        if (at < b.length) b[at] = (b[at] as number) ^ (1 << m.bit);
        break;
      case "set":
        if (at < b.length) b[at] = m.value;
        break;
      case "truncate":
        b = b.slice(0, at);
        break;
      case "delete":
        b = concat(b.subarray(0, at), b.subarray(at + m.count));
        break;
      case "insert":
        b = concat(b.subarray(0, at), m.bytes, b.subarray(at));
        break;
      case "inflate": {
        // Replace the length field right after a tag byte with one that claims gigabytes.
        const len = HUGE_LENGTHS[m.form] as number[];
        b = concat(b.subarray(0, at + 1), len, b.subarray(Math.min(b.length, at + 2)));
        break;
      }
      case "nest":
        b = nest(b, m.depth, m.form);
        break;
      case "splice": {
        const other = pool[m.other % pool.length] as Uint8Array;
        b = concat(b.subarray(0, at), other.subarray(m.from % (other.length + 1)));
        break;
      }
    }
  }
  return b;
}

function mutatedArb(bases: Uint8Array[], pool: Uint8Array[]): fc.Arbitrary<Uint8Array> {
  return fc
    .record({
      base: fc.nat(bases.length - 1),
      mutations: fc.array(mutationArb(1024), { minLength: 1, maxLength: 4 }),
    })
    .map(({ base, mutations }) => mutate(bases[base] as Uint8Array, mutations, pool));
}

function textMutatedArb(bases: string[]): fc.Arbitrary<string> {
  const op = fc.oneof(
    fc.record({
      kind: fc.constant("char" as const),
      at: fc.nat(4096),
      ch: fc.string({ unit: "binary", minLength: 1, maxLength: 3 }),
    }),
    fc.record({ kind: fc.constant("cut" as const), at: fc.nat(4096) }),
    fc.record({
      kind: fc.constant("insert" as const),
      at: fc.nat(4096),
      text: fc.constantFrom(
        "\r",
        "\r\n",
        ":",
        "Proc-Type: 4,ENCRYPTED\n",
        "=",
        "==",
        "-----",
        "\u0000",
        "\u00e9",
        "\ud800",
        " ",
        "\t",
      ),
    }),
    fc.record({ kind: fc.constant("dup" as const), at: fc.nat(4096) }),
  );
  return fc
    .record({ base: fc.nat(bases.length - 1), ops: fc.array(op, { minLength: 1, maxLength: 3 }) })
    .map(({ base, ops }) => {
      let s = bases[base] as string;
      for (const o of ops) {
        const at = o.at % (s.length + 1);
        if (o.kind === "char") s = s.slice(0, at) + o.ch + s.slice(at + 1);
        else if (o.kind === "cut") s = s.slice(0, at);
        else if (o.kind === "insert") s = s.slice(0, at) + o.text + s.slice(at);
        else s = s + s.slice(at);
      }
      return s;
    });
}

/** PEM-shaped text around arbitrary or mutated bytes, with real and wrong banners and odd line widths. */
function pemShapedArb(bodies: fc.Arbitrary<Uint8Array>): fc.Arbitrary<string> {
  return fc
    .record({
      type: fc.oneof(fc.constantFrom(...BANNERS), fc.stringMatching(/^[A-Z0-9 ]{1,70}$/)),
      endType: fc.option(fc.constantFrom(...BANNERS), { freq: 8 }),
      body: bodies,
      width: fc.constantFrom(64, 64, 64, 76, 1, 3, 1_000),
      prefix: fc.constantFrom("", "", "\n", "  \n", "junk\n", "\ufeff"),
      suffix: fc.constantFrom("", "", "\n\n", "trailing", "-----END X-----"),
      repeat: fc.integer({ min: 1, max: 3 }),
    })
    .map(({ type, endType, body, width, prefix, suffix, repeat }) => {
      let block = toPem(type, body, width);
      if (endType !== null)
        block = block.replace(`-----END ${type}-----`, `-----END ${endType}-----`);
      return prefix + block.repeat(repeat) + suffix;
    });
}

// ---- the harness ----

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

interface Tally {
  name: string;
  inputs: number;
  accepted: number;
  refused: Map<string, number>;
  maxMs: number;
  runs: number;
  heapDeltaBytes: number;
  seconds: number;
}
const tallies: Tally[] = [];

function newTally(name: string, runs: number): Tally {
  return {
    name,
    runs,
    inputs: 0,
    accepted: 0,
    refused: new Map(),
    maxMs: 0,
    heapDeltaBytes: 0,
    seconds: 0,
  };
}

/** Runs one input; anything thrown that is not a CertError fails the property (and is shrunk). */
function observe(t: Tally, started: number, error: unknown, boundMs = PER_INPUT_MS): void {
  const ms = performance.now() - started;
  t.inputs++;
  if (ms > t.maxMs) t.maxMs = ms;
  if (error === undefined) t.accepted++;
  else if (error instanceof CertError)
    t.refused.set(error.code, (t.refused.get(error.code) ?? 0) + 1);
  else throw new Error(`not a CertError: ${String(error)}`, { cause: error });
  if (ms > boundMs) throw new Error(`one input took ${ms.toFixed(0)} ms (bound ${boundMs} ms)`);
}

function fuzzSync<T>(
  name: string,
  arb: fc.Arbitrary<T>,
  run: (input: T) => unknown,
  runs = RUNS,
  boundMs = PER_INPUT_MS,
): Tally {
  const t = newTally(name, runs);
  gc();
  const heapBefore = process.memoryUsage().heapUsed;
  const began = performance.now();
  fc.assert(
    fc.property(arb, (input) => {
      const started = performance.now();
      let error: unknown;
      try {
        run(input);
      } catch (e) {
        error = e ?? new Error("thrown nullish");
      }
      observe(t, started, error, boundMs);
    }),
    budget(runs),
  );
  t.seconds = (performance.now() - began) / 1000;
  gc();
  t.heapDeltaBytes = process.memoryUsage().heapUsed - heapBefore;
  tallies.push(t);
  return t;
}

/** Every one of a fixed list of inputs (no sampling): huge and deeply nested cases. */
function runCases<T>(
  name: string,
  cases: readonly T[],
  run: (input: T) => unknown,
  boundMs = PER_INPUT_MS,
): Tally {
  const t = newTally(name, cases.length);
  gc();
  const heapBefore = process.memoryUsage().heapUsed;
  const began = performance.now();
  for (const input of cases) {
    const started = performance.now();
    let error: unknown;
    try {
      run(input);
    } catch (e) {
      error = e ?? new Error("thrown nullish");
    }
    observe(t, started, error, boundMs);
  }
  t.seconds = (performance.now() - began) / 1000;
  gc();
  t.heapDeltaBytes = process.memoryUsage().heapUsed - heapBefore;
  tallies.push(t);
  return t;
}

function budget(runs: number): fc.Parameters<unknown> {
  return {
    numRuns: runs,
    endOnFailure: true,
    ...(BUDGET_MS > 0 ? { interruptAfterTimeLimit: BUDGET_MS, markInterruptAsFailure: false } : {}),
  };
}

async function fuzzAsync<T>(
  name: string,
  arb: fc.Arbitrary<T>,
  run: (input: T) => Promise<unknown>,
  runs: number,
) {
  const t = newTally(name, runs);
  gc();
  const heapBefore = process.memoryUsage().heapUsed;
  const began = performance.now();
  await fc.assert(
    fc.asyncProperty(arb, async (input) => {
      const started = performance.now();
      let error: unknown;
      try {
        await run(input);
      } catch (e) {
        error = e ?? new Error("thrown nullish");
      }
      observe(t, started, error);
    }),
    budget(runs),
  );
  t.seconds = (performance.now() - began) / 1000;
  gc();
  t.heapDeltaBytes = process.memoryUsage().heapUsed - heapBefore;
  tallies.push(t);
  return t;
}

function expectBounded(
  t: Tally,
  minInputs = Math.min(MIN_INPUTS, RUNS),
  boundMs = PER_INPUT_MS,
): void {
  expect(t.inputs).toBeGreaterThanOrEqual(minInputs);
  expect(t.maxMs).toBeLessThan(boundMs);
  expect(t.heapDeltaBytes).toBeLessThan(HEAP_SLACK_BYTES);
}

afterAll(() => {
  for (const t of tallies) {
    const refused = [...t.refused.entries()]
      .sort((a, b) => b[1] - a[1])
      .map(([code, n]) => `${code} ${n}`)
      .join(", ");
    process.stdout.write(
      `fuzz ${t.name}: ${t.inputs} inputs${t.inputs < t.runs ? ` (time budget reached before ${t.runs})` : ""} in ${t.seconds.toFixed(1)} s, ${t.accepted} accepted, refused: ${refused || "none"}; ` +
        `slowest ${t.maxMs.toFixed(1)} ms, heap ${(t.heapDeltaBytes / 1048576).toFixed(1)} MiB after gc\n`,
    );
  }
});

// ---- the decoders ----

const anyBytes = fc.uint8Array({ maxLength: 600 });

describe("certificate decoders refuse hostile bytes with CertError only", () => {
  for (const version of [1, 2] as const) {
    it(`decodeCertificate v${version}: random bytes and mutated real certificates`, () => {
      const own = version === 1 ? v1Raw : v2Raw;
      const pool = [...v1Raw, ...v2Raw];
      const arb = fc.oneof(
        { weight: 1, arbitrary: anyBytes },
        { weight: 6, arbitrary: mutatedArb(own, pool) },
        { weight: 1, arbitrary: mutatedArb(version === 1 ? v2Raw : v1Raw, pool) },
      );
      // The unmutated fixtures decode: the harness exercises the real path, not only refusals.
      for (const raw of own) expect(decodeCertificate(raw, version).raw).toEqual(raw);
      const t = fuzzSync(`decodeCertificate v${version}`, arb, (raw) =>
        decodeCertificate(raw, version),
      );
      expectBounded(t);
      expect(t.refused.get("malformed_certificate") ?? 0).toBeGreaterThan(t.inputs / 2);
    });
  }

  it("decodeCertificate: huge and deeply nested inputs stay bounded", () => {
    const cases: Uint8Array[] = [];
    for (const base of [...v1Raw, ...v2Raw]) {
      for (let form = 0; form < 4; form++) cases.push(nest(base, 100_000, form));
      for (const len of HUGE_LENGTHS)
        cases.push(concat([0x30], len, base), concat([0x0a], len, base));
    }
    cases.push(new Uint8Array(4 * 1024 * 1024), new Uint8Array(1024 * 1024).fill(0x30));
    const inputs = cases.flatMap((c) => [[c, 1] as const, [c, 2] as const]);
    const t = runCases("decodeCertificate huge/nested", inputs, ([raw, v]) =>
      decodeCertificate(raw, v),
    );
    expectBounded(t, inputs.length);
    expect(t.accepted).toBe(0);
  });
});

describe("PEM parsers refuse hostile text with CertError only", () => {
  const certBytes = fc.oneof(anyBytes, mutatedArb([...v1Raw, ...v2Raw], [...v1Raw, ...v2Raw]));

  it("parseCertificatesPem", () => {
    const arb = fc.oneof(
      { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 400 }) },
      { weight: 3, arbitrary: textMutatedArb(certPems.map((c) => c.pem)) },
      { weight: 4, arbitrary: pemShapedArb(certBytes) },
    );
    for (const c of certPems) expect(parseCertificatesPem(c.pem)).toHaveLength(1);
    const t = fuzzSync("parseCertificatesPem", arb, (pem) => parseCertificatesPem(pem));
    expectBounded(t);
  });

  it("parseCertificatesPem: oversized text and many blocks", () => {
    const one = certPems[0]?.pem as string;
    const cases = [
      one.repeat(Math.ceil((1 << 20) / one.length) + 1),
      `-----BEGIN NEBULA CERTIFICATE-----\n${"A".repeat(1 << 20)}`,
      `-----BEGIN NEBULA CERTIFICATE-----\n${"AAAA\n".repeat(200_000)}-----END NEBULA CERTIFICATE-----\n`,
      "-----BEGIN NEBULA CERTIFICATE-----\n".repeat(25_000),
      " ".repeat(1 << 20),
      "\n".repeat((1 << 20) + 1),
    ];
    const t = runCases(
      "parseCertificatesPem oversized",
      cases,
      (pem) => parseCertificatesPem(pem),
      OVERSIZED_INPUT_MS,
    );
    expectBounded(t, cases.length, OVERSIZED_INPUT_MS);
    expect(t.accepted).toBe(0);
  });

  it("parsePublicKeyPem", () => {
    const keyBodies = fc.oneof(
      anyBytes,
      fc.uint8Array({ minLength: 32, maxLength: 32 }),
      fc.uint8Array({ minLength: 65, maxLength: 65 }).map((b) => {
        b[0] = 4;
        return b;
      }),
      mutatedArb(pubPems.map(pemBody), pubPems.map(pemBody)),
    );
    const arb = fc.oneof(
      { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 200 }) },
      { weight: 3, arbitrary: textMutatedArb(pubPems) },
      { weight: 4, arbitrary: pemShapedArb(keyBodies) },
    );
    for (const pem of pubPems)
      expect(parsePublicKeyPem(pem).publicKey.length).toBeGreaterThanOrEqual(32);
    const t = fuzzSync("parsePublicKeyPem", arb, (pem) => parsePublicKeyPem(pem));
    expectBounded(t);
  });

  it("parsePrivateKeyPem", () => {
    const bodies = keyPems.map(pemBody);
    const keyBodies = fc.oneof(
      anyBytes,
      fc.uint8Array({ minLength: 32, maxLength: 32 }),
      fc.uint8Array({ minLength: 64, maxLength: 64 }),
      mutatedArb(bodies, bodies),
    );
    const arb = fc.oneof(
      { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 200 }) },
      { weight: 3, arbitrary: textMutatedArb(keyPems) },
      { weight: 4, arbitrary: pemShapedArb(keyBodies) },
    );
    for (const pem of keyPems)
      expect(parsePrivateKeyPem(pem).privateKey.length).toBeGreaterThanOrEqual(32);
    const t = fuzzSync("parsePrivateKeyPem", arb, (pem) => parsePrivateKeyPem(pem));
    expectBounded(t);
  });
});

describe("the encrypted CA key reader refuses hostile input with CertError only", () => {
  it("decryptPrivateKeyPem with small Argon2 parameters", async () => {
    const kp = await generateCaKeyPair("CURVE25519");
    const small = { memoryKiB: 8, iterations: 1, parallelism: 1 };
    const pems = [await encryptPrivateKeyPem("CURVE25519", kp.privateKey, "pw", small)];
    kp.privateKey.fill(0);
    const p = await generateCaKeyPair("P256");
    pems.push(await encryptPrivateKeyPem("P256", p.privateKey, "pw", small));
    p.privateKey.fill(0);
    const bodies = pems.map(pemBody);
    // The Argon2 iteration count is an unbounded varint (decryptPrivateKeyPem has no limit for it,
    // see docs/security.md), so mutations leave the bytes of that one field alone here: a flipped
    // continuation bit there costs seconds of Argon2 per input, which is a cost, not a crash.
    const iterationsAt = (b: Uint8Array) =>
      b.findIndex((x, i) => x === 0x18 && b[i + 1] === 0x01 && b[i + 2] === 0x20);
    const guarded = fc
      .record({
        base: fc.nat(bodies.length - 1),
        mutations: fc.array(mutationArb(256), { minLength: 1, maxLength: 3 }),
      })
      .map(({ base, mutations }) => {
        const b = bodies[base] as Uint8Array;
        const it = iterationsAt(b);
        const out = mutate(b, mutations, bodies);
        // Keep the iteration count at 1 where the field survived the mutation at the same place.
        if (it >= 0 && out[it] === 0x18) out[it + 1] = 0x01;
        return out;
      });
    const banners = [
      "NEBULA ED25519 ENCRYPTED PRIVATE KEY",
      "NEBULA ECDSA P256 ENCRYPTED PRIVATE KEY",
    ];
    const arb = fc.oneof(
      { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 200 }) },
      {
        weight: 6,
        arbitrary: fc
          .record({ body: guarded, banner: fc.constantFrom(...banners) })
          .map(({ body, banner }) => toPem(banner, body)),
      },
      {
        weight: 2,
        arbitrary: fc
          .record({ body: anyBytes, banner: fc.constantFrom(...banners) })
          .map(({ body, banner }) => toPem(banner, body)),
      },
    );
    const opened = await decryptPrivateKeyPem(pems[0] as string, "pw", { maxMemoryKiB: 64 });
    expect(opened.privateKey).toHaveLength(64);
    opened.privateKey.fill(0);
    const runs = Math.max(200, Math.floor(RUNS / 10));
    // Each input that reaches Argon2 costs milliseconds, so this one reader gets a tenth of the runs.
    const t = await fuzzAsync(
      "decryptPrivateKeyPem",
      arb,
      async (pem) => {
        const r = await decryptPrivateKeyPem(pem, "pw", { maxMemoryKiB: 64 });
        r.privateKey.fill(0);
      },
      runs,
    );
    expectBounded(t, 100);
  });
});
