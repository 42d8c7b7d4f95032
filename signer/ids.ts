/**
 * Record ids chosen by the signer (they go into the KMS encryption context before any row exists):
 * a readable prefix and 128 random bits, base32 without padding.
 */
const ALPHABET = "abcdefghijklmnopqrstuvwxyz234567";

export function newId(prefix: "net" | "ca" | "host"): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  let out = "";
  let bits = 0;
  let value = 0;
  for (const b of bytes) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += ALPHABET[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += ALPHABET[(value << (5 - bits)) & 31];
  return `${prefix}_${out}`;
}
