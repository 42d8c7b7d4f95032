/**
 * Nebula v1 certificates: protobuf `RawNebulaCertificate` (cert_v1.proto), read and written by hand
 * with protobufjs/minimal's Reader and Writer (no reflection or generated code: Workers forbid eval).
 * Nebula signs the marshalled details and fingerprints the marshalled whole certificate, both in
 * Go's canonical encoding; decoding accepts only that encoding, so `raw` re-encodes to itself.
 */
import pb from "protobufjs/minimal.js";
import { CertError } from "./errors.ts";
import { type Cidr, formatCidr, parseCidr } from "./ip.ts";
import { CURVE_WIRE, type Curve, curveFromWire, type WireDetails } from "./types.ts";

/** The fields v1 carries, already parsed; `issuer` is raw bytes. */
export type V1Fields = WireDetails;

const WIRE_VARINT = 0;
const WIRE_BYTES = 2;

function malformed(why: string, cause?: unknown): CertError {
  return new CertError(
    "malformed_certificate",
    `not a Nebula v1 certificate: ${why}`,
    cause ? { cause } : undefined,
  );
}

function maskToPrefix(mask: number): number {
  const inverted = ~mask >>> 0;
  // A contiguous mask is ones then zeros: its inverse plus one is a power of two.
  if ((inverted & (inverted + 1)) !== 0) throw malformed("network mask is not contiguous");
  return Math.clz32(inverted);
}

function prefixToMask(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

function ipv4ToUint(c: Cidr): number {
  const b = c.bytes;
  return (
    (((b[0] as number) << 24) |
      ((b[1] as number) << 16) |
      ((b[2] as number) << 8) |
      (b[3] as number)) >>>
    0
  );
}

function uintToCidr(addr: number, mask: number): Cidr {
  const bytes = Uint8Array.of(addr >>> 24, (addr >>> 16) & 0xff, (addr >>> 8) & 0xff, addr & 0xff);
  return { family: 4, bytes, prefix: maskToPrefix(mask) };
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

function readString(r: pb.Reader): string {
  try {
    return utf8.decode(r.bytes());
  } catch (e) {
    if (e instanceof CertError) throw e;
    throw malformed("a string is not valid UTF-8", e);
  }
}

function readInt64(r: pb.Reader): number {
  const v = r.int64() as unknown as number | { toNumber(): number };
  const n = typeof v === "number" ? v : v.toNumber();
  if (!Number.isSafeInteger(n) || Math.abs(n) > 8.64e12) throw malformed("time out of range");
  return n;
}

function readPairs(r: pb.Reader, wire: number, into: number[]): void {
  if (wire === WIRE_BYTES) {
    const end = r.uint32() + r.pos;
    if (end > r.len) throw malformed("packed field runs past its message");
    while (r.pos < end) into.push(r.uint32());
    if (r.pos !== end) throw malformed("packed field overruns");
  } else if (wire === WIRE_VARINT) {
    into.push(r.uint32());
  } else {
    throw malformed("wrong wire type for an address list");
  }
}

function toCidrs(words: number[], what: string): Cidr[] {
  if (words.length % 2 !== 0) throw malformed(`${what} must be address and mask pairs`);
  const out: Cidr[] = [];
  for (let i = 0; i < words.length; i += 2)
    out.push(uintToCidr(words[i] as number, words[i + 1] as number));
  return out;
}

function expectWire(actual: number, expected: number, field: string): void {
  if (actual !== expected) throw malformed(`field ${field} has the wrong wire type`);
}

function decodeDetails(bytes: Uint8Array): V1Fields {
  const r = new pb.Reader(bytes);
  let name = "";
  const ips: number[] = [];
  const subnets: number[] = [];
  const groups: string[] = [];
  let notBefore = 0;
  let notAfter = 0;
  let publicKey: Uint8Array = new Uint8Array(0);
  let isCA = false;
  let issuer: Uint8Array = new Uint8Array(0);
  let curve: Curve = "CURVE25519";
  while (r.pos < r.len) {
    const tag = r.uint32();
    const field = tag >>> 3;
    const wire = tag & 7;
    switch (field) {
      case 1:
        expectWire(wire, WIRE_BYTES, "Name");
        name = readString(r);
        break;
      case 2:
        readPairs(r, wire, ips);
        break;
      case 3:
        readPairs(r, wire, subnets);
        break;
      case 4:
        expectWire(wire, WIRE_BYTES, "Groups");
        groups.push(readString(r));
        break;
      case 5:
        expectWire(wire, WIRE_VARINT, "NotBefore");
        notBefore = readInt64(r);
        break;
      case 6:
        expectWire(wire, WIRE_VARINT, "NotAfter");
        notAfter = readInt64(r);
        break;
      case 7:
        expectWire(wire, WIRE_BYTES, "PublicKey");
        publicKey = r.bytes();
        break;
      case 8:
        expectWire(wire, WIRE_VARINT, "IsCA");
        isCA = r.bool();
        break;
      case 9:
        expectWire(wire, WIRE_BYTES, "Issuer");
        issuer = r.bytes();
        break;
      case 100: {
        expectWire(wire, WIRE_VARINT, "curve");
        const c = curveFromWire(r.int32());
        if (c === undefined) throw malformed("unknown curve");
        curve = c;
        break;
      }
      default:
        throw malformed(`unknown field ${field}`);
    }
  }
  return {
    name,
    networks: toCidrs(ips, "Ips"),
    unsafeNetworks: toCidrs(subnets, "Subnets"),
    groups,
    notBefore,
    notAfter,
    publicKey: publicKey.slice(),
    isCA,
    issuer: issuer.slice(),
    curve,
  };
}

/** Decodes `RawNebulaCertificate`; the caller checks canonical form by re-encoding. */
export function decodeV1(raw: Uint8Array): { fields: V1Fields; signature: Uint8Array } {
  try {
    const r = new pb.Reader(raw);
    let details: Uint8Array | undefined;
    let signature: Uint8Array = new Uint8Array(0);
    while (r.pos < r.len) {
      const tag = r.uint32();
      const field = tag >>> 3;
      if (field === 1) {
        expectWire(tag & 7, WIRE_BYTES, "Details");
        details = r.bytes();
      } else if (field === 2) {
        expectWire(tag & 7, WIRE_BYTES, "Signature");
        signature = r.bytes();
      } else {
        throw malformed(`unknown field ${field}`);
      }
    }
    if (details === undefined) throw malformed("details are missing");
    return { fields: decodeDetails(details), signature: signature.slice() };
  } catch (e) {
    if (e instanceof CertError) throw e;
    throw malformed("truncated or invalid protobuf", e);
  }
}

function writeDetails(w: pb.Writer, f: V1Fields): pb.Writer {
  if (f.name !== "") w.uint32((1 << 3) | WIRE_BYTES).string(f.name);
  const packed = (field: number, list: Cidr[]) => {
    if (list.length === 0) return;
    w.uint32((field << 3) | WIRE_BYTES).fork();
    for (const c of list) w.uint32(ipv4ToUint(c)).uint32(prefixToMask(c.prefix));
    w.ldelim();
  };
  packed(2, f.networks);
  packed(3, f.unsafeNetworks);
  for (const g of f.groups) w.uint32((4 << 3) | WIRE_BYTES).string(g);
  if (f.notBefore !== 0) w.uint32((5 << 3) | WIRE_VARINT).int64(f.notBefore);
  if (f.notAfter !== 0) w.uint32((6 << 3) | WIRE_VARINT).int64(f.notAfter);
  if (f.publicKey.length > 0) w.uint32((7 << 3) | WIRE_BYTES).bytes(f.publicKey);
  if (f.isCA) w.uint32((8 << 3) | WIRE_VARINT).bool(true);
  if (f.issuer.length > 0) w.uint32((9 << 3) | WIRE_BYTES).bytes(f.issuer);
  const curve = CURVE_WIRE[f.curve];
  if (curve !== 0) w.uint32((100 << 3) | WIRE_VARINT).int32(curve);
  return w;
}

/** The bytes Nebula signs for a v1 certificate: the marshalled details. */
export function encodeV1Details(f: V1Fields): Uint8Array {
  return writeDetails(new pb.Writer(), f).finish().slice();
}

/** The marshalled whole certificate (what the PEM holds and the fingerprint hashes). */
export function encodeV1(f: V1Fields, signature: Uint8Array): Uint8Array {
  return encodeV1FromDetails(encodeV1Details(f), signature);
}

function varintLength(n: number): number {
  let len = 1;
  for (let v = n; v >= 0x80; v >>>= 7) len++;
  return len;
}

function putVarint(out: Uint8Array, at: number, n: number): number {
  let v = n;
  let i = at;
  while (v >= 0x80) {
    out[i++] = (v & 0x7f) | 0x80;
    v >>>= 7;
  }
  out[i++] = v;
  return i;
}

/**
 * The marshalled whole certificate from already-marshalled details and the signature: field 1
 * (details) then field 2 (signature), written straight into one buffer.
 */
export function encodeV1FromDetails(details: Uint8Array, signature: Uint8Array): Uint8Array {
  const sigField = signature.length > 0 ? 1 + varintLength(signature.length) + signature.length : 0;
  const out = new Uint8Array(1 + varintLength(details.length) + details.length + sigField);
  out[0] = (1 << 3) | WIRE_BYTES;
  let at = putVarint(out, 1, details.length);
  out.set(details, at);
  at += details.length;
  if (sigField > 0) {
    out[at] = (2 << 3) | WIRE_BYTES;
    at = putVarint(out, at + 1, signature.length);
    out.set(signature, at);
  }
  return out;
}

/** v1 holds IPv4 only; parse CIDR text into what the encoder needs. */
export function v1Cidrs(texts: string[], what: string): Cidr[] {
  return texts.map((t) => {
    const c = parseCidr(t);
    if (c.family !== 4) {
      throw new CertError(
        "invalid_network",
        `${what} ${formatCidr(c)}: v1 certificates hold IPv4 only; use certificate version 2 for IPv6`,
      );
    }
    return c;
  });
}
