/**
 * IP addresses and prefixes as Nebula (Go's net/netip) reads, orders and prints them. Certificates
 * keep the host address with its prefix ("10.42.1.7/16"), so a Cidr is an address plus a prefix
 * length, not a masked network. Also used for overlay address allocation.
 */
import { CertError } from "./errors.ts";

export type IpFamily = 4 | 6;

export interface IpAddress {
  family: IpFamily;
  /** 4 or 16 bytes, network order. */
  bytes: Uint8Array;
}

export interface Cidr extends IpAddress {
  /** Prefix length: 0..32 (IPv4) or 0..128 (IPv6). */
  prefix: number;
}

const DECIMAL_OCTET = /^(0|[1-9]\d{0,2})$/;
const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;
const PREFIX = /^(0|[1-9]\d{0,2})$/;

function bad(text: string, why: string): CertError {
  return new CertError(
    "invalid_network",
    `invalid address ${JSON.stringify(text.slice(0, 64))}: ${why}; write it like 10.42.1.7/16 or fd00::7/64`,
  );
}

function parseIpv4(text: string, original: string): Uint8Array {
  // Fast path: digits and dots only, read without allocating (the signing hot path parses these).
  const out = new Uint8Array(4);
  let part = 0;
  let value = 0;
  let digits = 0;
  let ok = text.length >= 7 && text.length <= 15;
  for (let i = 0; ok && i <= text.length; i++) {
    const c = i < text.length ? text.charCodeAt(i) : 46;
    if (c === 46) {
      if (digits === 0 || part > 3) ok = false;
      else out[part++] = value;
      value = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && value === 0) ok = false; // leading zero
      value = value * 10 + (c - 48);
      digits++;
      if (value > 255) ok = false;
    } else {
      ok = false;
    }
  }
  if (ok && part === 4) return out;
  return parseIpv4Slow(text, original);
}

function parseIpv4Slow(text: string, original: string): Uint8Array {
  const parts = text.split(".");
  if (parts.length !== 4) throw bad(original, "an IPv4 address has four dotted numbers");
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i] as string;
    if (!DECIMAL_OCTET.test(p)) throw bad(original, "IPv4 parts are numbers without leading zeros");
    const n = Number(p);
    if (n > 255) throw bad(original, "IPv4 parts are at most 255");
    out[i] = n;
  }
  return out;
}

function parseIpv6(text: string, original: string): Uint8Array {
  if (text.includes("%")) throw bad(original, "zones are not allowed");
  const halves = text.split("::");
  if (halves.length > 2) throw bad(original, "'::' may appear once");
  const groups = (s: string): string[] => (s === "" ? [] : s.split(":"));
  const head = groups(halves[0] as string);
  const tail = halves.length === 2 ? groups(halves[1] as string) : [];
  const words: number[] = [];
  const embedded: number[] = [];
  const all = [...head, ...tail];
  // An embedded IPv4 address may only end the address.
  const last = all[all.length - 1];
  if (last?.includes(".")) {
    if (halves.length === 2 && tail.length === 0)
      throw bad(original, "an embedded IPv4 address ends the address");
    const v4 = parseIpv4(last, original);
    embedded.push(
      ((v4[0] as number) << 8) | (v4[1] as number),
      ((v4[2] as number) << 8) | (v4[3] as number),
    );
    if (tail.length > 0) tail.pop();
    else head.pop();
  }
  for (const g of [...head, ...tail]) {
    if (!HEX_GROUP.test(g)) throw bad(original, "IPv6 groups are 1 to 4 hex digits");
  }
  const given = head.length + tail.length + embedded.length;
  if (halves.length === 2) {
    if (given > 7) throw bad(original, "too many IPv6 groups");
  } else if (given !== 8) {
    throw bad(original, "an IPv6 address has eight groups or uses '::'");
  }
  for (const g of head) words.push(Number.parseInt(g, 16));
  for (let i = given; i < 8; i++) words.push(0);
  for (const g of tail) words.push(Number.parseInt(g, 16));
  words.push(...embedded);
  const out = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    out[i * 2] = (words[i] as number) >> 8;
    out[i * 2 + 1] = (words[i] as number) & 0xff;
  }
  return out;
}

/** A bare address: "10.42.1.7" or "fd00::7". */
export function parseIp(text: string): IpAddress {
  if (typeof text !== "string" || text.length === 0 || text.length > 64) {
    throw bad(String(text), "expected an IP address");
  }
  if (text.includes(":")) return { family: 6, bytes: parseIpv6(text, text) };
  return { family: 4, bytes: parseIpv4(text, text) };
}

/** An address with its prefix length: "10.42.1.7/16", "fd00:44::34/64". The host bits are kept. */
export function parseCidr(text: string): Cidr {
  if (typeof text !== "string" || text.length > 64)
    throw bad(String(text), "expected address/prefix");
  const slash = text.indexOf("/");
  if (slash < 0) throw bad(text, "the prefix length is missing");
  const addr = parseIp(text.slice(0, slash));
  const p = text.slice(slash + 1);
  if (!PREFIX.test(p)) throw bad(text, "the prefix length is a number without leading zeros");
  const prefix = Number(p);
  if (prefix > bitLength(addr.family))
    throw bad(text, `the prefix is at most ${bitLength(addr.family)}`);
  return { ...addr, prefix };
}

export function bitLength(family: IpFamily): 32 | 128 {
  return family === 4 ? 32 : 128;
}

export function is4In6(a: IpAddress): boolean {
  if (a.family !== 6) return false;
  for (let i = 0; i < 10; i++) if (a.bytes[i] !== 0) return false;
  return a.bytes[10] === 0xff && a.bytes[11] === 0xff;
}

export function isUnspecified(a: IpAddress): boolean {
  for (let i = 0; i < a.bytes.length; i++) if (a.bytes[i] !== 0) return false;
  return true;
}

/** Formats as Go's netip does (RFC 5952; IPv4-mapped IPv6 as ::ffff:a.b.c.d). */
export function formatIp(a: IpAddress): string {
  const b = a.bytes;
  if (a.family === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  if (is4In6(a)) return `::ffff:${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  const words: number[] = [];
  for (let i = 0; i < 8; i++) words.push(((b[i * 2] as number) << 8) | (b[i * 2 + 1] as number));
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i >= 2 && j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j === i ? i + 1 : j;
  }
  const hex = (ws: number[]) => ws.map((w) => w.toString(16)).join(":");
  if (bestStart < 0) return hex(words);
  return `${hex(words.slice(0, bestStart))}::${hex(words.slice(bestStart + bestLen))}`;
}

export function formatCidr(c: Cidr): string {
  return `${formatIp(c)}/${c.prefix}`;
}

/** The network of a Cidr: host bits cleared ("10.42.1.7/16" -> "10.42.0.0/16"). */
export function networkOf(c: Cidr): Cidr {
  const bytes = new Uint8Array(c.bytes.length);
  for (let i = 0; i < bytes.length; i++) {
    const bits = Math.max(0, Math.min(8, c.prefix - i * 8));
    bytes[i] = (c.bytes[i] as number) & ((0xff << (8 - bits)) & 0xff);
  }
  return { family: c.family, bytes, prefix: c.prefix };
}

/** True when `addr` lies inside the network of `outer` (same family). */
export function cidrContainsIp(outer: Cidr, addr: IpAddress): boolean {
  if (outer.family !== addr.family) return false;
  let bits = outer.prefix;
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if (((outer.bytes[i] as number) & mask) !== ((addr.bytes[i] as number) & mask)) return false;
  }
  return true;
}

/**
 * True when `inner` fits inside `outer` the way Nebula checks CA constraints: the inner address is
 * inside the outer network and the inner prefix is at least as long.
 */
export function cidrContains(outer: Cidr, inner: Cidr): boolean {
  return outer.prefix <= inner.prefix && cidrContainsIp(outer, inner);
}

/** Go's netip ordering: IPv4 before IPv6, then address bytes, then prefix length. */
export function compareCidr(a: Cidr, b: Cidr): number {
  if (a.family !== b.family) return a.family - b.family;
  for (let i = 0; i < a.bytes.length; i++) {
    const d = (a.bytes[i] as number) - (b.bytes[i] as number);
    if (d !== 0) return d;
  }
  return a.prefix - b.prefix;
}

export function sameCidr(a: Cidr, b: Cidr): boolean {
  return compareCidr(a, b) === 0;
}
