/**
 * One-time enrollment codes and host tokens: 256 random bits, shown once, stored only as sha256 hex
 * and found again by hashing what the caller presents (a hash lookup, so no secret comparison happens
 * in this process at all).
 */
import { createHash, randomBytes } from "node:crypto";

export const ENROLLMENT_CODE_PREFIX = "khe_";
export const HOST_TOKEN_PREFIX = "kht_";

export interface MintedSecret {
  /** Give this to the client once; never store or log it. */
  value: string;
  /** sha256 hex of `value`: what the database keeps. */
  hash: string;
}

export function mintSecret(prefix: string): MintedSecret {
  const value = prefix + randomBytes(32).toString("base64url");
  return { value, hash: hashSecret(value) };
}

/** SHA-256 of UTF-8 text, hex: synchronous node:crypto (WebCrypto's async digest costs far more per call on Bun). */
export function hashSecret(value: string): string {
  return createHash("sha256").update(value, "utf8").digest("hex");
}

/** Record ids: a short type prefix and 128 random bits ("net_3f...", "host_9a..."). */
export function newId(prefix: string): string {
  return `${prefix}_${randomBytes(16).toString("hex")}`;
}
