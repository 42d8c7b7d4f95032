/**
 * Property tests for the codecs: decode(encode(x)) = x for random valid details of both versions
 * and curves; random bytes, mutated certificates and random PEM text give CertError and never any
 * other exception; CIDR text round-trips.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { assembleCertificate, type WireDetails } from "./certificate.ts";
import { derIntegerValue } from "./der.ts";
import {
  CertError,
  type CertVersion,
  type Curve,
  certificateToPem,
  decodeCertificate,
  encodeCertificate,
  formatCidr,
  parseCertificatesPem,
  parseCidr,
} from "./index.ts";
import { type Cidr, compareCidr } from "./ip.ts";

const ipv4 = fc
  .tuple(fc.uint8Array({ minLength: 4, maxLength: 4 }), fc.integer({ min: 0, max: 32 }))
  .filter(([b]) => b.some((x) => x !== 0))
  .map(([bytes, prefix]): Cidr => ({ family: 4, bytes, prefix }));

const ipv6 = fc
  .tuple(fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.integer({ min: 0, max: 128 }))
  .filter(
    ([b]) =>
      b.some((x) => x !== 0) &&
      !(b.slice(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff),
  )
  .map(([bytes, prefix]): Cidr => ({ family: 6, bytes, prefix }));

function sortedUnique(list: Cidr[]): Cidr[] {
  const s = [...list].sort(compareCidr);
  return s.filter((c, i) => i === 0 || compareCidr(s[i - 1] as Cidr, c) !== 0);
}

const curveArb = fc.constantFrom<Curve>("CURVE25519", "P256");
const name = fc.string({ unit: "grapheme", minLength: 1, maxLength: 40 });
const time = fc.integer({ min: 0, max: 4_102_444_800 });

function detailsArb(version: CertVersion): fc.Arbitrary<{ d: WireDetails; sig: Uint8Array }> {
  const net = version === 1 ? ipv4 : fc.oneof(ipv4, ipv6);
  return fc
    .record({
      curve: curveArb,
      name,
      isCA: fc.boolean(),
      networks: fc.array(net, { minLength: 1, maxLength: version === 1 ? 1 : 4 }),
      unsafe: fc.array(version === 1 ? ipv4 : fc.oneof(ipv4, ipv6), { maxLength: 4 }),
      groups: fc.array(name, { maxLength: 5 }),
      notBefore: time,
      notAfter: time,
      key: fc.uint8Array({ minLength: 65, maxLength: 65 }),
      issuer: fc.uint8Array({ minLength: 32, maxLength: 32 }),
      sig: fc.uint8Array({ minLength: 1, maxLength: 72 }),
    })
    .map((r) => {
      const publicKey =
        r.curve === "CURVE25519" ? r.key.slice(0, 32) : Uint8Array.from([4, ...r.key.slice(1)]);
      let networks = r.networks;
      let unsafe = r.unsafe;
      if (version === 2) {
        networks = sortedUnique(networks);
        unsafe = sortedUnique(unsafe);
        if (!r.isCA) {
          unsafe = unsafe.filter((u) => networks.some((n) => n.family === u.family));
        }
      }
      const d: WireDetails = {
        name: r.name,
        networks,
        unsafeNetworks: unsafe,
        groups: r.groups,
        isCA: r.isCA,
        notBefore: r.notBefore,
        notAfter: r.notAfter,
        issuer: r.isCA ? new Uint8Array(0) : r.issuer,
        publicKey,
        curve: r.curve,
      };
      return { d, sig: r.sig };
    });
}

function onlyCertErrors(f: () => unknown): void {
  try {
    f();
  } catch (e) {
    if (!(e instanceof CertError)) throw e;
  }
}

describe.each([1, 2] as const)("v%i codec", (version) => {
  it("decode(encode(x)) = x for random valid details", () => {
    fc.assert(
      fc.property(detailsArb(version), ({ d, sig }) => {
        const cert = assembleCertificate(version, d, sig);
        const back = decodeCertificate(cert.raw, version);
        expect(back).toEqual(cert);
        expect(encodeCertificate(back)).toEqual(cert.raw);
        expect(parseCertificatesPem(certificateToPem(cert))[0]).toEqual(cert);
      }),
      { numRuns: 300 },
    );
  });

  it("random bytes give CertError only", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), (bytes) => {
        onlyCertErrors(() => decodeCertificate(bytes, version));
      }),
      { numRuns: 3000 },
    );
  });

  it("mutated valid certificates give CertError only (or a certificate that re-encodes exactly)", () => {
    fc.assert(
      fc.property(
        detailsArb(version),
        fc.array(
          fc.tuple(
            fc.nat(),
            fc.integer({ min: 0, max: 255 }),
            fc.constantFrom("set", "insert", "delete"),
          ),
          {
            minLength: 1,
            maxLength: 4,
          },
        ),
        ({ d, sig }, edits) => {
          const bytes = [...assembleCertificate(version, d, sig).raw];
          for (const [pos, value, op] of edits) {
            const i = bytes.length === 0 ? 0 : pos % bytes.length;
            if (op === "set") bytes[i] = value;
            else if (op === "insert") bytes.splice(i, 0, value);
            else bytes.splice(i, 1);
          }
          const mutated = Uint8Array.from(bytes);
          try {
            const cert = decodeCertificate(mutated, version);
            expect(cert.raw).toEqual(mutated);
            expect(encodeCertificate(cert)).toEqual(mutated);
          } catch (e) {
            if (!(e instanceof CertError)) throw e;
          }
        },
      ),
      { numRuns: 3000 },
    );
  });
});

describe("PEM and CIDR text", () => {
  it("random text gives CertError only", () => {
    const banner = fc.constantFrom("NEBULA CERTIFICATE", "NEBULA CERTIFICATE V2", "X");
    const pemish = fc
      .tuple(banner, fc.base64String({ maxLength: 200 }), fc.string({ maxLength: 5 }))
      .map(([b, body, junk]) => `-----BEGIN ${b}-----\n${body}\n-----END ${b}-----\n${junk}`);
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 300 }), pemish), (text) => {
        onlyCertErrors(() => parseCertificatesPem(text));
      }),
      { numRuns: 3000 },
    );
  });

  it("parseCidr(formatCidr(x)) = x", () => {
    fc.assert(
      fc.property(fc.oneof(ipv4, ipv6), (c) => {
        expect(parseCidr(formatCidr(c))).toEqual(c);
      }),
      { numRuns: 2000 },
    );
  });

  it("random CIDR-like text gives CertError only", () => {
    const chars = fc.string({ unit: fc.constantFrom(..."0123456789abcdef:./%"), maxLength: 50 });
    fc.assert(
      fc.property(fc.oneof(chars, fc.string({ maxLength: 50 })), (t) => {
        onlyCertErrors(() => parseCidr(t));
      }),
      { numRuns: 3000 },
    );
  });
});

describe("DER integers", () => {
  // Reference: the shortest big-endian two's complement, from BigInt arithmetic.
  const reference = (n: number): number[] => {
    for (let len = 1; ; len++) {
      const bits = BigInt(len * 8);
      const min = -(1n << (bits - 1n));
      if (BigInt(n) >= min && BigInt(n) < -min) {
        const u = BigInt.asUintN(len * 8, BigInt(n));
        return Array.from({ length: len }, (_, i) =>
          Number((u >> BigInt((len - 1 - i) * 8)) & 0xffn),
        );
      }
    }
  };

  it("derIntegerValue is the minimal two's complement of every safe integer", () => {
    fc.assert(
      fc.property(fc.maxSafeInteger(), (n) => {
        expect([...derIntegerValue(n)]).toEqual(reference(n));
      }),
      { numRuns: 5000 },
    );
    for (const n of [0, -1, 127, 128, -128, -129, 255, 256, -32769, 2 ** 32])
      expect([...derIntegerValue(n)]).toEqual(reference(n));
  });
});
