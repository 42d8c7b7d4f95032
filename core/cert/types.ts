/**
 * The shape of a Nebula certificate as the rest of Keyhole sees it: one model for both wire
 * versions, with networks as CIDR text and times as whole-second Dates.
 */

import type { Cidr } from "./ip.ts";

export type Curve = "CURVE25519" | "P256";
export type CertVersion = 1 | 2;

export interface CertificateDetails {
  version: CertVersion;
  name: string;
  /** CIDR text with the host address, e.g. "10.42.1.7/16", "fd00:44::34/64". */
  networks: string[];
  /** CIDR text, e.g. "192.0.2.0/24". */
  unsafeNetworks: string[];
  groups: string[];
  isCA: boolean;
  /** Whole seconds. */
  notBefore: Date;
  notAfter: Date;
  /** Lowercase hex fingerprint of the signing CA; "" for a self-signed CA. */
  issuer: string;
  /** 32 bytes (Curve25519) or a 65-byte uncompressed P-256 point. */
  publicKey: Uint8Array;
  curve: Curve;
}

export interface NebulaCertificate extends CertificateDetails {
  signature: Uint8Array;
  /** Lowercase hex sha256 as Nebula computes it for the version. */
  fingerprint: string;
  /** The exact marshalled bytes (what the PEM body holds). */
  raw: Uint8Array;
}

/** Wire value of each curve (Nebula's protobuf enum and ASN.1 ENUMERATED agree). */
export const CURVE_WIRE: Record<Curve, number> = { CURVE25519: 0, P256: 1 };

export function curveFromWire(n: number): Curve | undefined {
  return n === 0 ? "CURVE25519" : n === 1 ? "P256" : undefined;
}

/**
 * Certificate details in wire form, as both encodings carry them: parsed networks, whole seconds,
 * issuer bytes (the CA's fingerprint, empty for a self-signed CA).
 */
export interface WireDetails {
  name: string;
  networks: Cidr[];
  unsafeNetworks: Cidr[];
  groups: string[];
  isCA: boolean;
  notBefore: number;
  notAfter: number;
  issuer: Uint8Array;
  publicKey: Uint8Array;
  curve: Curve;
}
