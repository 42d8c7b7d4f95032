// Overlay address allocation: lowest free, explicit, taken, outside, full, IPv4 and IPv6.
import { describe, expect, it } from "vitest";
import { isKeyholeError } from "../../core/errors.ts";
import { allocateAddress, canonicalNetworkCidrs } from "./addresses.ts";

function codeOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    if (isKeyholeError(e)) return e.code;
    throw e;
  }
  return "no error";
}

describe("canonicalNetworkCidrs", () => {
  it("clears host bits and drops duplicates", () => {
    expect(canonicalNetworkCidrs(["10.1.2.3/16", "10.1.0.0/16", "fd00:0:0:0::5/64"])).toEqual([
      "10.1.0.0/16",
      "fd00::/64",
    ]);
  });
  it("refuses text that is not a CIDR", () => {
    expect(codeOf(() => canonicalNetworkCidrs(["10.1.0.0"]))).toBe("invalid_network");
    expect(codeOf(() => canonicalNetworkCidrs(["10.1.0.300/16"]))).toBe("invalid_network");
    expect(codeOf(() => canonicalNetworkCidrs([]))).toBe("invalid_network");
  });
});

describe("allocateAddress", () => {
  it("IPv4: lowest free, skipping the network address, with the network prefix", () => {
    expect(allocateAddress(["10.1.0.0/16"], new Set())).toBe("10.1.0.1/16");
    expect(allocateAddress(["10.1.0.0/16"], new Set(["10.1.0.1/16", "10.1.0.3/16"]))).toBe(
      "10.1.0.2/16",
    );
  });
  it("IPv4 /30: two hosts, then network_full (network and broadcast never handed out)", () => {
    const used = new Set<string>();
    used.add(allocateAddress(["192.168.7.0/30"], used));
    used.add(allocateAddress(["192.168.7.0/30"], used));
    expect([...used]).toEqual(["192.168.7.1/30", "192.168.7.2/30"]);
    expect(codeOf(() => allocateAddress(["192.168.7.0/30"], used))).toBe("network_full");
  });
  it("moves on to the next CIDR of the network when the first is full", () => {
    const used = new Set(["192.168.7.1/30", "192.168.7.2/30"]);
    expect(allocateAddress(["192.168.7.0/30", "fd00:1::/120"], used)).toBe("fd00:1::1/120");
  });
  it("IPv6: lowest free after the subnet-router anycast address, RFC 5952 text", () => {
    expect(allocateAddress(["fd00:44::/64"], new Set())).toBe("fd00:44::1/64");
    expect(allocateAddress(["fd00:44::/64"], new Set(["fd00:44::1/64"]))).toBe("fd00:44::2/64");
    expect(allocateAddress(["fd00:44::/126"], new Set(["fd00:44::1/126", "fd00:44::2/126"]))).toBe(
      "fd00:44::3/126",
    );
  });
  it("explicit address: bare or with the network prefix, canonicalised", () => {
    expect(allocateAddress(["10.1.0.0/16"], new Set(), "10.1.9.9")).toBe("10.1.9.9/16");
    expect(allocateAddress(["10.1.0.0/16"], new Set(), "10.1.9.9/16")).toBe("10.1.9.9/16");
    expect(allocateAddress(["fd00::/64"], new Set(), "fd00:0000::00a")).toBe("fd00::a/64");
  });
  it("explicit address taken => ip_taken (also when written differently)", () => {
    expect(
      codeOf(() => allocateAddress(["10.1.0.0/16"], new Set(["10.1.9.9/16"]), "10.1.9.9")),
    ).toBe("ip_taken");
    expect(
      codeOf(() => allocateAddress(["fd00::/64"], new Set(["fd00::a/64"]), "fd00:0::0:a")),
    ).toBe("ip_taken");
  });
  it("explicit address outside, with another prefix, or network/broadcast => ip_outside_network", () => {
    expect(codeOf(() => allocateAddress(["10.1.0.0/16"], new Set(), "10.2.0.1"))).toBe(
      "ip_outside_network",
    );
    expect(codeOf(() => allocateAddress(["10.1.0.0/16"], new Set(), "fd00::1"))).toBe(
      "ip_outside_network",
    );
    expect(codeOf(() => allocateAddress(["10.1.0.0/16"], new Set(), "10.1.0.7/24"))).toBe(
      "ip_outside_network",
    );
    expect(codeOf(() => allocateAddress(["10.1.0.0/16"], new Set(), "10.1.0.0"))).toBe(
      "ip_outside_network",
    );
    expect(codeOf(() => allocateAddress(["10.1.0.0/16"], new Set(), "10.1.255.255"))).toBe(
      "ip_outside_network",
    );
  });
  it("explicit text that is not an address => invalid_network", () => {
    expect(codeOf(() => allocateAddress(["10.1.0.0/16"], new Set(), "10.1.0"))).toBe(
      "invalid_network",
    );
  });
  it("/31 and /32 use every address", () => {
    expect(allocateAddress(["10.9.0.0/31"], new Set(["10.9.0.0/31"]))).toBe("10.9.0.1/31");
    expect(allocateAddress(["10.9.0.5/32"], new Set())).toBe("10.9.0.5/32");
  });
});
