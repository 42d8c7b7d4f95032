/**
 * Signing and verification: every CA constraint refused on its own at signing and at
 * verification, tampering, validity windows, blocklists (both P-256 signature forms), high-S
 * signatures, curve and key mismatches, and the three signer implementations.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { assembleCertificate, wireDetailsOf } from "./certificate.ts";
import {
  CaPool,
  type CaSigner,
  CertError,
  type CertificateDetails,
  type CertVersion,
  type Curve,
  certificateToPem,
  decodeCertificate,
  generateCaKeyPair,
  generateHostKeyPair,
  type NebulaCertificate,
  nobleSignerFromPrivateKey,
  parseCertificatesPem,
  signCertificate,
  signerFromPrivateKey,
  verifySignature,
  webCryptoSignerFromPrivateKey,
} from "./index.ts";
import { compareCidr } from "./ip.ts";
import { P256_ORDER } from "./keys.ts";
import { nodeCrypto } from "./native.ts";
import {
  encodeDerSignature,
  normalizeLowS,
  p1363ToLowSDer,
  parseDerSignature,
  swapS,
  verifyMessageSync,
} from "./signer.ts";
import { encodeV1Details } from "./v1.ts";
import { encodeV2Details, v2SigningMessage } from "./v2.ts";

const T0 = new Date("2030-01-01T00:00:00Z");
const DAY = 86_400_000;
const at = (days: number) => new Date(T0.getTime() + days * DAY);

interface Ca {
  cert: NebulaCertificate;
  signer: CaSigner;
}

async function makeCa(
  curve: Curve,
  version: CertVersion,
  limits: Partial<Pick<CertificateDetails, "groups" | "networks" | "unsafeNetworks">> = {},
): Promise<Ca> {
  const keys = await generateCaKeyPair(curve);
  const signer = await signerFromPrivateKey(curve, keys.privateKey);
  const cert = await signCertificate(
    {
      version,
      name: `ca-${curve}-v${version}`,
      networks: limits.networks ?? [],
      unsafeNetworks: limits.unsafeNetworks ?? [],
      groups: limits.groups ?? [],
      isCA: true,
      notBefore: T0,
      notAfter: at(365),
      publicKey: keys.publicKey,
      curve,
    },
    null,
    signer,
  );
  return { cert, signer };
}

async function hostDetails(
  curve: Curve,
  version: CertVersion,
  over: Partial<Omit<CertificateDetails, "issuer">> = {},
): Promise<Omit<CertificateDetails, "issuer">> {
  const keys = await generateHostKeyPair(curve);
  return {
    version,
    name: "host-1",
    networks: ["10.42.1.7/16"],
    unsafeNetworks: [],
    groups: ["servers"],
    isCA: false,
    notBefore: at(1),
    notAfter: at(30),
    publicKey: keys.publicKey,
    curve,
    ...over,
  };
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  if (!(e instanceof CertError)) throw new Error(`expected a CertError, got ${String(e)}`);
  return e.code;
}

describe.each([
  ["CURVE25519", 1],
  ["CURVE25519", 2],
  ["P256", 1],
  ["P256", 2],
] as const)("%s v%i", (curve, version) => {
  let ca: Ca;
  let pool: CaPool;
  beforeAll(async () => {
    ca = await makeCa(curve, version, {
      groups: ["servers", "db"],
      networks: ["10.42.0.0/16"],
      unsafeNetworks: ["192.0.2.0/24"],
    });
    pool = CaPool.fromPem(certificateToPem(ca.cert));
  });

  it("signs a host certificate that decodes to the same thing and verifies", async () => {
    const d = await hostDetails(curve, version, { unsafeNetworks: ["192.0.2.0/25"] });
    const cert = await signCertificate(d, ca.cert, ca.signer);
    expect(cert.issuer).toBe(ca.cert.fingerprint);
    const back = decodeCertificate(cert.raw, version);
    expect(back).toEqual(cert);
    await expect(pool.verify(cert, { now: at(2) })).resolves.toBe(pool.get(ca.cert.fingerprint));
    expect(await verifySignature(cert, ca.cert.publicKey)).toBe(true);
  });

  it("refuses a group the CA does not list (signing and verifying)", async () => {
    const d = await hostDetails(curve, version, { groups: ["servers", "laptops"] });
    expect(await codeOf(signCertificate(d, ca.cert, ca.signer))).toBe("group_not_allowed");
    const forged = await forge(d, ca);
    expect(await codeOf(pool.verify(forged, { now: at(2) }))).toBe("group_not_allowed");
  });

  it("refuses a network outside the CA's networks", async () => {
    const d = await hostDetails(curve, version, { networks: ["10.43.1.7/16"] });
    expect(await codeOf(signCertificate(d, ca.cert, ca.signer))).toBe("network_not_allowed");
    expect(await codeOf(pool.verify(await forge(d, ca), { now: at(2) }))).toBe(
      "network_not_allowed",
    );
  });

  it("refuses a network wider than the CA's", async () => {
    const d = await hostDetails(curve, version, { networks: ["10.42.1.7/8"] });
    expect(await codeOf(signCertificate(d, ca.cert, ca.signer))).toBe("network_not_allowed");
  });

  it("refuses an unsafe network outside the CA's unsafe networks", async () => {
    const d = await hostDetails(curve, version, { unsafeNetworks: ["198.51.100.0/24"] });
    expect(await codeOf(signCertificate(d, ca.cert, ca.signer))).toBe("unsafe_network_not_allowed");
    expect(await codeOf(pool.verify(await forge(d, ca), { now: at(2) }))).toBe(
      "unsafe_network_not_allowed",
    );
  });

  it("refuses a certificate that would outlive its CA", async () => {
    const d = await hostDetails(curve, version, { notAfter: at(366) });
    expect(await codeOf(signCertificate(d, ca.cert, ca.signer))).toBe("validity_exceeds_ca");
    expect(await codeOf(pool.verify(await forge(d, ca), { now: at(2) }))).toBe(
      "validity_exceeds_ca",
    );
  });

  it("refuses a certificate valid before its CA", async () => {
    const d = await hostDetails(curve, version, { notBefore: at(-1) });
    expect(await codeOf(signCertificate(d, ca.cert, ca.signer))).toBe("validity_exceeds_ca");
  });

  it("refuses a host key on another curve than the CA", async () => {
    const other: Curve = curve === "P256" ? "CURVE25519" : "P256";
    const d = await hostDetails(other, version);
    expect(await codeOf(signCertificate(d, ca.cert, ca.signer))).toBe("wrong_curve");
  });

  it("refuses a signer whose key is not the CA's", async () => {
    const stranger = await makeCa(curve, version);
    const d = await hostDetails(curve, version);
    expect(await codeOf(signCertificate(d, ca.cert, stranger.signer))).toBe("key_mismatch");
  });

  it("refuses to sign a CA with a CA, and a host without a CA", async () => {
    const d = await hostDetails(curve, version);
    expect(await codeOf(signCertificate({ ...d, isCA: true }, ca.cert, ca.signer))).toBe(
      "invalid_details",
    );
    expect(await codeOf(signCertificate(d, null, ca.signer))).toBe("invalid_details");
  });

  it("refuses a host certificate without a network", async () => {
    const d = await hostDetails(curve, version, { networks: [] });
    expect(await codeOf(signCertificate(d, ca.cert, ca.signer))).toBe("invalid_details");
  });

  it("refuses a tampered signature and tampered details", async () => {
    const cert = await signCertificate(await hostDetails(curve, version), ca.cert, ca.signer);
    const sig = cert.signature.slice();
    sig[sig.length - 5] = (sig[sig.length - 5] as number) ^ 1;
    const badSig = { ...cert, signature: sig };
    expect(await verifySignature(badSig, ca.cert.publicKey)).toBe(false);
    expect(await codeOf(pool.verify(badSig, { now: at(2) }))).toBe("bad_signature");
    const renamed = { ...cert, name: "someone-else" };
    expect(await codeOf(pool.verify(renamed, { now: at(2) }))).toBe("bad_signature");
  });

  it("refuses expired and not-yet-valid certificates, and an expired CA", async () => {
    const cert = await signCertificate(await hostDetails(curve, version), ca.cert, ca.signer);
    expect(await codeOf(pool.verify(cert, { now: at(0.5) }))).toBe("not_yet_valid");
    expect(await codeOf(pool.verify(cert, { now: at(31) }))).toBe("expired");
    // The window is inclusive at both ends, as Go's Expired() is.
    await expect(pool.verify(cert, { now: at(1) })).resolves.toBeDefined();
    await expect(pool.verify(cert, { now: at(30) })).resolves.toBeDefined();
    const forged = await forge(await hostDetails(curve, version, { notAfter: at(400) }), ca);
    expect(await codeOf(pool.verify(forged, { now: at(370) }))).toBe("ca_expired");
    expect(await codeOf(pool.verify(cert, { now: at(-1) }))).toBe("ca_not_yet_valid");
  });

  it("refuses blocklisted fingerprints", async () => {
    const cert = await signCertificate(await hostDetails(curve, version), ca.cert, ca.signer);
    expect(await codeOf(pool.verify(cert, { now: at(2), blocklist: [cert.fingerprint] }))).toBe(
      "blocked",
    );
    await expect(
      pool.verify(cert, { now: at(2), blocklist: ["00".repeat(32)] }),
    ).resolves.toBeDefined();
  });

  it("refuses a certificate whose CA is not in the pool", async () => {
    const other = await makeCa(curve, version);
    const cert = await signCertificate(await hostDetails(curve, version), other.cert, other.signer);
    expect(await codeOf(pool.verify(cert, { now: at(2) }))).toBe("ca_not_found");
  });

  it("the noble signer makes certificates that verify too", async () => {
    const keys = await generateCaKeyPair(curve);
    const noble = nobleSignerFromPrivateKey(curve, keys.privateKey);
    const native = await signerFromPrivateKey(curve, keys.privateKey);
    expect(noble.publicKey).toEqual(native.publicKey);
    const self = await signCertificate(
      {
        version,
        name: "noble-ca",
        networks: [],
        unsafeNetworks: [],
        groups: [],
        isCA: true,
        notBefore: T0,
        notAfter: at(365),
        publicKey: keys.publicKey,
        curve,
      },
      null,
      noble,
    );
    const p = new CaPool();
    p.add(self);
    const host = await signCertificate(await hostDetails(curve, version), self, noble);
    await expect(p.verify(host, { now: at(2) })).resolves.toBe(self);
  });
});

/** A certificate signed without the constraint checks, as a careless or hostile CA would. */
async function forge(d: Omit<CertificateDetails, "issuer">, ca: Ca): Promise<NebulaCertificate> {
  const wire = wireDetailsOf({ ...d, issuer: ca.cert.fingerprint });
  if (d.version === 2) {
    wire.networks.sort(compareCidr);
    wire.unsafeNetworks.sort(compareCidr);
  }
  const message =
    d.version === 1
      ? encodeV1Details(wire)
      : v2SigningMessage(encodeV2Details(wire), wire.curve, wire.publicKey);
  let sig = await ca.signer.sign(message);
  if (d.curve === "P256") sig = normalizeLowS(sig);
  return assembleCertificate(d.version, wire, sig);
}

describe("signer implementations", () => {
  const MESSAGES = Array.from({ length: 48 }, (_, i) =>
    crypto.getRandomValues(new Uint8Array(100 + i)),
  );

  it("uses node:crypto where the runtime has it", () => {
    expect(nodeCrypto).toBeDefined();
  });

  it.each(["CURVE25519", "P256"] as const)(
    "%s: node:crypto, WebCrypto and noble signatures all verify; P-256 ones are low-S DER",
    async (curve) => {
      const keys = await generateCaKeyPair(curve);
      const signers = {
        default: await signerFromPrivateKey(curve, keys.privateKey),
        webcrypto: await webCryptoSignerFromPrivateKey(curve, keys.privateKey),
        noble: nobleSignerFromPrivateKey(curve, keys.privateKey),
      };
      for (const [name, signer] of Object.entries(signers)) {
        if (!signer) throw new Error(`${name}: no signer`);
        expect(signer.publicKey, name).toEqual(keys.publicKey);
        for (const m of MESSAGES) {
          const sig = await signer.sign(m);
          expect(Object.getPrototypeOf(sig), name).toBe(Uint8Array.prototype);
          expect(verifyMessageSync(curve, keys.publicKey, m, sig), name).toBe(true);
          if (curve === "P256")
            expect(parseDerSignature(sig).s <= P256_ORDER >> 1n, name).toBe(true);
          const other = m.slice();
          other[0] = (other[0] as number) ^ 1;
          expect(verifyMessageSync(curve, keys.publicKey, other, sig), name).toBe(false);
        }
      }
    },
  );

  it("r||s to low-S DER agrees with the general DER encoder for every shape of r and s", () => {
    const shapes = (): Uint8Array[] => {
      const rnd = () => crypto.getRandomValues(new Uint8Array(32));
      const topSet = rnd();
      topSet[0] = (topSet[0] as number) | 0x80;
      const topClear = rnd();
      topClear[0] = (topClear[0] as number) & 0x7f;
      const leadingZeros = rnd();
      leadingZeros.fill(0, 0, 3);
      const zeroThenHigh = rnd();
      zeroThenHigh[0] = 0;
      zeroThenHigh[1] = (zeroThenHigh[1] as number) | 0x80;
      const one = new Uint8Array(32);
      one[31] = 1;
      return [topSet, topClear, leadingZeros, zeroThenHigh, one, new Uint8Array(32)];
    };
    const big = (b: Uint8Array) => BigInt(`0x${Buffer.from(b).toString("hex")}`);
    for (const r of shapes()) {
      for (const s of shapes()) {
        const sv = big(s) % P256_ORDER;
        const der = p1363ToLowSDer(Uint8Array.from([...r, ...s]));
        const low = sv > P256_ORDER >> 1n ? P256_ORDER - sv : sv;
        if (big(s) < P256_ORDER) expect(der).toEqual(encodeDerSignature(big(r), low));
        const back = parseDerSignature(der);
        expect(back.r).toBe(big(r));
        expect(back.s <= P256_ORDER >> 1n).toBe(true);
      }
    }
    expect(() => p1363ToLowSDer(new Uint8Array(63))).toThrow(CertError);
  });

  it("refuses an Ed25519 CA key whose halves do not match, and P-256 scalars out of range, on every path", async () => {
    const k = await generateCaKeyPair("CURVE25519");
    const halves = k.privateKey.slice();
    halves[40] = (halves[40] as number) ^ 1;
    const order = Uint8Array.from(Buffer.from(P256_ORDER.toString(16).padStart(64, "0"), "hex"));
    const refusals: [Curve, Uint8Array][] = [
      ["CURVE25519", halves],
      ["P256", new Uint8Array(32)],
      ["P256", order],
      ["P256", new Uint8Array(32).fill(0xff)],
    ];
    for (const [curve, key] of refusals) {
      const paths = {
        default: () => signerFromPrivateKey(curve, key),
        webcrypto: () => webCryptoSignerFromPrivateKey(curve, key),
        noble: async () => nobleSignerFromPrivateKey(curve, key),
      };
      for (const [name, make] of Object.entries(paths)) {
        const e = await make().then(
          () => null,
          (err: unknown) => err,
        );
        expect(e, `${curve} ${name}`).toBeInstanceOf(CertError);
        expect((e as CertError).code, `${curve} ${name}`).toBe("invalid_private_key");
      }
    }
  });

  it("derives the P-256 public key natively for the smallest and largest scalars", async () => {
    const scalars = [1n, 2n, P256_ORDER - 1n].map((n) =>
      Uint8Array.from(Buffer.from(n.toString(16).padStart(64, "0"), "hex")),
    );
    for (const scalar of scalars) {
      const native = await signerFromPrivateKey("P256", scalar);
      const noble = nobleSignerFromPrivateKey("P256", scalar);
      expect(native.publicKey).toEqual(noble.publicKey);
      const m = new Uint8Array([1, 2, 3]);
      expect(verifyMessageSync("P256", noble.publicKey, m, await native.sign(m))).toBe(true);
    }
  });

  it("refuses a private key of the wrong length before any runtime sees it", async () => {
    for (const curve of ["CURVE25519", "P256"] as const) {
      await expect(signerFromPrivateKey(curve, new Uint8Array(31))).rejects.toBeInstanceOf(
        CertError,
      );
      await expect(webCryptoSignerFromPrivateKey(curve, new Uint8Array(31))).rejects.toBeInstanceOf(
        CertError,
      );
    }
  });
});

describe("P-256 signature forms", () => {
  it("accepts a high-S signature and blocks either fingerprint form", async () => {
    for (const version of [1, 2] as const) {
      const ca = await makeCa("P256", version);
      const pool = new CaPool();
      pool.add(ca.cert);
      const low = await signCertificate(await hostDetails("P256", version), ca.cert, ca.signer);
      const { r, s } = parseDerSignature(low.signature);
      expect(s <= P256_ORDER >> 1n).toBe(true);
      const highSig = encodeDerSignature(r, P256_ORDER - s);
      expect(swapS(low.signature)).toEqual(highSig);
      const high = assembleCertificate(version, wireDetailsOf(low), highSig);
      expect(high.fingerprint).not.toBe(low.fingerprint);
      // Both forms verify, as Go's VerifyASN1 accepts both.
      await expect(pool.verify(high, { now: at(2) })).resolves.toBe(ca.cert);
      expect(decodeCertificate(high.raw, version).fingerprint).toBe(high.fingerprint);
      // Blocking either form blocks both.
      expect(await codeOf(pool.verify(high, { now: at(2), blocklist: [low.fingerprint] }))).toBe(
        "blocked",
      );
      expect(await codeOf(pool.verify(low, { now: at(2), blocklist: [high.fingerprint] }))).toBe(
        "blocked",
      );
    }
  });

  it("normalizes a high-S signature from a custom signer to low-S", async () => {
    const ca = await makeCa("P256", 2);
    const highSigner: CaSigner = {
      ...ca.signer,
      sign: async (m) => {
        const { r, s } = parseDerSignature(await ca.signer.sign(m));
        return encodeDerSignature(r, P256_ORDER - s);
      },
    };
    const cert = await signCertificate(await hostDetails("P256", 2), ca.cert, highSigner);
    expect(parseDerSignature(cert.signature).s <= P256_ORDER >> 1n).toBe(true);
    expect(await verifySignature(cert, ca.cert.publicKey)).toBe(true);
  });
});

describe("version rules", () => {
  it("v1 refuses IPv6 and more than one network for a host", async () => {
    const ca = await makeCa("CURVE25519", 1);
    const v6 = await hostDetails("CURVE25519", 1, { networks: ["fd00::7/64"] });
    expect(await codeOf(signCertificate(v6, ca.cert, ca.signer))).toBe("invalid_network");
    const two = await hostDetails("CURVE25519", 1, { networks: ["10.1.0.1/16", "10.2.0.1/16"] });
    expect(await codeOf(signCertificate(two, ca.cert, ca.signer))).toBe("invalid_network");
  });

  it("v2 holds IPv4 and IPv6, sorted as Nebula sorts, and refuses duplicates", async () => {
    const ca = await makeCa("CURVE25519", 2);
    const d = await hostDetails("CURVE25519", 2, {
      networks: ["fd00:44::34/64", "10.44.3.4/16"],
      unsafeNetworks: ["fd00:99::/64", "192.0.2.0/24"],
    });
    const cert = await signCertificate(d, ca.cert, ca.signer);
    expect(cert.networks).toEqual(["10.44.3.4/16", "fd00:44::34/64"]);
    expect(cert.unsafeNetworks).toEqual(["192.0.2.0/24", "fd00:99::/64"]);
    const dup = await hostDetails("CURVE25519", 2, { networks: ["10.1.0.1/16", "10.1.0.1/16"] });
    expect(await codeOf(signCertificate(dup, ca.cert, ca.signer))).toBe("invalid_network");
    const v6unsafe = await hostDetails("CURVE25519", 2, { unsafeNetworks: ["fd00:99::/64"] });
    expect(await codeOf(signCertificate(v6unsafe, ca.cert, ca.signer))).toBe("invalid_network");
    const empty = await hostDetails("CURVE25519", 2, { name: "" });
    expect(await codeOf(signCertificate(empty, ca.cert, ca.signer))).toBe("invalid_details");
  });

  it("refuses the zero address and small-order X25519 keys", async () => {
    const ca = await makeCa("CURVE25519", 2);
    const zero = await hostDetails("CURVE25519", 2, { networks: ["0.0.0.0/8"] });
    expect(await codeOf(signCertificate(zero, ca.cert, ca.signer))).toBe("invalid_network");
    const weak = await hostDetails("CURVE25519", 2, { publicKey: new Uint8Array(32) });
    expect(await codeOf(signCertificate(weak, ca.cert, ca.signer))).toBe("invalid_public_key");
  });

  it("a pool refuses non-CA certificates and CAs whose self-signature fails", async () => {
    const ca = await makeCa("CURVE25519", 2);
    const host = await signCertificate(await hostDetails("CURVE25519", 2), ca.cert, ca.signer);
    expect(() => CaPool.fromPem(certificateToPem(host))).toThrow(
      expect.objectContaining({ code: "not_a_ca" }),
    );
    const sig = ca.cert.signature.slice();
    sig[0] = (sig[0] as number) ^ 0x80;
    const broken = assembleCertificate(2, wireDetailsOf(ca.cert), sig);
    expect(() => new CaPool().add(broken)).toThrow(
      expect.objectContaining({ code: "ca_not_self_signed" }),
    );
    // A bundle with both CAs in it keeps both.
    const other = await makeCa("P256", 1);
    const bundle = certificateToPem(ca.cert) + certificateToPem(other.cert);
    expect(parseCertificatesPem(bundle).map((c) => c.version)).toEqual([2, 1]);
    expect(CaPool.fromPem(bundle).list()).toHaveLength(2);
  });
});
