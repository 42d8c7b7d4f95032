/**
 * Passphrase-encrypted CA keys in Nebula's format (cert/crypto.go): protobuf
 * RawNebulaEncryptedData holding Argon2id parameters and AES-256-GCM nonce||ciphertext||tag.
 * Argon2id is @noble/hashes (pure JS, so memory cost is bounded); AES-GCM is WebCrypto.
 */
import { argon2idAsync } from "@noble/hashes/argon2.js";
import pb from "protobufjs/minimal.js";
import { bufferSource } from "./der.ts";
import { CertError } from "./errors.ts";
import { checkPrivateKey, ENCRYPTED_ECDSA_P256_BANNER, ENCRYPTED_ED25519_BANNER } from "./keys.ts";
import { encodePem, parseSinglePemBlock } from "./pem.ts";
import type { Curve } from "./types.ts";

export interface Argon2Params {
  /** KiB. */
  memoryKiB: number;
  iterations: number;
  parallelism: number;
}

/** Our default for new keys: strong, yet workable in pure JS (nebula-cert's own default is 2 GiB). */
export const DEFAULT_ARGON2: Argon2Params = { memoryKiB: 65536, iterations: 3, parallelism: 4 };
/** Largest Argon2 memory spent opening a key unless told otherwise: nebula-cert's default (2 GiB, slow in JS). */
export const DEFAULT_MAX_MEMORY_KIB = 2 * 1024 * 1024;

const ARGON2_VERSION = 0x13;
const ALGORITHM = "AES-256-GCM";
const NONCE_LENGTH = 12;

interface EncryptedData {
  algorithm: string;
  version: number;
  memory: number;
  iterations: number;
  parallelism: number;
  salt: Uint8Array;
  ciphertext: Uint8Array;
}

function malformed(why: string): CertError {
  return new CertError("invalid_private_key", `not a Nebula encrypted private key: ${why}`);
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

function decodeEncryptedData(bytes: Uint8Array): EncryptedData {
  const out: EncryptedData = {
    algorithm: "",
    version: 0,
    memory: 0,
    iterations: 0,
    parallelism: 0,
    salt: new Uint8Array(0),
    ciphertext: new Uint8Array(0),
  };
  let sawMetadata = false;
  let sawParams = false;
  const r = new pb.Reader(bytes);
  while (r.pos < r.len) {
    const tag = r.uint32();
    if (tag === 0x0a) {
      sawMetadata = true;
      const m = new pb.Reader(r.bytes());
      while (m.pos < m.len) {
        const t = m.uint32();
        if (t === 0x0a) out.algorithm = utf8.decode(m.bytes());
        else if (t === 0x12) {
          sawParams = true;
          const a = new pb.Reader(m.bytes());
          while (a.pos < a.len) {
            const f = a.uint32();
            if (f === 0x08) out.version = a.int32();
            else if (f === 0x10) out.memory = a.uint32();
            else if (f === 0x18) out.iterations = a.uint32();
            else if (f === 0x20) out.parallelism = a.uint32();
            else if (f === 0x2a) out.salt = a.bytes().slice();
            else a.skipType(f & 7);
          }
        } else m.skipType(t & 7);
      }
    } else if (tag === 0x12) {
      out.ciphertext = r.bytes().slice();
    } else {
      r.skipType(tag & 7);
    }
  }
  if (!sawMetadata) throw malformed("the encryption metadata is missing");
  if (!sawParams) throw malformed("the Argon2 parameters are missing");
  return out;
}

function encodeEncryptedData(d: EncryptedData): Uint8Array {
  const w = new pb.Writer();
  w.uint32(0x0a).fork();
  w.uint32(0x0a).string(d.algorithm);
  w.uint32(0x12).fork();
  w.uint32(0x08).int32(d.version);
  w.uint32(0x10).uint32(d.memory);
  w.uint32(0x18).uint32(d.iterations);
  w.uint32(0x20).uint32(d.parallelism);
  w.uint32(0x2a).bytes(d.salt);
  w.ldelim();
  w.ldelim();
  w.uint32(0x12).bytes(d.ciphertext);
  return w.finish().slice();
}

function passphraseBytes(passphrase: Uint8Array | string): Uint8Array {
  const p = typeof passphrase === "string" ? new TextEncoder().encode(passphrase) : passphrase;
  if (!(p instanceof Uint8Array))
    throw new CertError("wrong_passphrase", "the passphrase must be text or bytes");
  return p;
}

async function deriveAesKey(
  passphrase: Uint8Array,
  salt: Uint8Array,
  p: Argon2Params,
): Promise<CryptoKey> {
  const raw = await argon2idAsync(passphrase, salt, {
    t: p.iterations,
    m: p.memoryKiB,
    p: p.parallelism,
    dkLen: 32,
    version: ARGON2_VERSION,
  });
  try {
    return await globalThis.crypto.subtle.importKey(
      "raw",
      bufferSource(raw),
      { name: "AES-GCM" },
      false,
      ["encrypt", "decrypt"],
    );
  } finally {
    raw.fill(0);
  }
}

export function isEncryptedPrivateKeyPem(pem: string): boolean {
  return (
    typeof pem === "string" &&
    (pem.includes(`-----BEGIN ${ENCRYPTED_ED25519_BANNER}-----`) ||
      pem.includes(`-----BEGIN ${ENCRYPTED_ECDSA_P256_BANNER}-----`))
  );
}

export interface DecryptOptions {
  /** Refuse keys whose Argon2 memory exceeds this many KiB (the work is done in JS). */
  maxMemoryKiB?: number;
  /** Refuse keys whose Argon2 work (memory KiB x passes) exceeds this; default 16 x maxMemoryKiB. */
  maxWorkKiB?: number;
}

/** Opens a CA key encrypted by `nebula-cert ca -encrypt` (or by encryptPrivateKeyPem). */
export async function decryptPrivateKeyPem(
  pem: string,
  passphrase: Uint8Array | string,
  options: DecryptOptions = {},
): Promise<{ curve: Curve; privateKey: Uint8Array; isCA: true }> {
  const block = parseSinglePemBlock(pem);
  let curve: Curve;
  if (block.type === ENCRYPTED_ED25519_BANNER) curve = "CURVE25519";
  else if (block.type === ENCRYPTED_ECDSA_P256_BANNER) curve = "P256";
  else
    throw malformed(`expected an encrypted Ed25519 or ECDSA P256 key block, found ${block.type}`);
  let d: EncryptedData;
  try {
    d = decodeEncryptedData(block.bytes);
  } catch (e) {
    if (e instanceof CertError) throw e;
    throw malformed("the protobuf body cannot be read");
  }
  if (d.algorithm !== ALGORITHM) {
    throw new CertError(
      "unsupported_encryption",
      `unsupported encryption algorithm ${JSON.stringify(d.algorithm.slice(0, 32))}`,
    );
  }
  if (d.version !== ARGON2_VERSION) {
    throw new CertError("unsupported_encryption", `unsupported Argon2 version ${d.version}`);
  }
  if (d.memory < 1 || d.iterations < 1 || d.parallelism < 1 || d.parallelism > 255) {
    throw malformed("the Argon2 parameters are out of range");
  }
  if (d.memory < 8 * d.parallelism)
    throw malformed("Argon2 memory must be at least 8 KiB per lane");
  const max = options.maxMemoryKiB ?? DEFAULT_MAX_MEMORY_KIB;
  if (d.memory > max) {
    throw new CertError(
      "unsupported_encryption",
      `the key's Argon2 memory (${d.memory} KiB) exceeds the limit of ${max} KiB; re-encrypt it with less memory or raise maxMemoryKiB`,
    );
  }
  // A key file is input too: a huge pass count would keep the process busy for days.
  const maxWork = options.maxWorkKiB ?? max * 16;
  if (d.memory * d.iterations > maxWork) {
    throw new CertError(
      "unsupported_encryption",
      `the key's Argon2 work (${d.memory} KiB x ${d.iterations} passes) exceeds the limit of ${maxWork} KiB-passes; re-encrypt it with fewer passes or raise maxWorkKiB`,
    );
  }
  if (d.salt.length < 16) throw malformed("the salt is shorter than 128 bits");
  if (d.ciphertext.length <= NONCE_LENGTH)
    throw malformed("the ciphertext is shorter than its nonce");
  const key = await deriveAesKey(passphraseBytes(passphrase), d.salt, {
    memoryKiB: d.memory,
    iterations: d.iterations,
    parallelism: d.parallelism,
  });
  let plain: Uint8Array;
  try {
    plain = new Uint8Array(
      await globalThis.crypto.subtle.decrypt(
        { name: "AES-GCM", iv: bufferSource(d.ciphertext.subarray(0, NONCE_LENGTH)) },
        key,
        bufferSource(d.ciphertext.subarray(NONCE_LENGTH)),
      ),
    );
  } catch {
    throw new CertError(
      "wrong_passphrase",
      "the passphrase does not open this key (or the key file was altered)",
    );
  }
  try {
    checkPrivateKey(curve, plain, true);
  } catch (e) {
    plain.fill(0);
    throw e;
  }
  return { curve, privateKey: plain, isCA: true };
}

/** Encrypts a CA private key the way `nebula-cert ca -encrypt` does; nebula-cert can open it. */
export async function encryptPrivateKeyPem(
  curve: Curve,
  privateKey: Uint8Array,
  passphrase: Uint8Array | string,
  params: Argon2Params = DEFAULT_ARGON2,
): Promise<string> {
  checkPrivateKey(curve, privateKey, true);
  const { memoryKiB, iterations, parallelism } = params;
  const int = (n: number, lo: number, hi: number) => Number.isInteger(n) && n >= lo && n <= hi;
  if (
    !int(parallelism, 1, 255) ||
    !int(iterations, 1, 0xffffffff) ||
    !int(memoryKiB, 8 * parallelism, 0xffffffff)
  ) {
    throw new CertError(
      "invalid_details",
      "Argon2 parameters out of range (parallelism 1-255, memory >= 8 KiB per lane)",
    );
  }
  const pass = passphraseBytes(passphrase);
  if (pass.length === 0)
    throw new CertError("wrong_passphrase", "the passphrase must not be empty");
  const salt = globalThis.crypto.getRandomValues(new Uint8Array(32));
  const nonce = globalThis.crypto.getRandomValues(new Uint8Array(NONCE_LENGTH));
  const key = await deriveAesKey(pass, salt, params);
  const sealed = new Uint8Array(
    await globalThis.crypto.subtle.encrypt(
      { name: "AES-GCM", iv: nonce },
      key,
      bufferSource(privateKey),
    ),
  );
  const ciphertext = new Uint8Array(NONCE_LENGTH + sealed.length);
  ciphertext.set(nonce);
  ciphertext.set(sealed, NONCE_LENGTH);
  const body = encodeEncryptedData({
    algorithm: ALGORITHM,
    version: ARGON2_VERSION,
    memory: memoryKiB,
    iterations,
    parallelism,
    salt,
    ciphertext,
  });
  return encodePem(
    curve === "CURVE25519" ? ENCRYPTED_ED25519_BANNER : ENCRYPTED_ECDSA_P256_BANNER,
    body,
  );
}
