/**
 * Nebula key pairs and their PEM forms. Host keys (X25519, P-256 ECDH) are what certificates carry;
 * CA keys (Ed25519 as seed||public, ECDSA P-256 scalar) sign them. Public keys from outside are
 * checked strictly and cheaply enough to run on every signing: length, uncompressed P-256 point on
 * the curve, X25519 small-order points refused.
 */
import { ed25519, x25519 } from "@noble/curves/ed25519.js";
import { p256 } from "@noble/curves/nist.js";
import { bytesEqual } from "./der.ts";
import { CertError } from "./errors.ts";
import { encodePem, parseSinglePemBlock } from "./pem.ts";
import type { Curve } from "./types.ts";

export interface KeyPair {
  curve: Curve;
  publicKey: Uint8Array;
  privateKey: Uint8Array;
}

const X25519_PUBLIC_BANNER = "NEBULA X25519 PUBLIC KEY";
const X25519_PRIVATE_BANNER = "NEBULA X25519 PRIVATE KEY";
const P256_PUBLIC_BANNER = "NEBULA P256 PUBLIC KEY";
const P256_PRIVATE_BANNER = "NEBULA P256 PRIVATE KEY";
const ED25519_PRIVATE_BANNER = "NEBULA ED25519 PRIVATE KEY";
const ECDSA_P256_PRIVATE_BANNER = "NEBULA ECDSA P256 PRIVATE KEY";
const ED25519_PUBLIC_BANNER = "NEBULA ED25519 PUBLIC KEY";
const ECDSA_P256_PUBLIC_BANNER = "NEBULA ECDSA P256 PUBLIC KEY";
export const ENCRYPTED_ED25519_BANNER = "NEBULA ED25519 ENCRYPTED PRIVATE KEY";
export const ENCRYPTED_ECDSA_P256_BANNER = "NEBULA ECDSA P256 ENCRYPTED PRIVATE KEY";

// P-256 field prime, curve constant b (a = -3) and group order.
const P = 0xffffffff00000001000000000000000000000000ffffffffffffffffffffffffn;
const B = 0x5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604bn;
export const P256_ORDER = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;

// X25519 small-order points (orders 1, 2, 4, 8) as little-endian u-coordinates with the ignored top
// bit clear: 0, 1, the two order-8 points, p-1, and p, p+1 (non-canonical 0 and 1). After the top
// bit is masked these seven byte strings are exactly the keys whose shared secret is all zeros.
const X25519_SMALL_ORDER: Uint8Array[] = [
  "0000000000000000000000000000000000000000000000000000000000000000",
  "0100000000000000000000000000000000000000000000000000000000000000",
  "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
  "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
  "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
].map((h) => Uint8Array.from(h.match(/../g) ?? [], (b) => Number.parseInt(b, 16)));

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/** Big-endian bytes as a bigint (through hex: far faster than shifting a bigint per byte). */
export function bytesToBigInt(b: Uint8Array): bigint {
  if (b.length === 0) return 0n;
  let h = "0x";
  for (let i = 0; i < b.length; i++) h += HEX[b[i] as number];
  return BigInt(h);
}

function invalidKey(message: string): CertError {
  return new CertError("invalid_public_key", message);
}

/** True when `point` is a 65-byte uncompressed point on P-256 (not infinity). */
export function isP256Point(point: Uint8Array): boolean {
  if (point.length !== 65 || point[0] !== 4) return false;
  const x = bytesToBigInt(point.subarray(1, 33));
  const y = bytesToBigInt(point.subarray(33, 65));
  if (x >= P || y >= P) return false;
  // y^2 = x^3 - 3x + b (mod p), with a single reduction: BigInt division dominates the cost.
  return (y * y - x * x * x + 3n * x - B) % P === 0n;
}

/** True when an X25519 public key is one of the small-order points (all-zero shared secret). */
export function isX25519SmallOrder(publicKey: Uint8Array): boolean {
  if (publicKey.length !== 32) return false;
  outer: for (const bad of X25519_SMALL_ORDER) {
    for (let i = 0; i < 31; i++) if (publicKey[i] !== bad[i]) continue outer;
    // RFC 7748: the top bit of the last byte is ignored.
    if (((publicKey[31] as number) & 0x7f) === bad[31]) return true;
  }
  return false;
}

/**
 * Checks a host (key-agreement) public key for the curve; throws invalid_public_key saying why.
 * `isCA` keys are signing keys: Ed25519 (32 bytes) or an ECDSA P-256 point.
 */
export function checkPublicKey(curve: Curve, publicKey: Uint8Array, isCA = false): void {
  if (!(publicKey instanceof Uint8Array)) throw invalidKey("the public key must be bytes");
  if (curve === "CURVE25519") {
    if (publicKey.length !== 32) {
      throw invalidKey(`a Curve25519 public key is 32 bytes, not ${publicKey.length}`);
    }
    if (!isCA && isX25519SmallOrder(publicKey)) {
      throw invalidKey(
        "the X25519 public key is a small-order point; generate one with `nebula-cert keygen`",
      );
    }
    return;
  }
  if (curve !== "P256") throw new CertError("wrong_curve", `unknown curve ${String(curve)}`);
  if (publicKey.length === 33 && (publicKey[0] === 2 || publicKey[0] === 3)) {
    throw invalidKey(
      "the P-256 public key is compressed; Nebula needs the 65-byte uncompressed point",
    );
  }
  if (publicKey.length !== 65)
    throw invalidKey(`a P-256 public key is 65 bytes, not ${publicKey.length}`);
  if (!isP256Point(publicKey)) throw invalidKey("the P-256 public key is not a point on the curve");
}

function randomBytes(n: number): Uint8Array {
  return globalThis.crypto.getRandomValues(new Uint8Array(n));
}

function randomP256Scalar(): Uint8Array {
  for (;;) {
    const k = randomBytes(32);
    const n = bytesToBigInt(k);
    if (n > 0n && n < P256_ORDER) return k;
  }
}

/** A CA signing key pair in Nebula's format: Ed25519 seed||public (64 bytes) or a P-256 scalar. */
export async function generateCaKeyPair(curve: Curve): Promise<KeyPair> {
  if (curve === "CURVE25519") {
    const seed = randomBytes(32);
    const publicKey = ed25519.getPublicKey(seed);
    const privateKey = new Uint8Array(64);
    privateKey.set(seed);
    privateKey.set(publicKey, 32);
    seed.fill(0);
    return { curve, publicKey, privateKey };
  }
  if (curve !== "P256") throw new CertError("wrong_curve", `unknown curve ${String(curve)}`);
  const privateKey = randomP256Scalar();
  return { curve, publicKey: p256.getPublicKey(privateKey, false), privateKey };
}

/** A host (key-agreement) key pair: X25519 32 bytes, or P-256 with a 65-byte uncompressed public key. */
export async function generateHostKeyPair(curve: Curve): Promise<KeyPair> {
  if (curve === "CURVE25519") {
    const privateKey = randomBytes(32);
    return { curve, publicKey: x25519.getPublicKey(privateKey), privateKey };
  }
  if (curve !== "P256") throw new CertError("wrong_curve", `unknown curve ${String(curve)}`);
  const privateKey = randomP256Scalar();
  return { curve, publicKey: p256.getPublicKey(privateKey, false), privateKey };
}

/** A host public key from `nebula-cert keygen`'s .pub file (X25519 or P-256 banner only). */
export function parsePublicKeyPem(pem: string): { curve: Curve; publicKey: Uint8Array } {
  const block = parseSinglePemBlock(pem);
  let curve: Curve;
  switch (block.type) {
    case X25519_PUBLIC_BANNER:
      curve = "CURVE25519";
      break;
    case P256_PUBLIC_BANNER:
      curve = "P256";
      break;
    case ED25519_PUBLIC_BANNER:
    case ECDSA_P256_PUBLIC_BANNER:
      throw invalidKey(
        `${block.type} is a signing key; a host needs the public key from \`nebula-cert keygen\``,
      );
    default:
      if (block.type.includes("PRIVATE")) {
        throw invalidKey(
          "this is a PRIVATE key: send the .pub file and keep the private key on the host",
        );
      }
      throw invalidKey(`expected a NEBULA X25519 or P256 PUBLIC KEY block, found ${block.type}`);
  }
  checkPublicKey(curve, block.bytes);
  return { curve, publicKey: block.bytes };
}

export function publicKeyToPem(curve: Curve, publicKey: Uint8Array): string {
  checkPublicKey(curve, publicKey);
  return encodePem(curve === "CURVE25519" ? X25519_PUBLIC_BANNER : P256_PUBLIC_BANNER, publicKey);
}

function invalidPrivate(message: string): CertError {
  return new CertError("invalid_private_key", message);
}

export const MISMATCHED_ED25519_HALVES = "the Ed25519 CA key's two halves do not belong together";

/** Checks private key bytes for the curve and role (never echoes them). */
export function checkPrivateKey(curve: Curve, privateKey: Uint8Array, isCA: boolean): void {
  checkPrivateKeyShape(curve, privateKey, isCA);
  if (curve === "CURVE25519" && isCA) {
    const pub = ed25519.getPublicKey(privateKey.subarray(0, 32));
    if (!bytesEqual(pub, privateKey.subarray(32))) throw invalidPrivate(MISMATCHED_ED25519_HALVES);
  }
}

/**
 * Lengths and range only: an Ed25519 CA key's public half is not checked against its seed here. A
 * caller that skips that check derives the public key itself and compares (see signer.ts).
 */
export function checkPrivateKeyShape(curve: Curve, privateKey: Uint8Array, isCA: boolean): void {
  if (!(privateKey instanceof Uint8Array)) throw invalidPrivate("the private key must be bytes");
  if (curve === "CURVE25519") {
    if (isCA && privateKey.length !== 64)
      throw invalidPrivate("an Ed25519 CA key is 64 bytes (seed and public key)");
    if (!isCA && privateKey.length !== 32)
      throw invalidPrivate("an X25519 private key is 32 bytes");
    return;
  }
  if (curve !== "P256") throw new CertError("wrong_curve", `unknown curve ${String(curve)}`);
  if (privateKey.length !== 32) throw invalidPrivate("a P-256 private key is 32 bytes");
  const n = bytesToBigInt(privateKey);
  if (n === 0n || n >= P256_ORDER) throw invalidPrivate("the P-256 private key is out of range");
}

/** Host (X25519, P256) and CA (Ed25519, ECDSA P256) private keys; encrypted CA keys are refused. */
export function parsePrivateKeyPem(pem: string): {
  curve: Curve;
  privateKey: Uint8Array;
  isCA: boolean;
} {
  const block = parseSinglePemBlock(pem);
  let curve: Curve;
  let isCA: boolean;
  switch (block.type) {
    case X25519_PRIVATE_BANNER:
      [curve, isCA] = ["CURVE25519", false];
      break;
    case P256_PRIVATE_BANNER:
      [curve, isCA] = ["P256", false];
      break;
    case ED25519_PRIVATE_BANNER:
      [curve, isCA] = ["CURVE25519", true];
      break;
    case ECDSA_P256_PRIVATE_BANNER:
      [curve, isCA] = ["P256", true];
      break;
    case ENCRYPTED_ED25519_BANNER:
    case ENCRYPTED_ECDSA_P256_BANNER:
      throw invalidPrivate(
        "the private key is encrypted: open it with its passphrase (decryptPrivateKeyPem)",
      );
    default:
      throw invalidPrivate(`expected a NEBULA private key block, found ${block.type}`);
  }
  checkPrivateKey(curve, block.bytes, isCA);
  return { curve, privateKey: block.bytes, isCA };
}

export function privateKeyToPem(curve: Curve, privateKey: Uint8Array, isCA: boolean): string {
  checkPrivateKey(curve, privateKey, isCA);
  const banner =
    curve === "CURVE25519"
      ? isCA
        ? ED25519_PRIVATE_BANNER
        : X25519_PRIVATE_BANNER
      : isCA
        ? ECDSA_P256_PRIVATE_BANNER
        : P256_PRIVATE_BANNER;
  return encodePem(banner, privateKey);
}
