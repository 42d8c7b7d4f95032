/**
 * Keys at the boundary: malformed public keys refused for the right reason (length, off-curve,
 * compressed, small-order X25519, wrong banner, private key sent by mistake), private keys and
 * their PEM, and the encrypted CA key format round trip.
 */
import { x25519 } from "@noble/curves/ed25519.js";
import { p256 } from "@noble/curves/nist.js";
import { describe, expect, it } from "vitest";
import {
  CertError,
  decryptPrivateKeyPem,
  encryptPrivateKeyPem,
  generateCaKeyPair,
  generateHostKeyPair,
  isEncryptedPrivateKeyPem,
  parsePrivateKeyPem,
  parsePublicKeyPem,
  privateKeyToPem,
  publicKeyToPem,
} from "./index.ts";
import { isX25519SmallOrder } from "./keys.ts";
import { bytesToBase64, encodePem } from "./pem.ts";

function codeOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    if (e instanceof CertError) return e.code;
    throw e;
  }
  throw new Error("expected a CertError");
}

const x25519Pem = (b: Uint8Array) => encodePem("NEBULA X25519 PUBLIC KEY", b);
const p256Pem = (b: Uint8Array) => encodePem("NEBULA P256 PUBLIC KEY", b);
const hexBytes = (h: string) => Uint8Array.from(Buffer.from(h, "hex"));

// Small-order X25519 u-coordinates (little-endian), canonical and not (u + p).
const SMALL_ORDER = [
  "0000000000000000000000000000000000000000000000000000000000000000",
  "0100000000000000000000000000000000000000000000000000000000000000",
  "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
  "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
  "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
];
// With the top bit set: RFC 7748 (and Go, and noble) ignore that bit, so these are ordinary keys.
const TOP_BIT_SET = [
  "cdeb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b880",
  "4c9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f11d7",
  "d9ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
];

describe("public keys", () => {
  it("round-trips generated host keys of both curves through PEM", async () => {
    for (const curve of ["CURVE25519", "P256"] as const) {
      const k = await generateHostKeyPair(curve);
      const pem = publicKeyToPem(curve, k.publicKey);
      expect(parsePublicKeyPem(pem)).toEqual({ curve, publicKey: k.publicKey });
      expect(parsePrivateKeyPem(privateKeyToPem(curve, k.privateKey, false))).toEqual({
        curve,
        privateKey: k.privateKey,
        isCA: false,
      });
    }
  });

  it("refuses wrong lengths", () => {
    expect(codeOf(() => parsePublicKeyPem(x25519Pem(new Uint8Array(31).fill(9))))).toBe(
      "invalid_public_key",
    );
    expect(codeOf(() => parsePublicKeyPem(x25519Pem(new Uint8Array(33).fill(9))))).toBe(
      "invalid_public_key",
    );
    expect(codeOf(() => parsePublicKeyPem(p256Pem(new Uint8Array(64).fill(4))))).toBe(
      "invalid_public_key",
    );
  });

  it("refuses a P-256 point not on the curve", async () => {
    const k = await generateHostKeyPair("P256");
    const off = k.publicKey.slice();
    off[64] = (off[64] as number) ^ 1;
    expect(codeOf(() => parsePublicKeyPem(p256Pem(off)))).toBe("invalid_public_key");
    const tooBig = new Uint8Array(65).fill(0xff);
    tooBig[0] = 4;
    expect(codeOf(() => parsePublicKeyPem(p256Pem(tooBig)))).toBe("invalid_public_key");
  });

  it("refuses a compressed P-256 point", async () => {
    const k = await generateHostKeyPair("P256");
    const compressed = p256.Point.fromBytes(k.publicKey).toBytes(true);
    expect(compressed).toHaveLength(33);
    expect(() => parsePublicKeyPem(p256Pem(compressed))).toThrow(/compressed/);
  });

  it("refuses every small-order X25519 point, and only those", () => {
    for (const h of SMALL_ORDER) {
      const b = hexBytes(h);
      expect(isX25519SmallOrder(b), h).toBe(true);
      // The list is right: each gives an all-zero shared secret.
      expect(() => x25519.getSharedSecret(x25519.utils.randomSecretKey(), b)).toThrow();
      expect(codeOf(() => parsePublicKeyPem(x25519Pem(b)))).toBe("invalid_public_key");
    }
    for (const h of TOP_BIT_SET) {
      const b = hexBytes(h);
      expect(isX25519SmallOrder(b), h).toBe(false);
      expect(x25519.getSharedSecret(x25519.utils.randomSecretKey(), b)).toHaveLength(32);
    }
    // Top bit set on a small-order point is still small order.
    const high = hexBytes(SMALL_ORDER[2] as string);
    high[31] = (high[31] as number) | 0x80;
    expect(isX25519SmallOrder(high)).toBe(true);
    for (let i = 0; i < 50; i++) {
      expect(isX25519SmallOrder(x25519.getPublicKey(x25519.utils.randomSecretKey()))).toBe(false);
    }
  });

  it("refuses the wrong banner, a private key, and several blocks", async () => {
    const k = await generateHostKeyPair("CURVE25519");
    expect(
      codeOf(() => parsePublicKeyPem(encodePem("NEBULA ED25519 PUBLIC KEY", k.publicKey))),
    ).toBe("invalid_public_key");
    expect(() => parsePublicKeyPem(privateKeyToPem("CURVE25519", k.privateKey, false))).toThrow(
      /PRIVATE key/,
    );
    expect(codeOf(() => parsePublicKeyPem(encodePem("CERTIFICATE", k.publicKey)))).toBe(
      "invalid_public_key",
    );
    const one = x25519Pem(k.publicKey);
    expect(codeOf(() => parsePublicKeyPem(one + one))).toBe("malformed_pem");
    expect(codeOf(() => parsePublicKeyPem(`hello\n${one}`))).toBe("malformed_pem");
    expect(codeOf(() => parsePublicKeyPem(one.replace("-----END", "!!-----END")))).toBe(
      "malformed_pem",
    );
    expect(codeOf(() => parsePublicKeyPem(""))).toBe("malformed_pem");
    const b64 = bytesToBase64(k.publicKey);
    // Non-canonical base64 (a last character with spare bits set) is refused.
    const last = b64[b64.length - 2] as string;
    const sloppy = `${b64.slice(0, -2)}${last === "A" ? "B" : String.fromCharCode(last.charCodeAt(0) + 1)}=`;
    expect(
      codeOf(() =>
        parsePublicKeyPem(
          `-----BEGIN NEBULA X25519 PUBLIC KEY-----\n${sloppy}\n-----END NEBULA X25519 PUBLIC KEY-----\n`,
        ),
      ),
    ).toBe("malformed_pem");
  });
});

describe("private keys", () => {
  it("round-trips CA keys of both curves", async () => {
    for (const curve of ["CURVE25519", "P256"] as const) {
      const k = await generateCaKeyPair(curve);
      expect(k.privateKey).toHaveLength(curve === "CURVE25519" ? 64 : 32);
      const parsed = parsePrivateKeyPem(privateKeyToPem(curve, k.privateKey, true));
      expect(parsed).toEqual({ curve, privateKey: k.privateKey, isCA: true });
    }
  });

  it("refuses an Ed25519 CA key whose halves do not match, and out-of-range P-256 scalars", async () => {
    const k = await generateCaKeyPair("CURVE25519");
    const bad = k.privateKey.slice();
    bad[40] = (bad[40] as number) ^ 1;
    expect(codeOf(() => parsePrivateKeyPem(encodePem("NEBULA ED25519 PRIVATE KEY", bad)))).toBe(
      "invalid_private_key",
    );
    expect(
      codeOf(() =>
        parsePrivateKeyPem(encodePem("NEBULA ECDSA P256 PRIVATE KEY", new Uint8Array(32))),
      ),
    ).toBe("invalid_private_key");
    expect(
      codeOf(() =>
        parsePrivateKeyPem(
          encodePem("NEBULA ECDSA P256 PRIVATE KEY", new Uint8Array(32).fill(0xff)),
        ),
      ),
    ).toBe("invalid_private_key");
  });

  it("says an encrypted key needs its passphrase", async () => {
    const k = await generateCaKeyPair("CURVE25519");
    const pem = await encryptPrivateKeyPem("CURVE25519", k.privateKey, "pw", {
      memoryKiB: 64,
      iterations: 1,
      parallelism: 1,
    });
    expect(isEncryptedPrivateKeyPem(pem)).toBe(true);
    expect(() => parsePrivateKeyPem(pem)).toThrow(/encrypted/);
  });
});

describe("encrypted CA keys", () => {
  const small = { memoryKiB: 256, iterations: 2, parallelism: 2 };

  it("round-trips both curves and refuses the wrong passphrase", async () => {
    for (const curve of ["CURVE25519", "P256"] as const) {
      const k = await generateCaKeyPair(curve);
      const pem = await encryptPrivateKeyPem(curve, k.privateKey, "correct-horse", small);
      expect(pem).toMatch(
        curve === "CURVE25519" ? /NEBULA ED25519 ENCRYPTED/ : /NEBULA ECDSA P256 ENCRYPTED/,
      );
      const opened = await decryptPrivateKeyPem(pem, "correct-horse");
      expect(opened).toEqual({ curve, privateKey: k.privateKey, isCA: true });
      await expect(decryptPrivateKeyPem(pem, "battery-staple")).rejects.toMatchObject({
        code: "wrong_passphrase",
      });
      // The passphrase may be bytes.
      await expect(
        decryptPrivateKeyPem(pem, new TextEncoder().encode("correct-horse")),
      ).resolves.toEqual(opened);
    }
  });

  it("refuses an altered ciphertext, and memory beyond the limit", async () => {
    const k = await generateCaKeyPair("CURVE25519");
    const pem = await encryptPrivateKeyPem("CURVE25519", k.privateKey, "pw", small);
    const body = pem.split("\n").slice(1, -2).join("");
    const bytes = Uint8Array.from(atob(body), (c) => c.charCodeAt(0));
    bytes[bytes.length - 3] = (bytes[bytes.length - 3] as number) ^ 1;
    const altered = encodePem("NEBULA ED25519 ENCRYPTED PRIVATE KEY", bytes);
    await expect(decryptPrivateKeyPem(altered, "pw")).rejects.toMatchObject({
      code: "wrong_passphrase",
    });
    await expect(decryptPrivateKeyPem(pem, "pw", { maxMemoryKiB: 128 })).rejects.toMatchObject({
      code: "unsupported_encryption",
    });
    // work (memory x passes) is bounded too, so a key file cannot ask for days of hashing
    await expect(
      decryptPrivateKeyPem(pem, "pw", { maxWorkKiB: small.memoryKiB * small.iterations - 1 }),
    ).rejects.toMatchObject({ code: "unsupported_encryption", message: /Argon2 work/ });
    await expect(
      decryptPrivateKeyPem(pem, "pw", { maxWorkKiB: small.memoryKiB * small.iterations }),
    ).resolves.toMatchObject({ curve: "CURVE25519" });
    await expect(
      decryptPrivateKeyPem(
        encodePem("NEBULA ED25519 ENCRYPTED PRIVATE KEY", bytes.subarray(0, 20)),
        "pw",
      ),
    ).rejects.toBeInstanceOf(CertError);
  });
});
