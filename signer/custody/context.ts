/**
 * The encryption context {org, network, ca}: checked at the boundary, and encoded canonically for the
 * local backend's associated data. The encoding is length-prefixed with keys sorted, so no two
 * different contexts can encode to the same bytes (no "a=b,c" versus "a=b" "c" ambiguity).
 */
import { CustodyError, type EncryptionContext } from "./types.ts";

const FIELDS = ["ca", "network", "org"] as const; // sorted: the canonical order
const MAX_VALUE = 256;

/** Refuses a context with a missing, empty, oversized or non-string field, or with extra fields. */
export function checkContext(context: EncryptionContext): EncryptionContext {
  if (typeof context !== "object" || context === null) {
    throw new CustodyError("invalid", "encryption context must be an object {org, network, ca}");
  }
  const extra = Object.keys(context).filter((k) => !(FIELDS as readonly string[]).includes(k));
  if (extra.length > 0) {
    throw new CustodyError(
      "invalid",
      `encryption context has unknown fields ${extra.join(", ")}: use only org, network, ca`,
    );
  }
  for (const field of FIELDS) {
    const value: unknown = context[field];
    if (typeof value !== "string" || value.length === 0 || value.length > MAX_VALUE) {
      throw new CustodyError(
        "invalid",
        `encryption context field "${field}" must be a non-empty id of at most ${MAX_VALUE} characters`,
      );
    }
  }
  return { org: context.org, network: context.network, ca: context.ca };
}

/** The context as KMS takes it (a string map). */
export function contextForKms(context: EncryptionContext): Record<string, string> {
  return { org: context.org, network: context.network, ca: context.ca };
}

/** u32 length || utf8 bytes, for every key and value, keys in sorted order. */
export function encodeContext(context: EncryptionContext): Uint8Array<ArrayBuffer> {
  const enc = new TextEncoder();
  const parts: Uint8Array[] = [];
  for (const field of FIELDS) {
    parts.push(lengthPrefixed(enc.encode(field)), lengthPrefixed(enc.encode(context[field])));
  }
  return concat(parts);
}

export function lengthPrefixed(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(4 + bytes.length);
  new DataView(out.buffer).setUint32(0, bytes.length);
  out.set(bytes, 4);
  return out;
}

export function concat(parts: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
