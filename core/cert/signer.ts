/**
 * CA signers and signature checks. The default signer imports the CA key once into the runtime's
 * native crypto: node:crypto's one-shot sign where the runtime has it (Node and Bun here; see
 * native.ts for why), WebCrypto otherwise (workerd, browsers), @noble/curves where neither has the
 * algorithm. ECDSA P-256 output (r||s) is turned into the DER, low-S form Nebula stores. The native
 * key object is held only by the signer, and the caller zeroes the bytes it was made from.
 */
import { ed25519 } from "@noble/curves/ed25519.js";
import { p256 } from "@noble/curves/nist.js";
import { hexToBytes } from "@noble/hashes/utils.js";
import {
  bufferSource,
  bytesEqual,
  concatBytes,
  DerReader,
  derElement,
  derUnsignedIntegerValue,
  TAG_INTEGER,
  TAG_SEQUENCE,
} from "./der.ts";
import { CertError } from "./errors.ts";
import {
  bytesToBigInt,
  checkPrivateKey,
  checkPrivateKeyShape,
  MISMATCHED_ED25519_HALVES,
  P256_ORDER,
} from "./keys.ts";
import { type NodeCrypto, nodeCrypto } from "./native.ts";
import type { Curve } from "./types.ts";

/** Returns the signature bytes Nebula stores (Ed25519: 64 bytes; P-256: DER, low-S). */
export type SignMessage = (message: Uint8Array) => Promise<Uint8Array>;

export interface CaSigner {
  curve: Curve;
  publicKey: Uint8Array;
  sign: SignMessage;
}

const subtle = (): SubtleCrypto | undefined => globalThis.crypto?.subtle;

// PKCS#8 wrapping of a 32-byte Ed25519 seed (RFC 8410).
const ED25519_PKCS8_PREFIX = Uint8Array.of(
  0x30,
  0x2e,
  0x02,
  0x01,
  0x00,
  0x30,
  0x05,
  0x06,
  0x03,
  0x2b,
  0x65,
  0x70,
  0x04,
  0x22,
  0x04,
  0x20,
);

// PKCS#8 wrapping of a bare P-256 scalar (RFC 5915 ECPrivateKey without its optional public key,
// which the runtime then computes).
const P256_PKCS8_PREFIX = hexToBytes(
  "3041020100301306072a8648ce3d020106082a8648ce3d030107042730250201010420",
);

function base64url(bytes: Uint8Array): string {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

const HALF_ORDER = P256_ORDER >> 1n;

function bigIntTo32(n: bigint): Uint8Array {
  const out = new Uint8Array(32);
  let v = n;
  for (let i = 31; i >= 0; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}

/** DER ECDSA signature -> r and s (strict DER, as Go's parser reads it). */
export function parseDerSignature(sig: Uint8Array): { r: bigint; s: bigint } {
  const outer = new DerReader(sig, "bad_signature");
  const inner = new DerReader(outer.read(TAG_SEQUENCE), "bad_signature");
  if (!outer.empty)
    throw new CertError("bad_signature", "trailing bytes after the ECDSA signature");
  const r = bytesToBigInt(inner.readUnsignedIntegerBytes());
  const s = bytesToBigInt(inner.readUnsignedIntegerBytes());
  if (!inner.empty)
    throw new CertError("bad_signature", "trailing bytes inside the ECDSA signature");
  return { r, s };
}

export function encodeDerSignature(r: bigint, s: bigint): Uint8Array {
  return derElement(
    TAG_SEQUENCE,
    derElement(TAG_INTEGER, derUnsignedIntegerValue(bigIntTo32(r))),
    derElement(TAG_INTEGER, derUnsignedIntegerValue(bigIntTo32(s))),
  );
}

const ORDER_BYTES = bigIntTo32(P256_ORDER);
const HALF_ORDER_BYTES = bigIntTo32(HALF_ORDER);

/** a > b for 32-byte big-endian numbers. */
function greater(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 0; i < 32; i++) {
    const d = (a[i] as number) - (b[i] as number);
    if (d !== 0) return d > 0;
  }
  return false;
}

/** n - s for a 32-byte big-endian s < n. */
function orderMinus(s: Uint8Array): Uint8Array {
  const out = new Uint8Array(32);
  let borrow = 0;
  for (let i = 31; i >= 0; i--) {
    let d = (ORDER_BYTES[i] as number) - (s[i] as number) - borrow;
    borrow = d < 0 ? 1 : 0;
    if (d < 0) d += 256;
    out[i] = d;
  }
  return out;
}

/** Index of the first byte of a big-endian number's minimal form (the last byte for zero). */
function minimalStart(n: Uint8Array): number {
  let i = 0;
  while (i < n.length - 1 && n[i] === 0) i++;
  return i;
}

/**
 * r||s (64 bytes, as WebCrypto and node:crypto's ieee-p1363 give it) -> DER with s in low form, as
 * Nebula >= 1.10.3 writes. Written straight into one buffer: this runs on every P-256 signing.
 */
export function p1363ToLowSDer(sig: Uint8Array): Uint8Array {
  if (sig.length !== 64) {
    throw new CertError("bad_signature", "an ECDSA P-256 signature is 64 bytes r||s");
  }
  const r = sig.subarray(0, 32);
  let s = sig.subarray(32);
  if (greater(s, HALF_ORDER_BYTES)) s = orderMinus(s);
  const rAt = minimalStart(r);
  const sAt = minimalStart(s);
  // A leading 0x00 keeps a number whose top bit is set positive.
  const rPad = (r[rAt] as number) & 0x80 ? 1 : 0;
  const sPad = (s[sAt] as number) & 0x80 ? 1 : 0;
  const rLen = 32 - rAt + rPad;
  const sLen = 32 - sAt + sPad;
  const body = 4 + rLen + sLen; // at most 70: every length fits the short form
  const out = new Uint8Array(2 + body);
  out[0] = TAG_SEQUENCE;
  out[1] = body;
  out[2] = TAG_INTEGER;
  out[3] = rLen;
  out.set(r.subarray(rAt), 4 + rPad);
  const sTag = 4 + rLen;
  out[sTag] = TAG_INTEGER;
  out[sTag + 1] = sLen;
  out.set(s.subarray(sAt), sTag + 2 + sPad);
  return out;
}

// Signers made here already return low-S DER; signCertificate normalizes only the others.
const lowSSigners = new WeakSet<CaSigner>();

export function producesLowS(signer: CaSigner): boolean {
  return lowSSigners.has(signer);
}

function trusted(signer: CaSigner): CaSigner {
  lowSSigners.add(signer);
  return signer;
}

/** The same DER signature with s in its low form (returned unchanged when already low). */
export function normalizeLowS(der: Uint8Array): Uint8Array {
  const { r, s } = parseDerSignature(der);
  return s > HALF_ORDER ? encodeDerSignature(r, P256_ORDER - s) : der;
}

/** The other valid form of a P-256 DER signature (s <-> n - s), as Nebula's p256.Swap computes. */
export function swapS(der: Uint8Array): Uint8Array {
  const { r, s } = parseDerSignature(der);
  return encodeDerSignature(r, (P256_ORDER - s) % P256_ORDER);
}

function caPublicKeyOf(curve: Curve, privateKey: Uint8Array): Uint8Array {
  return curve === "CURVE25519" ? privateKey.slice(32) : p256.getPublicKey(privateKey, false);
}

/** Pure-JS signer (@noble/curves): for runtimes without WebCrypto Ed25519 and for benchmarks. */
export function nobleSignerFromPrivateKey(curve: Curve, privateKey: Uint8Array): CaSigner {
  checkPrivateKey(curve, privateKey, true);
  const publicKey = caPublicKeyOf(curve, privateKey);
  if (curve === "CURVE25519") {
    const seed = privateKey.slice(0, 32);
    return { curve, publicKey, sign: async (m) => ed25519.sign(m, seed) };
  }
  const scalar = privateKey.slice();
  return trusted({
    curve,
    publicKey,
    sign: async (m) => p256.sign(m, scalar, { prehash: true, lowS: true, format: "der" }),
  });
}

/** A Buffer's bytes as a plain Uint8Array (no copy). */
function plainBytes(b: Uint8Array): Uint8Array {
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

function p256Jwk(privateKey: Uint8Array, publicKey: Uint8Array): JsonWebKey {
  return {
    kty: "EC",
    crv: "P-256",
    d: base64url(privateKey),
    x: base64url(publicKey.subarray(1, 33)),
    y: base64url(publicKey.subarray(33, 65)),
    ext: false,
  };
}

/**
 * node:crypto one-shot signing; null when the runtime refuses the key (then WebCrypto is tried). The
 * public key comes from the imported key itself: ~1 µs under Bun, where @noble/curves takes 240 µs
 * (Ed25519) and 350 µs (P-256) to compute it, once per opening of a CA key. An Ed25519 key's stored
 * public half must match it.
 */
function nodeCryptoSigner(
  native: NodeCrypto,
  curve: Curve,
  privateKey: Uint8Array,
): CaSigner | null {
  const pkcs8 =
    curve === "CURVE25519"
      ? concatBytes(ED25519_PKCS8_PREFIX, privateKey.subarray(0, 32))
      : concatBytes(P256_PKCS8_PREFIX, privateKey);
  let key: ReturnType<NodeCrypto["createPrivateKey"]>;
  let spki: Uint8Array;
  try {
    key = native.createPrivateKey({ key: pkcs8 as Buffer, format: "der", type: "pkcs8" });
    spki = plainBytes(native.createPublicKey(key).export({ format: "der", type: "spki" }));
  } catch {
    return null;
  } finally {
    pkcs8.fill(0);
  }
  if (curve === "CURVE25519") {
    const publicKey = spki.slice(-32);
    if (!bytesEqual(publicKey, privateKey.subarray(32))) {
      throw new CertError("invalid_private_key", MISMATCHED_ED25519_HALVES);
    }
    return { curve, publicKey, sign: async (m) => plainBytes(native.sign(null, m, key)) };
  }
  // The uncompressed point 04 || x || y ends a P-256 SubjectPublicKeyInfo.
  const publicKey = spki.slice(-65);
  if (publicKey[0] !== 0x04) return null;
  const options = { key, dsaEncoding: "ieee-p1363" as const };
  return trusted({
    curve,
    publicKey,
    sign: async (m) => p1363ToLowSDer(plainBytes(native.sign("sha256", m, options))),
  });
}

/**
 * Default signer: the runtime's native crypto (node:crypto, else WebCrypto) when it has the
 * algorithm, @noble/curves otherwise. The key is imported once; the caller may zero `privateKey`
 * afterwards.
 */
export async function signerFromPrivateKey(
  curve: Curve,
  privateKey: Uint8Array,
): Promise<CaSigner> {
  if (nodeCrypto) {
    checkPrivateKeyShape(curve, privateKey, true);
    const native = nodeCryptoSigner(nodeCrypto, curve, privateKey);
    if (native) return native;
  }
  checkPrivateKey(curve, privateKey, true);
  const publicKey = caPublicKeyOf(curve, privateKey);
  return (
    (await webCryptoSigner(curve, privateKey, publicKey)) ??
    nobleSignerFromPrivateKey(curve, privateKey)
  );
}

/**
 * The WebCrypto signer alone (non-extractable CryptoKey), as runtimes without node:crypto use it;
 * null when the runtime's WebCrypto lacks the algorithm.
 */
export async function webCryptoSignerFromPrivateKey(
  curve: Curve,
  privateKey: Uint8Array,
): Promise<CaSigner | null> {
  checkPrivateKey(curve, privateKey, true);
  return webCryptoSigner(curve, privateKey, caPublicKeyOf(curve, privateKey));
}

async function webCryptoSigner(
  curve: Curve,
  privateKey: Uint8Array,
  publicKey: Uint8Array,
): Promise<CaSigner | null> {
  const s = subtle();
  if (!s) return null;
  if (curve === "CURVE25519") {
    const pkcs8 = concatBytes(ED25519_PKCS8_PREFIX, privateKey.subarray(0, 32));
    let key: CryptoKey;
    try {
      key = await s.importKey("pkcs8", bufferSource(pkcs8), { name: "Ed25519" }, false, ["sign"]);
    } catch {
      return null;
    } finally {
      pkcs8.fill(0);
    }
    const algorithm = { name: "Ed25519" };
    return {
      curve,
      publicKey,
      sign: async (m) => new Uint8Array(await s.sign(algorithm, key, bufferSource(m))),
    };
  }
  const jwk = p256Jwk(privateKey, publicKey);
  let key: CryptoKey;
  try {
    key = await s.importKey("jwk", jwk, { name: "ECDSA", namedCurve: "P-256" }, false, ["sign"]);
  } catch {
    return null;
  } finally {
    jwk.d = "";
  }
  const algorithm = { name: "ECDSA", hash: "SHA-256" };
  return trusted({
    curve,
    publicKey,
    sign: async (m) =>
      p1363ToLowSDer(new Uint8Array(await s.sign(algorithm, key, bufferSource(m)))),
  });
}

/** Synchronous signature check with @noble/curves (both S forms accepted for P-256, like Go). */
export function verifyMessageSync(
  curve: Curve,
  publicKey: Uint8Array,
  message: Uint8Array,
  signature: Uint8Array,
): boolean {
  try {
    if (curve === "CURVE25519") {
      if (publicKey.length !== 32 || signature.length !== 64) return false;
      return ed25519.verify(signature, message, publicKey, { zip215: false });
    }
    const { r, s } = parseDerSignature(signature);
    if (r === 0n || s === 0n || r >= P256_ORDER || s >= P256_ORDER) return false;
    const compact = concatBytes(bigIntTo32(r), bigIntTo32(s));
    return p256.verify(compact, message, publicKey, { prehash: true, lowS: false });
  } catch {
    return false;
  }
}

const verifyKeys = new Map<string, Promise<CryptoKey | null>>();

async function importVerifyKey(curve: Curve, publicKey: Uint8Array): Promise<CryptoKey | null> {
  const s = subtle();
  if (!s) return null;
  const id = `${curve}:${base64url(publicKey)}`;
  let p = verifyKeys.get(id);
  if (!p) {
    const algorithm =
      curve === "CURVE25519" ? { name: "Ed25519" } : { name: "ECDSA", namedCurve: "P-256" };
    p = s
      .importKey("raw", bufferSource(publicKey.slice()), algorithm, false, ["verify"])
      .catch(() => null);
    if (verifyKeys.size > 256) verifyKeys.clear();
    verifyKeys.set(id, p);
  }
  return p;
}

/** Signature check with native WebCrypto where available (both S forms accepted for P-256). */
export async function verifyMessage(
  curve: Curve,
  publicKey: Uint8Array,
  message: Uint8Array,
  signature: Uint8Array,
): Promise<boolean> {
  const expectedLength = curve === "CURVE25519" ? 32 : 65;
  if (publicKey.length !== expectedLength) return false;
  const key = await importVerifyKey(curve, publicKey);
  if (!key) return verifyMessageSync(curve, publicKey, message, signature);
  try {
    if (curve === "CURVE25519") {
      if (signature.length !== 64) return false;
      return await (subtle() as SubtleCrypto).verify(
        { name: "Ed25519" },
        key,
        bufferSource(signature),
        bufferSource(message),
      );
    }
    const { r, s } = parseDerSignature(signature);
    if (r === 0n || s === 0n || r >= P256_ORDER || s >= P256_ORDER) return false;
    const compact = concatBytes(bigIntTo32(r), bigIntTo32(s));
    return await (subtle() as SubtleCrypto).verify(
      { name: "ECDSA", hash: "SHA-256" },
      key,
      bufferSource(compact),
      bufferSource(message),
    );
  } catch {
    return false;
  }
}
