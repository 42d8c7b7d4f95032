/**
 * Overlay address allocation for a network's hosts. A host gets one address in EACH of the network's
 * CIDRs (dual stack: one IPv4, one IPv6), in the order the network lists them: the lowest free one,
 * or, in the CIDR that holds it, the address it asked for after checking that it is inside and free.
 * Addresses carry the prefix of their CIDR ("10.1.0.7/16"), which is what the host certificate holds.
 *
 * The search never reads every used address: used addresses are found through an `AddressBook`
 * (indexed range reads in the store) starting at a per-CIDR hint below which everything is taken, so
 * its cost does not grow with the number of hosts. Keys are the address as fixed-width hex behind its
 * family ("4" + 8 digits, "6" + 32 digits): text order is numeric order within a family. The
 * migration db/migrations/0001_dual_stack.sql computes the same keys in SQL.
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
  const parsed = out.map((t) => parseCidr(t));
  for (const [i, a] of parsed.entries()) {
    for (const b of parsed.slice(i + 1)) {
      if (cidrContainsIp(a, b) || cidrContainsIp(b, a)) {
        throw new KeyholeError(
          "invalid_network",
          `${formatCidr(a)} and ${formatCidr(b)} overlap; a network's CIDRs must be disjoint`,
        );
      }
    }
  }
  return out;
}

/**
 * What a certificate version can carry: v1 certificates hold one IPv4 address, so a v1 network has
 * exactly one IPv4 CIDR; v2 takes several of either family (one address per CIDR for each host).
 */
export function checkCidrsForVersion(cidrs: readonly string[], certVersion: 1 | 2): void {
  if (certVersion === 2) return;
  const v6 = cidrs.find((t) => parseOrThrow(() => parseCidr(t), t).family !== 4);
  if (v6 !== undefined) {
    throw new KeyholeError(
      "invalid_network",
      `${v6}: certificate version 1 holds IPv4 only; use certVersion 2 for an IPv6 or dual-stack network`,
      { field: "cidrs" },
    );
  }
  if (cidrs.length > 1) {
    throw new KeyholeError(
      "invalid_network",
      `certificate version 1 carries one overlay address per host, so a v1 network has one CIDR (got ${cidrs.length}); use certVersion 2 for several`,
      { field: "cidrs" },
    );
  }
}

/** Every address one network CIDR may hand out. */
export interface AddressPool {
  /** Canonical CIDR text, as stored on the network. */
  cidr: string;
  /** Index of the CIDR in the network's list. */
  position: number;
  family: 4 | 6;
  first: bigint;
  last: bigint;
  parsed: Cidr;
}

export function addressPools(cidrs: readonly string[]): AddressPool[] {
  return cidrs.map((text, position) => {
    const cidr = networkOf(parseOrThrow(() => parseCidr(text), text));
    const bits = cidr.family === 4 ? 32 : 128;
    const base = toBigInt(cidr.bytes);
    const size = 1n << BigInt(bits - cidr.prefix);
    const top = base + size - 1n;
    const small = bits - cidr.prefix <= 1;
    const family = cidr.family === 4 ? 4 : 6;
    const range = small
      ? { first: base, last: top }
      : // IPv4: skip network and broadcast; IPv6: skip the subnet-router anycast address.
        { first: base + 1n, last: cidr.family === 4 ? top - 1n : top };
    return { cidr: formatCidr(cidr), position, family, parsed: cidr, ...range };
  });
}

/** The sortable key of an address: family digit, then the address as fixed-width lowercase hex. */
export function addressKey(family: 4 | 6, n: bigint): string {
  return `${family}${n.toString(16).padStart(family === 4 ? 8 : 32, "0")}`;
}

/** The key of a stored address text ("10.1.0.7/16", "fd00::7/64", or bare). */
export function keyOfAddress(text: string): string {
  const slash = text.indexOf("/");
  const ip = parseIp(slash >= 0 ? text.slice(0, slash) : text);
  return addressKey(ip.family === 4 ? 4 : 6, toBigInt(ip.bytes));
}

function numberOfKey(key: string): bigint {
  return BigInt(`0x${key.slice(1)}`);
}

/** Reads of the used addresses of one network, as the store answers them from its index. */
export interface AddressBook {
  /** Used keys in [fromKey, toKey], ascending, at most `limit`. */
  usedKeys(fromKey: string, toKey: string, limit: number): Promise<string[]>;
  /** The stored hint of a CIDR: every address below it is used; null when none is stored. */
  hint(cidr: string): Promise<string | null>;
}

export interface AllocatedAddress {
  position: number;
  cidr: string;
  /** "10.1.0.7/16" */
  address: string;
  key: string;
  /** The CIDR's hint after this allocation; null when it does not move (an explicit address). */
  nextHint: string | null;
}

/** Used keys read per range query while looking for a gap. */
const PROBE_BATCH = 32;

/**
 * One address per network CIDR for a new host. `requested` ("10.1.0.7" or "10.1.0.7/16") is checked
 * (invalid_network, ip_outside_network, ip_taken) and taken in the CIDR that holds it; every other
 * CIDR gets its lowest free address (network_full when one has none left).
 */
export async function allocateHostAddresses(
  cidrs: readonly string[],
  book: AddressBook,
  requested?: string | undefined,
): Promise<AllocatedAddress[]> {
  const pools = addressPools(cidrs);
  const wanted = requested === undefined ? null : requestedAddress(pools, requested, cidrs);
  const out: AllocatedAddress[] = [];
  for (const pool of pools) {
    if (wanted !== null && wanted.pool === pool) {
      const key = addressKey(pool.family, wanted.n);
      if ((await book.usedKeys(key, key, 1)).length > 0) {
        throw new KeyholeError(
          "ip_taken",
          `${formatIp(wanted.ip)} is already used by another host of this network`,
        );
      }
      const address = hostAddress(pool.parsed, wanted.n);
      out.push({ position: pool.position, cidr: pool.cidr, address, key, nextHint: null });
      continue;
    }
    const n = await lowestFree(pool, book);
    if (n === null) {
      throw new KeyholeError(
        "network_full",
        `no free address left in ${pool.cidr}; block and remove hosts or create a network with a larger CIDR`,
      );
    }
    const next = n < pool.last ? n + 1n : pool.last;
    out.push({
      position: pool.position,
      cidr: pool.cidr,
      address: hostAddress(pool.parsed, n),
      key: addressKey(pool.family, n),
      nextHint: addressKey(pool.family, next),
    });
  }
  return out;
}

/** The lowest free address of the pool at or above its hint: reads the run of used keys there. */
async function lowestFree(pool: AddressPool, book: AddressBook): Promise<bigint | null> {
  const hint = await book.hint(pool.cidr);
  let n = pool.first;
  if (hint !== null && hint.length === (pool.family === 4 ? 9 : 33)) {
    const h = numberOfKey(hint);
    if (h > n && h <= pool.last) n = h;
  }
  const lastKey = addressKey(pool.family, pool.last);
  while (n <= pool.last) {
    const used = await book.usedKeys(addressKey(pool.family, n), lastKey, PROBE_BATCH);
    for (const k of used) {
      if (numberOfKey(k) !== n) return n;
      n++;
    }
    if (used.length < PROBE_BATCH) return n <= pool.last ? n : null;
  }
  return null;
}

function requestedAddress(
  pools: AddressPool[],
  requested: string,
  cidrs: readonly string[],
): { pool: AddressPool; n: bigint; ip: IpAddress } {
  const text = requested.trim();
  const slash = text.indexOf("/");
  const ip: IpAddress = parseOrThrow(() => (slash >= 0 ? parseCidr(text) : parseIp(text)), text);
  const prefix = slash >= 0 ? (ip as Cidr).prefix : null;
  const pool = pools.find((p) => cidrContainsIp(p.parsed, ip));
  if (pool === undefined) {
    throw new KeyholeError(
      "ip_outside_network",
      `${formatIp(ip)} is outside the network (${cidrs.join(", ")}); pick an address inside it or leave ip out`,
    );
  }
  if (prefix !== null && prefix !== pool.parsed.prefix) {
    throw new KeyholeError(
      "ip_outside_network",
      `${text} has prefix /${prefix} but the network CIDR ${pool.cidr} is /${pool.parsed.prefix}; give the bare address`,
    );
  }
  const n = toBigInt(ip.bytes);
  if (n < pool.first || n > pool.last) {
    throw new KeyholeError(
      "ip_outside_network",
      `${formatIp(ip)} is the network or broadcast address of ${pool.cidr}; pick a host address`,
    );
  }
  return { pool, n, ip };
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
