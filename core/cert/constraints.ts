/**
 * What a CA allows the certificates it signs, as Nebula's checkCAConstraints enforces: validity
 * inside the CA's window, groups from the CA's list, networks and unsafe networks inside the
 * CA's. Used both when signing (refuse before signing) and when verifying.
 */
import { CertError } from "./errors.ts";
import { type Cidr, cidrContains, formatCidr, parseCidr } from "./ip.ts";
import type { NebulaCertificate } from "./types.ts";

interface CaLimits {
  notBefore: number;
  notAfter: number;
  groups: Set<string>;
  networks: Cidr[];
  unsafeNetworks: Cidr[];
}

// Parsed once per CA object: signing many certificates with one CA should not re-parse it.
const limitsCache = new WeakMap<NebulaCertificate, CaLimits>();

function limitsOf(ca: NebulaCertificate): CaLimits {
  let l = limitsCache.get(ca);
  if (!l) {
    l = {
      notBefore: ca.notBefore.getTime(),
      notAfter: ca.notAfter.getTime(),
      groups: new Set(ca.groups),
      networks: ca.networks.map(parseCidr),
      unsafeNetworks: ca.unsafeNetworks.map(parseCidr),
    };
    limitsCache.set(ca, l);
  }
  return l;
}

export interface ConstrainedDetails {
  /** Milliseconds since the epoch. */
  notBefore: number;
  notAfter: number;
  groups: string[];
  networks: Cidr[];
  unsafeNetworks: Cidr[];
}

/** Throws the CertError naming the first constraint of `ca` that `d` breaks. */
export function checkCaConstraints(ca: NebulaCertificate, d: ConstrainedDetails): void {
  const l = limitsOf(ca);
  if (d.notAfter > l.notAfter) {
    throw new CertError(
      "validity_exceeds_ca",
      `the certificate would expire after its CA (${ca.notAfter.toISOString()}); shorten the duration or rotate the CA`,
    );
  }
  if (d.notBefore < l.notBefore) {
    throw new CertError(
      "validity_exceeds_ca",
      `the certificate would be valid before its CA (${ca.notBefore.toISOString()})`,
    );
  }
  if (l.groups.size > 0) {
    for (const g of d.groups) {
      if (!l.groups.has(g)) {
        throw new CertError(
          "group_not_allowed",
          `group ${JSON.stringify(g)} is not allowed by the CA; allowed groups: ${[...l.groups].join(", ")}`,
        );
      }
    }
  }
  if (l.networks.length > 0) {
    for (const n of d.networks) {
      if (!l.networks.some((caNet) => cidrContains(caNet, n))) {
        throw new CertError(
          "network_not_allowed",
          `network ${formatCidr(n)} is outside the CA's networks (${l.networks.map(formatCidr).join(", ")})`,
        );
      }
    }
  }
  if (l.unsafeNetworks.length > 0) {
    for (const n of d.unsafeNetworks) {
      if (!l.unsafeNetworks.some((caNet) => cidrContains(caNet, n))) {
        throw new CertError(
          "unsafe_network_not_allowed",
          `unsafe network ${formatCidr(n)} is outside the CA's unsafe networks (${l.unsafeNetworks.map(formatCidr).join(", ")})`,
        );
      }
    }
  }
}
