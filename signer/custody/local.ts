/**
 * The development key backend: one AES-256-GCM master key per "region" in a file under the data
 * folder, standing in for KMS on a laptop and in `npm start`. It is NOT a KMS: the master keys are
 * plain files on the signer's disk. Everything else (context binding, key ids, request ids, failures
 * that fail over) behaves like the aws backend so the signer is exercised the same way.
 *
 * Ciphertext: version (1) || keyId length (1) || keyId (utf8) || nonce (12) || ciphertext+tag.
 * Associated data: that header || the canonical encoding of the context.
 */
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { mkdir, open, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { concat, encodeContext } from "./context.ts";
import { type Answer, RegionFailure, type RegionKms } from "./custody.ts";
import { CustodyError, type EncryptionContext, type SealedCopy } from "./types.ts";

const VERSION = 1;
const KEY_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;

export const LOCAL_LABEL =
  "local (development only: master keys are files on this machine, not a KMS)";
export const DEFAULT_LOCAL_REGIONS = ["local-a", "local-b"] as const;

const REGION_NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;

export function masterKeyPath(dataDir: string, region: string): string {
  return join(dataDir, "kms", `${region}.key`);
}

/**
 * Makes each region's master key file if it is missing (0600, never overwritten), then checks every
 * one. Throws CustodyError("invalid") with what to do when a file is the wrong size or too open.
 */
export async function prepareLocalRegions(
  dataDir: string,
  regions: readonly string[],
): Promise<LocalRegionKms[]> {
  if (regions.length === 0)
    throw new CustodyError("invalid", "local custody needs at least one region");
  if (new Set(regions).size !== regions.length)
    throw new CustodyError("invalid", "local custody regions must be distinct");
  await mkdir(join(dataDir, "kms"), { recursive: true, mode: 0o700 });
  const out: LocalRegionKms[] = [];
  for (const region of regions) {
    if (!REGION_NAME.test(region)) {
      throw new CustodyError(
        "invalid",
        `local region name ${JSON.stringify(region)} must be lowercase letters, digits and '-'`,
      );
    }
    const path = masterKeyPath(dataDir, region);
    const fresh = randomBytes(KEY_BYTES);
    try {
      await writeFile(path, fresh, { flag: "wx", mode: 0o600 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") {
        throw new CustodyError(
          "invalid",
          `cannot create the local master key ${path}: ${(e as Error).message}`,
        );
      }
    } finally {
      fresh.fill(0);
    }
    const key = await readMasterKey(path).catch((e: unknown) => {
      throw new CustodyError("invalid", e instanceof RegionFailure ? e.message : String(e));
    });
    out.push(new LocalRegionKms(region, path, keyIdOf(region, key)));
    key.fill(0);
  }
  return out;
}

export class LocalRegionKms implements RegionKms {
  readonly region: string;
  readonly keyId: string;
  readonly #path: string;

  constructor(region: string, path: string, keyId: string) {
    this.region = region;
    this.#path = path;
    this.keyId = keyId;
  }

  async encrypt(
    plaintext: Uint8Array,
    context: EncryptionContext,
  ): Promise<Answer<{ ciphertext: Uint8Array; keyId: string }>> {
    const requestId = randomUUID();
    const { key, keyId } = await this.#loadKey(requestId);
    const header = headerOf(keyId);
    const nonce = randomBytes(NONCE_BYTES);
    const sealed = new Uint8Array(
      await crypto.subtle.encrypt(
        { name: "AES-GCM", iv: nonce, additionalData: concat([header, encodeContext(context)]) },
        key,
        plaintext as Uint8Array<ArrayBuffer>,
      ),
    );
    return { value: { ciphertext: concat([header, nonce, sealed]), keyId }, requestId };
  }

  async decrypt(copy: SealedCopy, context: EncryptionContext): Promise<Answer<Uint8Array>> {
    const requestId = randomUUID();
    const parsed = parseCiphertext(copy.ciphertext);
    if (parsed === null)
      throw new RegionFailure(
        "denied",
        "InvalidCiphertextException: not a local-kms ciphertext",
        requestId,
      );
    if (parsed.keyId !== copy.keyId) {
      throw new RegionFailure(
        "denied",
        "IncorrectKeyException: ciphertext was sealed under another key",
        requestId,
      );
    }
    const { key, keyId } = await this.#loadKey(requestId);
    if (keyId !== parsed.keyId) {
      // The key this copy needs is not in this region any more: the region cannot serve it.
      throw new RegionFailure(
        "unavailable",
        "NotFoundException: the sealing key is not in this region",
        requestId,
      );
    }
    try {
      const opened = await crypto.subtle.decrypt(
        {
          name: "AES-GCM",
          iv: parsed.nonce,
          additionalData: concat([parsed.header, encodeContext(context)]),
        },
        key,
        parsed.sealed,
      );
      return { value: new Uint8Array(opened), requestId };
    } catch {
      throw new RegionFailure(
        "denied",
        "InvalidCiphertextException: context mismatch or tampered ciphertext",
        requestId,
      );
    }
  }

  async probe(): Promise<void> {
    await this.#loadKey(null);
  }

  close(): void {}

  /** Read on every call, so a deleted or broken file takes the region down at once. */
  async #loadKey(requestId: string | null): Promise<{ key: CryptoKey; keyId: string }> {
    const raw = await readMasterKey(this.#path, requestId);
    try {
      const key = await crypto.subtle.importKey("raw", raw, "AES-GCM", false, [
        "encrypt",
        "decrypt",
      ]);
      return { key, keyId: keyIdOf(this.region, raw) };
    } finally {
      raw.fill(0);
    }
  }
}

/** Reads a master key, refusing a wrong size or a file group or others may read. */
async function readMasterKey(
  path: string,
  requestId: string | null = null,
): Promise<Uint8Array<ArrayBuffer>> {
  let handle: Awaited<ReturnType<typeof open>>;
  try {
    handle = await open(path, "r");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? "error";
    throw new RegionFailure("unavailable", `master key file unreadable (${code})`, requestId);
  }
  try {
    const info = await handle.stat();
    if (!info.isFile())
      throw new RegionFailure("unavailable", "master key file unreadable (not a file)", requestId);
    if ((info.mode & 0o077) !== 0) {
      const mode = (info.mode & 0o777).toString(8);
      throw new RegionFailure(
        "error",
        `master key ${path} has mode ${mode}: run chmod 600 ${path}`,
        requestId,
      );
    }
    if (info.size !== KEY_BYTES) {
      throw new RegionFailure(
        "error",
        `master key ${path} is ${info.size} bytes, not ${KEY_BYTES}: restore the right file (a new one cannot open CAs sealed under the old)`,
        requestId,
      );
    }
    const raw = new Uint8Array(KEY_BYTES);
    const { bytesRead } = await handle.read(raw, 0, KEY_BYTES, 0);
    if (bytesRead !== KEY_BYTES)
      throw new RegionFailure("unavailable", "master key file short read", requestId);
    return raw;
  } catch (e) {
    if (e instanceof RegionFailure) throw e;
    throw new RegionFailure(
      "unavailable",
      `master key file unreadable (${(e as NodeJS.ErrnoException).code ?? "error"})`,
      requestId,
    );
  } finally {
    await handle.close();
  }
}

/** Names the key material without revealing it: a domain-separated hash, truncated. */
function keyIdOf(region: string, key: Uint8Array): string {
  const digest = createHash("sha256")
    .update("keyhole local kms key id\0")
    .update(key)
    .digest("hex");
  return `local:${region}:${digest.slice(0, 16)}`;
}

function headerOf(keyId: string): Uint8Array {
  const id = new TextEncoder().encode(keyId);
  return concat([Uint8Array.of(VERSION, id.length), id]);
}

function parseCiphertext(input: Uint8Array): {
  header: Uint8Array<ArrayBuffer>;
  keyId: string;
  nonce: Uint8Array<ArrayBuffer>;
  sealed: Uint8Array<ArrayBuffer>;
} | null {
  const bytes = new Uint8Array(input); // an own copy (ciphertext is not secret)
  if (bytes.length < 2 || bytes[0] !== VERSION) return null;
  const idLength = bytes[1] as number;
  const headerLength = 2 + idLength;
  if (bytes.length < headerLength + NONCE_BYTES + TAG_BYTES) return null;
  let keyId: string;
  try {
    keyId = new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(2, headerLength));
  } catch {
    return null;
  }
  return {
    header: bytes.subarray(0, headerLength),
    keyId,
    nonce: bytes.subarray(headerLength, headerLength + NONCE_BYTES),
    sealed: bytes.subarray(headerLength + NONCE_BYTES),
  };
}
