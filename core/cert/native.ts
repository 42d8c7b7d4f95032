/**
 * The runtime's own crypto module (node:crypto) where there is one (Node and Bun here). It is found
 * through process.getBuiltinModule rather than imported, so the library still loads in workerd and
 * browsers, where these helpers fall back to WebCrypto and @noble.
 *
 * Why: for a certificate-sized input, node:crypto's one-shot sign and hash run on the calling thread
 * in a few microseconds, while WebCrypto's promise-based sign and digest hop to a worker thread and
 * back. Measured with `npm run bench`: an Ed25519 signature costs ~100 µs through WebCrypto on Node
 * and ~60 µs through node:crypto; SHA-256 of a certificate is ~1 µs natively against ~4–5 µs in JS.
 */
import { sha256 as jsSha256 } from "@noble/hashes/sha2.js";
import { bytesToHex } from "@noble/hashes/utils.js";
import { concatBytes } from "./der.ts";

export type NodeCrypto = typeof import("node:crypto");

interface WithBuiltins {
  process?: { getBuiltinModule?: (id: string) => unknown };
}

function findNodeCrypto(): NodeCrypto | undefined {
  try {
    const mod = (globalThis as WithBuiltins).process?.getBuiltinModule?.("node:crypto") as
      | NodeCrypto
      | undefined;
    return typeof mod?.sign === "function" && typeof mod.hash === "function" ? mod : undefined;
  } catch {
    return undefined;
  }
}

/** node:crypto, or undefined where the runtime has none. */
export const nodeCrypto: NodeCrypto | undefined = findNodeCrypto();

/**
 * SHA-256 of the parts, one after the other, as lowercase hex: one native call where the runtime has
 * node:crypto, @noble/hashes elsewhere.
 */
export function sha256HexOf(...parts: Uint8Array[]): string {
  if (nodeCrypto) {
    const input = parts.length === 1 ? (parts[0] as Uint8Array) : concatBytes(...parts);
    return nodeCrypto.hash("sha256", input, "hex");
  }
  const h = jsSha256.create();
  for (const p of parts) h.update(p);
  return bytesToHex(h.digest());
}
