/**
 * Addresses and prefixes read, printed and ordered as Go's net/netip does (Nebula prints networks
 * with it), and the containment rule CA constraints use.
 */
import { describe, expect, it } from "vitest";
import { CertError } from "./errors.ts";
import {
  cidrContains,
  cidrContainsIp,
  compareCidr,
  formatCidr,
  networkOf,
  parseCidr,
  parseIp,
} from "./ip.ts";

describe("parseCidr / formatCidr", () => {
  it.each([
    ["10.42.1.7/16", "10.42.1.7/16"],
    ["0.0.0.0/0", "0.0.0.0/0"],
    ["fd00:44::34/64", "fd00:44::34/64"],
    ["FD00:0044:0000:0000:0000:0000:0000:0034/64", "fd00:44::34/64"],
    ["2001:db8:0:1:0:0:0:1/128", "2001:db8:0:1::1/128"], // longest zero run
    ["2001:db8:0:0:1:0:0:1/64", "2001:db8::1:0:0:1/64"], // first of equal runs
    ["2001:db8:0:1:1:1:1:1/64", "2001:db8:0:1:1:1:1:1/64"], // a single zero group stays
    ["::/0", "::/0"],
    ["::1/128", "::1/128"],
    ["fe80::/10", "fe80::/10"],
    ["::ffff:10.1.2.3/120", "::ffff:10.1.2.3/120"], // IPv4-mapped prints as Go does
    ["64:ff9b::192.0.2.33/96", "64:ff9b::c000:221/96"],
  ])("%s prints as %s", (input, printed) => {
    expect(formatCidr(parseCidr(input))).toBe(printed);
  });

  it.each([
    "10.42.1.7",
    "10.42.1.7/33",
    "10.42.1.7/016",
    "010.42.1.7/16",
    "10.42.1/16",
    "10.42.1.256/16",
    "fd00::44::1/64",
    "fd00::1/129",
    "fe80::1%eth0/64",
    "1:2:3:4:5:6:7:8:9/64",
    "1:2:3:4:5:6:7/64",
    "12345::/16",
    "1.2.3.4::/64",
    " 10.0.0.1/8",
    "",
  ])("refuses %j with invalid_network", (input) => {
    expect(() => parseCidr(input)).toThrow(CertError);
    try {
      parseCidr(input);
    } catch (e) {
      expect((e as CertError).code).toBe("invalid_network");
      expect((e as CertError).message).toMatch(/10\.42\.1\.7\/16/);
    }
  });
});

describe("containment and order", () => {
  it("contains as Nebula's CA constraint check does", () => {
    const ca = parseCidr("10.42.0.0/16");
    expect(cidrContains(ca, parseCidr("10.42.1.7/16"))).toBe(true);
    expect(cidrContains(ca, parseCidr("10.42.1.7/24"))).toBe(true);
    expect(cidrContains(ca, parseCidr("10.42.1.7/8"))).toBe(false); // wider than the CA
    expect(cidrContains(ca, parseCidr("10.43.1.7/24"))).toBe(false);
    expect(cidrContains(ca, parseCidr("fd00::1/128"))).toBe(false);
    expect(cidrContains(parseCidr("fd00:44::/64"), parseCidr("fd00:44::34/64"))).toBe(true);
    expect(cidrContains(parseCidr("0.0.0.0/0"), parseCidr("192.0.2.1/32"))).toBe(true);
    expect(cidrContainsIp(parseCidr("10.42.7.7/16"), parseIp("10.42.200.1"))).toBe(true);
  });

  it("masks host bits for the network", () => {
    expect(formatCidr(networkOf(parseCidr("10.42.1.7/16")))).toBe("10.42.0.0/16");
    expect(formatCidr(networkOf(parseCidr("fd00:44::34/64")))).toBe("fd00:44::/64");
    expect(formatCidr(networkOf(parseCidr("10.42.1.7/20")))).toBe("10.42.0.0/20");
  });

  it("orders IPv4 before IPv6, then by address, then by prefix", () => {
    const sorted = ["fd00::1/64", "10.0.0.2/8", "10.0.0.1/16", "10.0.0.1/8", "::ffff:1.2.3.4/128"]
      .map(parseCidr)
      .sort(compareCidr)
      .map(formatCidr);
    expect(sorted).toEqual([
      "10.0.0.1/8",
      "10.0.0.1/16",
      "10.0.0.2/8",
      "::ffff:1.2.3.4/128",
      "fd00::1/64",
    ]);
  });
});
