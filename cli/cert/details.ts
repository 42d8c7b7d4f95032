/**
 * Reading nebula-cert's certificate flags (-curve, -version, -networks, -unsafe-networks, -groups)
 * into what core/cert signs, with nebula-cert's error messages so that scripts see the same failures.
 */
import type { CertVersion, Curve } from "../../core/cert/index.ts";
import { type IpFamily, parseCidr } from "../../core/cert/ip.ts";
import { splitList, usageError } from "../args.ts";
import { certCliError } from "./io.ts";

export function parseCurve(text: string): Curve {
  switch (text) {
    case "25519":
    case "X25519":
    case "Curve25519":
    case "CURVE25519":
      return "CURVE25519";
    case "P256":
      return "P256";
    default:
      throw certCliError(`invalid curve: ${text} (use 25519 or P256)`);
  }
}

export function parseVersion(value: number, allowDefault: boolean): CertVersion | 0 {
  if (value === 1 || value === 2 || (allowDefault && value === 0)) return value;
  throw usageError("-version must be either 1 or 2");
}

export interface NetworkList {
  /** In the order given, each still holding its host bits ("10.42.1.7/16"). */
  all: string[];
  v4: string[];
  v6: string[];
}

/** Parses a comma-separated CIDR list; `flag` names the flag in the error ("networks"). */
export function parseNetworkList(text: string, flag: string): NetworkList {
  const list: NetworkList = { all: [], v4: [], v6: [] };
  for (const item of splitList(text)) {
    let family: IpFamily;
    try {
      family = parseCidr(item).family;
    } catch {
      throw usageError(`invalid -${flag} definition: ${item}`);
    }
    list.all.push(item);
    (family === 4 ? list.v4 : list.v6).push(item);
  }
  return list;
}

/** v1 certificates (and CAs) hold IPv4 only. */
export function refuseIpv6InV1(list: NetworkList, flag: string): void {
  const first = list.v6[0];
  if (first !== undefined) {
    throw usageError(
      `invalid -${flag} definition: v1 certificates can only be ipv4, have ${first}`,
    );
  }
}

/** Nebula stores whole seconds; certificates start at the current second. */
export function nowSeconds(): Date {
  return new Date(Math.floor(Date.now() / 1000) * 1000);
}
