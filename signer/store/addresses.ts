/**
 * Overlay address allocation for a network's hosts. A host gets the lowest free address of the
 * network's CIDRs (in the order the network lists them), or the address it asked for after checking
 * that it lies inside the network and is free. Addresses are stored with the prefix of the network
 * CIDR that holds them ("10.1.0.7/16"), which is what the host certificate carries.
 *
 * Skipped: for IPv4 the network and broadcast addresses (except in /31 and /32, RFC 3021); for IPv6
 * the all-zero host address (the subnet-router anycast address, RFC 4291) except in /127 and /128.
 */
import {
  type Cidr,
  cidrContainsIp,
  formatCidr,
  formatIp,
  type IpAddress,
  networkOf,
  parseCidr,
  parseIp,
} from "../../core/cert/ip.ts";
import { KeyholeError } from "../../core/errors.ts";

/** Canonical network CIDRs ("10.1.0.0/16"); invalid_network with the offending text otherwise. */
export function canonicalNetworkCidrs(cidrs: readonly string[]): string[] {
  if (cidrs.length === 0)
    throw new KeyholeError(
      "invalid_network",
      "a network needs at least one CIDR such as 10.1.0.0/16",
    );
  const out: string[] = [];
  for (const text of cidrs) {
    const c = networkOf(parseOrThrow(() => parseCidr(text), text));
    const canon = formatCidr(c);
    if (!out.includes(canon)) out.push(canon);
  }
  return out;
}

/** Every address the network may hand out, as a range per CIDR. */
interface Pool {
  cidr: Cidr;
  first: bigint;
  last: bigint;
}

function poolsOf(cidrs: readonly string[]): Pool[] {
  return cidrs.map((text) => {
    const cidr = networkOf(parseOrThrow(() => parseCidr(text), text));
    const bits = cidr.family === 4 ? 32 : 128;
    const base = toBigInt(cidr.bytes);
    const size = 1n << BigInt(bits - cidr.prefix);
    const top = base + size - 1n;
    const small = bits - cidr.prefix <= 1;
    if (small) return { cidr, first: base, last: top };
    // IPv4: skip network and broadcast; IPv6: skip the subnet-router anycast address.
    return { cidr, first: base + 1n, last: cidr.family === 4 ? top - 1n : top };
  });
}

/**
 * The address for a new host: `requested` checked (ip_outside_network, ip_taken), or the lowest free
 * one (network_full). `used` holds the stored addresses of the network's hosts ("10.1.0.7/16").
 */
export function allocateAddress(
  cidrs: readonly string[],
  used: ReadonlySet<string>,
  requested?: string | undefined,
): string {
  const pools = poolsOf(cidrs);
  if (requested !== undefined) return checkRequested(pools, used, requested, cidrs);
  const usedNumbers = new Set<string>();
  for (const u of used) {
    const addr = u.includes("/") ? u.slice(0, u.indexOf("/")) : u;
    try {
      const ip = parseIp(addr);
      usedNumbers.add(`${ip.family}:${toBigInt(ip.bytes)}`);
    } catch {
      // a row we cannot read never blocks allocation of other addresses
    }
  }
  for (const pool of pools) {
    for (let n = pool.first; n <= pool.last; n++) {
      if (!usedNumbers.has(`${pool.cidr.family}:${n}`)) return hostAddress(pool.cidr, n);
    }
  }
  throw new KeyholeError(
    "network_full",
    `no free address left in ${cidrs.join(", ")}; block and remove hosts or create a network with a larger CIDR`,
  );
}

function checkRequested(
  pools: Pool[],
  used: ReadonlySet<string>,
  requested: string,
  cidrs: readonly string[],
): string {
  const text = requested.trim();
  const slash = text.indexOf("/");
  const ip: IpAddress = parseOrThrow(() => (slash >= 0 ? parseCidr(text) : parseIp(text)), text);
  const prefix = slash >= 0 ? (ip as Cidr).prefix : null;
  const pool = pools.find((p) => cidrContainsIp(p.cidr, ip));
  if (pool === undefined) {
    throw new KeyholeError(
      "ip_outside_network",
      `${formatIp(ip)} is outside the network (${cidrs.join(", ")}); pick an address inside it or leave ip out`,
    );
  }
  if (prefix !== null && prefix !== pool.cidr.prefix) {
    throw new KeyholeError(
      "ip_outside_network",
      `${text} has prefix /${prefix} but the network CIDR ${formatCidr(pool.cidr)} is /${pool.cidr.prefix}; give the bare address`,
    );
  }
  const n = toBigInt(ip.bytes);
  if (n < pool.first || n > pool.last) {
    throw new KeyholeError(
      "ip_outside_network",
      `${formatIp(ip)} is the network or broadcast address of ${formatCidr(pool.cidr)}; pick a host address`,
    );
  }
  const address = hostAddress(pool.cidr, n);
  if (used.has(address)) {
    throw new KeyholeError(
      "ip_taken",
      `${formatIp(ip)} is already used by another host of this network`,
    );
  }
  return address;
}

function hostAddress(cidr: Cidr, n: bigint): string {
  return formatCidr({
    family: cidr.family,
    bytes: fromBigInt(n, cidr.bytes.length),
    prefix: cidr.prefix,
  });
}

function toBigInt(bytes: Uint8Array): bigint {
  let n = 0n;
  for (const b of bytes) n = (n << 8n) | BigInt(b);
  return n;
}

function fromBigInt(n: bigint, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = length - 1; i >= 0; i--) {
    out[i] = Number(n & 0xffn);
    n >>= 8n;
  }
  return out;
}

function parseOrThrow<T>(parse: () => T, text: string): T {
  try {
    return parse();
  } catch (e) {
    const why = e instanceof Error ? e.message : "not an address";
    throw new KeyholeError("invalid_network", why, { value: text.slice(0, 64) });
  }
}
