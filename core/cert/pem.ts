/**
 * PEM as Nebula writes it (Go's encoding/pem: 64-column base64, no headers), read strictly:
 * only whitespace may surround blocks, base64 must be canonical. Certificate bundles may mix
 * v1 and v2 blocks.
 */
import { certificateToPrintJson, decodeCertificate } from "./certificate.ts";
import { CertError } from "./errors.ts";
import type { NebulaCertificate } from "./types.ts";

export const CERTIFICATE_V1_BANNER = "NEBULA CERTIFICATE";
export const CERTIFICATE_V2_BANNER = "NEBULA CERTIFICATE V2";

export interface PemBlock {
  type: string;
  bytes: Uint8Array;
}

/** Largest PEM text accepted (a bundle of many CAs fits easily). */
const MAX_PEM_LENGTH = 1 << 20;
const BEGIN = /-----BEGIN ([A-Z0-9 ]{1,64})-----/y;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

function malformed(why: string): CertError {
  return new CertError("malformed_pem", `not valid PEM: ${why}`);
}

export function base64ToBytes(text: string): Uint8Array {
  if (text.length % 4 !== 0 || !BASE64.test(text)) throw malformed("the body is not base64");
  let bin: string;
  try {
    bin = atob(text);
  } catch {
    throw malformed("the body is not base64");
  }
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  if (bytesToBase64(out) !== text) throw malformed("the base64 body is not canonical");
  return out;
}

export function bytesToBase64(bytes: Uint8Array): string {
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(bin);
}

/** Every block in `text`; anything but whitespace outside blocks is refused. */
export function parsePemBlocks(text: string): PemBlock[] {
  if (typeof text !== "string") throw malformed("expected text");
  if (text.length > MAX_PEM_LENGTH) throw malformed("longer than 1 MiB");
  const blocks: PemBlock[] = [];
  let pos = 0;
  for (;;) {
    while (pos < text.length && /\s/.test(text[pos] as string)) pos++;
    if (pos >= text.length) break;
    BEGIN.lastIndex = pos;
    const m = BEGIN.exec(text);
    if (!m) throw malformed("expected a -----BEGIN ...----- line");
    const type = m[1] as string;
    const endLine = `-----END ${type}-----`;
    const end = text.indexOf(endLine, BEGIN.lastIndex);
    if (end < 0) throw malformed(`the ${type} block has no END line`);
    const body = text.slice(BEGIN.lastIndex, end);
    if (body.includes(":")) throw malformed("PEM headers are not allowed");
    blocks.push({ type, bytes: base64ToBytes(body.replace(/\s+/g, "")) });
    pos = end + endLine.length;
  }
  if (blocks.length === 0) throw malformed("no PEM block found");
  return blocks;
}

/** Exactly one block, of one of the given types. */
export function parseSinglePemBlock(text: string): PemBlock {
  const blocks = parsePemBlocks(text);
  if (blocks.length !== 1) throw malformed(`expected one PEM block, found ${blocks.length}`);
  return blocks[0] as PemBlock;
}

export function encodePem(type: string, bytes: Uint8Array): string {
  const b64 = bytesToBase64(bytes);
  let out = `-----BEGIN ${type}-----\n`;
  for (let i = 0; i < b64.length; i += 64) out += `${b64.slice(i, i + 64)}\n`;
  return `${out}-----END ${type}-----\n`;
}

/** Every certificate in a PEM bundle, v1 and v2 mixed, in order. */
export function parseCertificatesPem(pem: string): NebulaCertificate[] {
  return parsePemBlocks(pem).map((b) => {
    if (b.type === CERTIFICATE_V1_BANNER) return decodeCertificate(b.bytes, 1);
    if (b.type === CERTIFICATE_V2_BANNER) return decodeCertificate(b.bytes, 2);
    throw malformed(`expected a NEBULA CERTIFICATE block, found ${b.type}`);
  });
}

export function certificateToPem(cert: NebulaCertificate): string {
  return encodePem(cert.version === 1 ? CERTIFICATE_V1_BANNER : CERTIFICATE_V2_BANNER, cert.raw);
}

/** `nebula-cert print -json` output for a bundle: one JSON line per certificate. */
export function certificatesToPrintJson(certs: NebulaCertificate[]): unknown[] {
  return certs.map(certificateToPrintJson);
}
