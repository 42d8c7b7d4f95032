/**
 * Nebula v2 certificates: ASN.1 DER (cert_v2.asn1) with context-specific tags. Nebula signs
 * details || curve byte || public key, and fingerprints that plus the signature. Decoding accepts
 * only the encoding Nebula itself writes (sorted, unique networks; defaults omitted), so `raw`
 * re-encodes to itself.
 */
import {
  concatBytes,
  DerReader,
  derIntegerValue,
  TAG_OCTET_STRING,
  TAG_SEQUENCE,
  TAG_UTF8_STRING,
} from "./der.ts";
import { CertError } from "./errors.ts";
import type { Cidr } from "./ip.ts";
import { CURVE_WIRE, type Curve, curveFromWire, type WireDetails } from "./types.ts";

/** Nebula refuses certificates larger than this. */
export const MAX_CERTIFICATE_SIZE = 65536;
export const MAX_NAME_LENGTH = 253;

const TAG_CERT_DETAILS = 0xa0;
const TAG_CERT_CURVE = 0x81;
const TAG_CERT_PUBLIC_KEY = 0x82;
const TAG_CERT_SIGNATURE = 0x83;
const TAG_NAME = 0x80;
const TAG_NETWORKS = 0xa1;
const TAG_UNSAFE_NETWORKS = 0xa2;
const TAG_GROUPS = 0xa3;
const TAG_IS_CA = 0x84;
const TAG_NOT_BEFORE = 0x85;
const TAG_NOT_AFTER = 0x86;
const TAG_ISSUER = 0x87;

export type V2Fields = WireDetails;

const utf8Decoder = new TextDecoder("utf-8", { fatal: true });
const utf8Encoder = new TextEncoder();

function malformed(why: string): CertError {
  return new CertError("malformed_certificate", `not a Nebula v2 certificate: ${why}`);
}

function decodeUtf8(b: Uint8Array, what: string): string {
  try {
    return utf8Decoder.decode(b);
  } catch {
    throw malformed(`${what} is not valid UTF-8`);
  }
}

function readNetworks(list: Uint8Array | undefined): Cidr[] {
  const out: Cidr[] = [];
  if (list === undefined) return out;
  const r = new DerReader(list);
  while (!r.empty) {
    const v = r.read(TAG_OCTET_STRING);
    if (v.length !== 5 && v.length !== 17) throw malformed("a network is not 5 or 17 bytes");
    const family = v.length === 5 ? 4 : 6;
    const prefix = v[v.length - 1] as number;
    if (prefix > (family === 4 ? 32 : 128)) throw malformed("a network prefix is too long");
    out.push({ family, bytes: v.slice(0, v.length - 1), prefix });
  }
  return out;
}

function decodeDetails(element: Uint8Array): Omit<V2Fields, "curve" | "publicKey"> {
  const outer = new DerReader(element);
  const r = new DerReader(outer.read(TAG_CERT_DETAILS));
  const nameBytes = r.read(TAG_NAME);
  if (nameBytes.length === 0 || nameBytes.length > MAX_NAME_LENGTH) {
    throw malformed(`the name must be 1 to ${MAX_NAME_LENGTH} bytes`);
  }
  const name = decodeUtf8(nameBytes, "the name");
  const networks = readNetworks(r.readOptional(TAG_NETWORKS));
  const unsafeNetworks = readNetworks(r.readOptional(TAG_UNSAFE_NETWORKS));
  const groups: string[] = [];
  const groupList = r.readOptional(TAG_GROUPS);
  if (groupList !== undefined) {
    const g = new DerReader(groupList);
    while (!g.empty) {
      const v = g.read(TAG_UTF8_STRING);
      if (v.length === 0) throw malformed("a group is empty");
      groups.push(decodeUtf8(v, "a group"));
    }
  }
  const isCaBytes = r.readOptional(TAG_IS_CA);
  if (isCaBytes !== undefined && isCaBytes.length !== 1) throw malformed("isCA is not one byte");
  const isCA = isCaBytes !== undefined && (isCaBytes[0] as number) > 0;
  const notBefore = r.readSafeInteger(TAG_NOT_BEFORE);
  const notAfter = r.readSafeInteger(TAG_NOT_AFTER);
  if (Math.abs(notBefore) > 8.64e12 || Math.abs(notAfter) > 8.64e12)
    throw malformed("time out of range");
  const issuer = (r.readOptional(TAG_ISSUER) ?? new Uint8Array(0)).slice();
  if (!r.empty) throw malformed("details carry fields this version does not know");
  if (!outer.empty) throw malformed("trailing bytes after the details");
  return { name, networks, unsafeNetworks, groups, isCA, notBefore, notAfter, issuer };
}

/** Splits a v2 certificate into its parts; the caller checks canonical form by re-encoding. */
export function decodeV2(raw: Uint8Array): {
  fields: V2Fields;
  rawDetails: Uint8Array;
  signature: Uint8Array;
} {
  if (raw.length === 0 || raw.length > MAX_CERTIFICATE_SIZE)
    throw malformed("empty or larger than 64 KiB");
  const top = new DerReader(raw);
  const r = new DerReader(top.read(TAG_SEQUENCE));
  if (!top.empty) throw malformed("trailing bytes after the certificate");
  const rawDetails = r.readElement(TAG_CERT_DETAILS).element;
  let curve: Curve = "CURVE25519";
  const curveBytes = r.readOptional(TAG_CERT_CURVE);
  if (curveBytes !== undefined) {
    const c = curveBytes.length === 1 ? curveFromWire(curveBytes[0] as number) : undefined;
    if (c === undefined) throw malformed("unknown curve");
    curve = c;
  }
  const publicKey = r.readOptional(TAG_CERT_PUBLIC_KEY);
  if (publicKey === undefined || publicKey.length === 0)
    throw malformed("the public key is missing");
  const signature = r.read(TAG_CERT_SIGNATURE);
  if (signature.length === 0) throw malformed("the signature is empty");
  if (!r.empty) throw malformed("trailing fields after the signature");
  const details = decodeDetails(rawDetails);
  return {
    fields: { ...details, curve, publicKey: publicKey.slice() },
    rawDetails: rawDetails.slice(),
    signature: signature.slice(),
  };
}

// Single-pass DER writing: sizes first, then one buffer (the signing hot path encodes these).

function headerSize(len: number): number {
  return len < 0x80 ? 2 : len < 0x100 ? 3 : len < 0x10000 ? 4 : 5;
}

function writeHeader(buf: Uint8Array, pos: number, tag: number, len: number): number {
  buf[pos++] = tag;
  if (len < 0x80) {
    buf[pos++] = len;
  } else if (len < 0x100) {
    buf[pos++] = 0x81;
    buf[pos++] = len;
  } else if (len < 0x10000) {
    buf[pos++] = 0x82;
    buf[pos++] = len >>> 8;
    buf[pos++] = len & 0xff;
  } else {
    buf[pos++] = 0x83;
    buf[pos++] = len >>> 16;
    buf[pos++] = (len >>> 8) & 0xff;
    buf[pos++] = len & 0xff;
  }
  return pos;
}

function networksContentSize(list: Cidr[]): number {
  let n = 0;
  for (const c of list) n += 2 + c.bytes.length + 1;
  return n;
}

function writeNetworks(
  buf: Uint8Array,
  pos: number,
  tag: number,
  list: Cidr[],
  size: number,
): number {
  let p = writeHeader(buf, pos, tag, size);
  for (const c of list) {
    buf[p++] = TAG_OCTET_STRING;
    buf[p++] = c.bytes.length + 1;
    buf.set(c.bytes, p);
    p += c.bytes.length;
    buf[p++] = c.prefix;
  }
  return p;
}

/**
 * The DER Details element (tag [0] included), exactly as Nebula marshals it, written into a buffer
 * with `extra` spare bytes after it (room for the curve byte and public key of the signing message).
 */
function writeV2Details(
  f: Omit<V2Fields, "curve" | "publicKey">,
  extra: number,
): { buf: Uint8Array; length: number } {
  const name = utf8Encoder.encode(f.name);
  const groups = f.groups.map((g) => utf8Encoder.encode(g));
  const nets = networksContentSize(f.networks);
  const unsafe = networksContentSize(f.unsafeNetworks);
  let groupsSize = 0;
  for (const g of groups) groupsSize += headerSize(g.length) + g.length;
  const notBefore = derIntegerValue(f.notBefore);
  const notAfter = derIntegerValue(f.notAfter);
  let content = headerSize(name.length) + name.length;
  if (f.networks.length > 0) content += headerSize(nets) + nets;
  if (f.unsafeNetworks.length > 0) content += headerSize(unsafe) + unsafe;
  if (groups.length > 0) content += headerSize(groupsSize) + groupsSize;
  if (f.isCA) content += 3;
  content += 2 + notBefore.length + 2 + notAfter.length;
  if (f.issuer.length > 0) content += headerSize(f.issuer.length) + f.issuer.length;
  const length = headerSize(content) + content;
  const buf = new Uint8Array(length + extra);
  let p = writeHeader(buf, 0, TAG_CERT_DETAILS, content);
  p = writeHeader(buf, p, TAG_NAME, name.length);
  buf.set(name, p);
  p += name.length;
  if (f.networks.length > 0) p = writeNetworks(buf, p, TAG_NETWORKS, f.networks, nets);
  if (f.unsafeNetworks.length > 0)
    p = writeNetworks(buf, p, TAG_UNSAFE_NETWORKS, f.unsafeNetworks, unsafe);
  if (groups.length > 0) {
    p = writeHeader(buf, p, TAG_GROUPS, groupsSize);
    for (const g of groups) {
      p = writeHeader(buf, p, TAG_UTF8_STRING, g.length);
      buf.set(g, p);
      p += g.length;
    }
  }
  if (f.isCA) {
    buf[p++] = TAG_IS_CA;
    buf[p++] = 1;
    buf[p++] = 0xff;
  }
  buf[p++] = TAG_NOT_BEFORE;
  buf[p++] = notBefore.length;
  buf.set(notBefore, p);
  p += notBefore.length;
  buf[p++] = TAG_NOT_AFTER;
  buf[p++] = notAfter.length;
  buf.set(notAfter, p);
  p += notAfter.length;
  if (f.issuer.length > 0) {
    p = writeHeader(buf, p, TAG_ISSUER, f.issuer.length);
    buf.set(f.issuer, p);
  }
  return { buf, length };
}

/** The DER Details element (tag [0] included), exactly as Nebula marshals it. */
export function encodeV2Details(f: Omit<V2Fields, "curve" | "publicKey">): Uint8Array {
  return writeV2Details(f, 0).buf;
}

/** Details and the signing message (details || curve || public key) sharing one buffer. */
export function encodeV2SigningParts(f: V2Fields): { details: Uint8Array; toSign: Uint8Array } {
  const { buf, length } = writeV2Details(f, 1 + f.publicKey.length);
  buf[length] = CURVE_WIRE[f.curve];
  buf.set(f.publicKey, length + 1);
  return { details: buf.subarray(0, length), toSign: buf };
}

/** What Nebula signs: details || curve byte || public key. */
export function v2SigningMessage(
  rawDetails: Uint8Array,
  curve: Curve,
  publicKey: Uint8Array,
): Uint8Array {
  return concatBytes(rawDetails, Uint8Array.of(CURVE_WIRE[curve]), publicKey);
}

/** What Nebula fingerprints: details || curve byte || public key || signature. */
export function v2FingerprintInput(
  rawDetails: Uint8Array,
  curve: Curve,
  publicKey: Uint8Array,
  signature: Uint8Array,
): Uint8Array {
  return concatBytes(rawDetails, Uint8Array.of(CURVE_WIRE[curve]), publicKey, signature);
}

export function encodeV2(
  rawDetails: Uint8Array,
  curve: Curve,
  publicKey: Uint8Array,
  signature: Uint8Array,
): Uint8Array {
  const curveSize = curve === "CURVE25519" ? 0 : 3;
  const content =
    rawDetails.length +
    curveSize +
    headerSize(publicKey.length) +
    publicKey.length +
    headerSize(signature.length) +
    signature.length;
  const out = new Uint8Array(headerSize(content) + content);
  let p = writeHeader(out, 0, TAG_SEQUENCE, content);
  out.set(rawDetails, p);
  p += rawDetails.length;
  if (curveSize > 0) {
    out[p++] = TAG_CERT_CURVE;
    out[p++] = 1;
    out[p++] = CURVE_WIRE[curve];
  }
  p = writeHeader(out, p, TAG_CERT_PUBLIC_KEY, publicKey.length);
  out.set(publicKey, p);
  p += publicKey.length;
  p = writeHeader(out, p, TAG_CERT_SIGNATURE, signature.length);
  out.set(signature, p);
  return out;
}
