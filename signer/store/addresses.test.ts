// Overlay address allocation: one address per network CIDR (dual stack), lowest free, explicit,
// taken, outside, full, IPv4 and IPv6; hints; keys that sort numerically; v1 networks refusing IPv6.
import { describe, expect, it } from "vitest";
import { isKeyholeError } from "../../core/errors.ts";
import {
  type AddressBook,
  addressKey,
  allocateHostAddresses,
  canonicalNetworkCidrs,
  checkCidrsForVersion,
  keyOfAddress,
} from "./addresses.ts";

async function codeOf(f: () => unknown): Promise<string> {
  try {
    await f();
  } catch (e) {
    if (isKeyholeError(e)) return e.code;
    throw e;
  }
  return "no error";
}

/** The store's reads, over a sorted in-memory list; counts the keys it hands back. */
class MemoryBook implements AddressBook {
  keys: string[] = [];
  hints = new Map<string, string>();
  keysRead = 0;
  constructor(used: string[] = []) {
    for (const u of used) this.keys.push(keyOfAddress(u));
    this.keys.sort();
  }
  async usedKeys(from: string, to: string, limit: number): Promise<string[]> {
    const out = this.keys.filter((k) => k >= from && k <= to).slice(0, limit);
    this.keysRead += out.length;
    return out;
  }
  async hint(cidr: string): Promise<string | null> {
    return this.hints.get(cidr) ?? null;
  }
  /** What the store does with a result: record the addresses and move the hints. */
  async take(cidrs: string[], requested?: string): Promise<string[]> {
    const got = await allocateHostAddresses(cidrs, this, requested);
    for (const a of got) {
      this.keys.push(a.key);
      if (a.nextHint !== null) this.hints.set(a.cidr, a.nextHint);
    }
    this.keys.sort();
    return got.map((a) => a.address);
  }
}

const alloc = (cidrs: string[], used: string[] = [], requested?: string) =>
  new MemoryBook(used).take(cidrs, requested);

describe("canonicalNetworkCidrs", () => {
  it("clears host bits and drops duplicates", () => {
    expect(canonicalNetworkCidrs(["10.1.2.3/16", "10.1.0.0/16", "fd00:0:0:0::5/64"])).toEqual([
      "10.1.0.0/16",
      "fd00::/64",
    ]);
  });
  it("refuses text that is not a CIDR, no CIDR, and overlapping CIDRs", async () => {
    expect(await codeOf(() => canonicalNetworkCidrs(["10.1.0.0"]))).toBe("invalid_network");
    expect(await codeOf(() => canonicalNetworkCidrs(["10.1.0.300/16"]))).toBe("invalid_network");
    expect(await codeOf(() => canonicalNetworkCidrs([]))).toBe("invalid_network");
    expect(await codeOf(() => canonicalNetworkCidrs(["10.0.0.0/8", "10.1.0.0/16"]))).toBe(
      "invalid_network",
    );
    expect(await codeOf(() => canonicalNetworkCidrs(["fd00::/64", "fd00::/48"]))).toBe(
      "invalid_network",
    );
  });
});

describe("checkCidrsForVersion", () => {
  it("v1: one IPv4 CIDR only; v2: several of either family", async () => {
    expect(await codeOf(() => checkCidrsForVersion(["10.1.0.0/16"], 1))).toBe("no error");
    expect(await codeOf(() => checkCidrsForVersion(["fd00::/64"], 1))).toBe("invalid_network");
    expect(await codeOf(() => checkCidrsForVersion(["10.1.0.0/16", "fd00::/64"], 1))).toBe(
      "invalid_network",
    );
    expect(await codeOf(() => checkCidrsForVersion(["10.1.0.0/16", "10.2.0.0/16"], 1))).toBe(
      "invalid_network",
    );
    expect(await codeOf(() => checkCidrsForVersion(["10.1.0.0/16", "fd00::/64"], 2))).toBe(
      "no error",
    );
  });
});

describe("address keys", () => {
  it("fixed-width hex behind the family: text order is numeric order", () => {
    expect(keyOfAddress("10.1.0.7/16")).toBe("40a010007");
    expect(keyOfAddress("fd00::7/64")).toBe(`6fd00${"0".repeat(27)}7`);
    expect(addressKey(4, 0x0a01ff00n)).toBe("40a01ff00");
    const texts = ["10.1.0.255", "10.1.1.0", "10.1.0.9", "10.1.0.10", "9.255.255.255"];
    const byKey = [...texts].sort((a, b) => (keyOfAddress(a) < keyOfAddress(b) ? -1 : 1));
    expect(byKey).toEqual(["9.255.255.255", "10.1.0.9", "10.1.0.10", "10.1.0.255", "10.1.1.0"]);
  });
});

describe("allocateHostAddresses", () => {
  it("IPv4: lowest free, skipping the network address, with the network prefix", async () => {
    expect(await alloc(["10.1.0.0/16"])).toEqual(["10.1.0.1/16"]);
    expect(await alloc(["10.1.0.0/16"], ["10.1.0.1/16", "10.1.0.3/16"])).toEqual(["10.1.0.2/16"]);
  });
  it("dual stack: one address in each CIDR, in the network's order", async () => {
    const book = new MemoryBook();
    const cidrs = ["10.77.0.0/16", "fd77::/64"];
    expect(await book.take(cidrs)).toEqual(["10.77.0.1/16", "fd77::1/64"]);
    expect(await book.take(cidrs)).toEqual(["10.77.0.2/16", "fd77::2/64"]);
    expect(await book.take(["fd77::/64", "10.77.0.0/16"])).toEqual(["fd77::3/64", "10.77.0.3/16"]);
  });
  it("dual stack, explicit address: taken in its own CIDR, the others allocated", async () => {
    const book = new MemoryBook();
    const cidrs = ["10.77.0.0/16", "fd77::/64"];
    expect(await book.take(cidrs, "fd77::beef")).toEqual(["10.77.0.1/16", "fd77::beef/64"]);
    expect(await book.take(cidrs, "10.77.9.9/16")).toEqual(["10.77.9.9/16", "fd77::1/64"]);
    expect(await book.take(cidrs)).toEqual(["10.77.0.2/16", "fd77::2/64"]);
    expect(await codeOf(() => book.take(cidrs, "fd77::BEEF"))).toBe("ip_taken");
    expect(await codeOf(() => book.take(cidrs, "fd78::1"))).toBe("ip_outside_network");
    expect(await codeOf(() => book.take(cidrs, "fd77::1/48"))).toBe("ip_outside_network");
  });
  it("IPv4 /30: two hosts, then network_full (network and broadcast never handed out)", async () => {
    const book = new MemoryBook();
    expect(await book.take(["192.168.7.0/30"])).toEqual(["192.168.7.1/30"]);
    expect(await book.take(["192.168.7.0/30"])).toEqual(["192.168.7.2/30"]);
    expect(await codeOf(() => book.take(["192.168.7.0/30"]))).toBe("network_full");
  });
  it("dual stack: a full CIDR makes the network full even when the other has room", async () => {
    const cidrs = ["192.168.7.0/30", "fd00:1::/64"];
    const book = new MemoryBook(["192.168.7.1/30", "192.168.7.2/30"]);
    expect(await codeOf(() => book.take(cidrs))).toBe("network_full");
    const v6full = new MemoryBook(["fd00:1::1/127", "fd00:1::/127"]);
    expect(await codeOf(() => v6full.take(["10.0.0.0/8", "fd00:1::/127"]))).toBe("network_full");
  });
  it("IPv6: lowest free after the subnet-router anycast address, RFC 5952 text", async () => {
    expect(await alloc(["fd00:44::/64"])).toEqual(["fd00:44::1/64"]);
    expect(await alloc(["fd00:44::/64"], ["fd00:44::1/64"])).toEqual(["fd00:44::2/64"]);
    expect(await alloc(["fd00:44::/126"], ["fd00:44::1/126", "fd00:44::2/126"])).toEqual([
      "fd00:44::3/126",
    ]);
  });
  it("explicit address: bare or with the network prefix, canonicalised", async () => {
    expect(await alloc(["10.1.0.0/16"], [], "10.1.9.9")).toEqual(["10.1.9.9/16"]);
    expect(await alloc(["10.1.0.0/16"], [], "10.1.9.9/16")).toEqual(["10.1.9.9/16"]);
    expect(await alloc(["fd00::/64"], [], "fd00:0000::00a")).toEqual(["fd00::a/64"]);
  });
  it("explicit address taken => ip_taken (also when written differently)", async () => {
    expect(await codeOf(() => alloc(["10.1.0.0/16"], ["10.1.9.9/16"], "10.1.9.9"))).toBe(
      "ip_taken",
    );
    expect(await codeOf(() => alloc(["fd00::/64"], ["fd00::a/64"], "fd00:0::0:a"))).toBe(
      "ip_taken",
    );
  });
  it("explicit address outside, with another prefix, or network/broadcast => ip_outside_network", async () => {
    for (const bad of ["10.2.0.1", "fd00::1", "10.1.0.7/24", "10.1.0.0", "10.1.255.255"]) {
      expect(await codeOf(() => alloc(["10.1.0.0/16"], [], bad)), bad).toBe("ip_outside_network");
    }
  });
  it("explicit text that is not an address => invalid_network", async () => {
    expect(await codeOf(() => alloc(["10.1.0.0/16"], [], "10.1.0"))).toBe("invalid_network");
  });
  it("/31 and /32 use every address", async () => {
    expect(await alloc(["10.9.0.0/31"], ["10.9.0.0/31"])).toEqual(["10.9.0.1/31"]);
    expect(await alloc(["10.9.0.5/32"])).toEqual(["10.9.0.5/32"]);
  });
  it("the hint skips taken addresses: keys read per allocation do not grow with the network", async () => {
    const book = new MemoryBook();
    const cidrs = ["10.0.0.0/16", "fd00::/64"];
    for (let i = 0; i < 2000; i++) await book.take(cidrs);
    const before = book.keysRead;
    expect(await book.take(cidrs)).toEqual(["10.0.7.209/16", "fd00::7d1/64"]);
    expect(book.keysRead - before).toBe(0);
    // explicit addresses above the hint are stepped over once
    await book.take(cidrs, "10.0.7.211");
    await book.take(cidrs, "10.0.7.212");
    expect(await book.take(cidrs)).toEqual(["10.0.7.210/16", "fd00::7d4/64"]);
    expect(await book.take(cidrs)).toEqual(["10.0.7.213/16", "fd00::7d5/64"]);
  });
  it("without a hint (a migrated network) it walks the used run and finds the first gap", async () => {
    const used = Array.from({ length: 100 }, (_, i) => `10.3.0.${i + 1}/16`).filter(
      (a) => a !== "10.3.0.77/16",
    );
    expect(await alloc(["10.3.0.0/16"], used)).toEqual(["10.3.0.77/16"]);
    expect(await alloc(["10.3.0.0/16"], used.concat("10.3.0.77/16"))).toEqual(["10.3.0.101/16"]);
  });
});
