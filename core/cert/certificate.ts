/**
 * One certificate model over both wire versions: decode (strict, CertError only), encode,
 * fingerprint, the rules Nebula applies to every certificate's details, and the JSON that
 * `nebula-cert print -json` (1.11) shows.
 */
import { bytesToHex } from "@noble/hashes/utils.js";
import { bytesEqual } from "./der.ts";
import { CertError } from "./errors.ts";
import { type Cidr, compareCidr, formatCidr, is4In6, isUnspecified, parseCidr } from "./ip.ts";
import { sha256HexOf } from "./native.ts";
import {
  type CertVersion,
  CURVE_WIRE,
  type Curve,
  type NebulaCertificate,
  type WireDetails,
} from "./types.ts";
import { decodeV1, encodeV1, encodeV1Details, encodeV1FromDetails } from "./v1.ts";
import {
  decodeV2,
  encodeV2,
  encodeV2Details,
  encodeV2SigningParts,
  MAX_NAME_LENGTH,
  v2FingerprintInput,
} from "./v2.ts";

export type { WireDetails };

export const PUBLIC_KEY_LENGTH: Record<Curve, number> = { CURVE25519: 32, P256: 65 };

const utf8 = new TextEncoder();

function invalid(message: string): CertError {
  return new CertError("invalid_details", message);
}

/**
 * The rules Nebula's validate() applies for the version (cert_v1.go, cert_v2.go), plus the key
 * length for the curve. v2 networks must already be sorted (Nebula sorts before signing).
 */
export function checkWireDetails(version: CertVersion, d: WireDetails): void {
  if (
    d.publicKey.length !== PUBLIC_KEY_LENGTH[d.curve] ||
    (d.curve === "P256" && d.publicKey[0] !== 4)
  ) {
    throw new CertError(
      "invalid_public_key",
      `the public key must be ${PUBLIC_KEY_LENGTH[d.curve]} bytes${d.curve === "P256" ? " (an uncompressed P-256 point)" : ""}`,
    );
  }
  if (!d.isCA && d.networks.length === 0) {
    throw invalid("a host certificate needs at least one network (its overlay address)");
  }
  if (d.issuer.length > 0 && d.isCA && version === 2)
    throw invalid("a CA certificate has no issuer");
  for (const n of d.networks) {
    if (version === 1 && n.family !== 4) {
      throw new CertError(
        "invalid_network",
        `network ${formatCidr(n)}: v1 certificates hold IPv4 only`,
      );
    }
    if (isUnspecified(n)) {
      throw new CertError(
        "invalid_network",
        `network ${formatCidr(n)}: the zero address is not allowed`,
      );
    }
    if (version === 2 && is4In6(n)) {
      throw new CertError(
        "invalid_network",
        `network ${formatCidr(n)}: IPv4-mapped IPv6 is not allowed`,
      );
    }
  }
  for (const n of d.unsafeNetworks) {
    if (version === 1 && n.family !== 4) {
      throw new CertError(
        "invalid_network",
        `unsafe network ${formatCidr(n)}: v1 certificates hold IPv4 only`,
      );
    }
  }
  if (version === 2) {
    if (d.name.length === 0) throw invalid("the name must not be empty");
    if (d.name.length * 3 > MAX_NAME_LENGTH && utf8.encode(d.name).length > MAX_NAME_LENGTH) {
      throw invalid(`the name must be at most ${MAX_NAME_LENGTH} bytes`);
    }
    for (const g of d.groups) if (g.length === 0) throw invalid("groups must not be empty strings");
    strictlyAscending(d.networks, "network");
    strictlyAscending(d.unsafeNetworks, "unsafe network");
    if (!d.isCA) {
      const has4 = d.networks.some((n) => n.family === 4);
      const has6 = d.networks.some((n) => n.family === 6);
      for (const u of d.unsafeNetworks) {
        if (u.family === 6 && !has6) {
          throw new CertError(
            "invalid_network",
            `unsafe network ${formatCidr(u)} needs an IPv6 network`,
          );
        }
        if (u.family === 4 && !has4) {
          throw new CertError(
            "invalid_network",
            `unsafe network ${formatCidr(u)} needs an IPv4 network`,
          );
        }
      }
    }
  }
}

function strictlyAscending(list: Cidr[], what: string): void {
  for (let i = 1; i < list.length; i++) {
    const c = compareCidr(list[i - 1] as Cidr, list[i] as Cidr);
    if (c === 0)
      throw new CertError("invalid_network", `duplicate ${what} ${formatCidr(list[i] as Cidr)}`);
    if (c > 0) throw invalid(`${what}s are not in Nebula's order`);
  }
}

function hexToBytes(hex: string, what: string): Uint8Array {
  if (hex.length % 2 !== 0 || !/^[0-9a-f]*$/.test(hex))
    throw invalid(`${what} must be lowercase hex`);
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}

function toDate(seconds: number): Date {
  return new Date(seconds * 1000);
}

/** Whole seconds of a Date, as Go's time.Unix() truncates. */
export function unixSeconds(d: Date, what: string): number {
  const ms = d instanceof Date ? d.getTime() : Number.NaN;
  if (!Number.isFinite(ms)) throw invalid(`${what} is not a valid date`);
  return Math.floor(ms / 1000);
}

/** The model's fields in wire form (parses network text). */
export function wireDetailsOf(
  c: Omit<NebulaCertificate, "signature" | "fingerprint" | "raw">,
): WireDetails {
  return {
    name: c.name,
    networks: c.networks.map(parseCidr),
    unsafeNetworks: c.unsafeNetworks.map(parseCidr),
    groups: [...c.groups],
    isCA: c.isCA,
    notBefore: unixSeconds(c.notBefore, "notBefore"),
    notAfter: unixSeconds(c.notAfter, "notAfter"),
    issuer: hexToBytes(c.issuer, "issuer"),
    publicKey: c.publicKey,
    curve: c.curve,
  };
}

function model(
  version: CertVersion,
  d: WireDetails,
  signature: Uint8Array,
  raw: Uint8Array,
  fingerprint: string,
  issuerHex?: string,
): NebulaCertificate {
  return {
    version,
    name: d.name,
    networks: d.networks.map(formatCidr),
    unsafeNetworks: d.unsafeNetworks.map(formatCidr),
    groups: d.groups,
    isCA: d.isCA,
    notBefore: toDate(d.notBefore),
    notAfter: toDate(d.notAfter),
    issuer: issuerHex ?? bytesToHex(d.issuer),
    publicKey: d.publicKey,
    curve: d.curve,
    signature,
    fingerprint,
    raw,
  };
}

/** Seals wire details and a signature into a certificate (raw bytes and fingerprint computed). */
export function assembleCertificate(
  version: CertVersion,
  d: WireDetails,
  signature: Uint8Array,
  rawDetails?: Uint8Array,
  issuerHex?: string,
): NebulaCertificate {
  // A synchronous hash (native.ts): a WebCrypto digest costs several times more for inputs this small.
  if (version === 1) {
    const raw = encodeV1(d, signature);
    return model(1, d, signature, raw, sha256HexOf(raw), issuerHex);
  }
  const details = rawDetails ?? encodeV2Details(d);
  const raw = encodeV2(details, d.curve, d.publicKey, signature);
  const fp = sha256HexOf(v2FingerprintInput(details, d.curve, d.publicKey, signature));
  return model(2, d, signature, raw, fp, issuerHex);
}

/** What a signing needs: the bytes to sign and the encoded details they start with. */
export interface SigningParts {
  toSign: Uint8Array;
  /** v1: the marshalled details; v2: the DER details element. */
  details: Uint8Array;
}

export function v1SigningParts(d: WireDetails): SigningParts {
  const details = encodeV1Details(d);
  return { toSign: details, details };
}

export function v2SigningMessageParts(d: WireDetails): SigningParts {
  return encodeV2SigningParts(d);
}

/**
 * Everything about a certificate that does not depend on its signature, computed up front (the
 * signing hot path does this while the signature is being made). Returns the function that seals
 * the certificate once the signature is known.
 */
export function prepareCertificate(
  version: CertVersion,
  d: WireDetails,
  parts: SigningParts,
  issuerHex: string,
): (signature: Uint8Array) => NebulaCertificate {
  const base = model(version, d, new Uint8Array(0), new Uint8Array(0), "", issuerHex);
  if (version === 1) {
    // RawNebulaCertificate: field 1 = details, field 2 = signature; fingerprint = sha256(all).
    return (signature) => {
      base.signature = signature;
      base.raw = encodeV1FromDetails(parts.details, signature);
      base.fingerprint = sha256HexOf(base.raw);
      return base;
    };
  }
  return (signature) => {
    base.signature = signature;
    base.raw = encodeV2(parts.details, d.curve, d.publicKey, signature);
    base.fingerprint = sha256HexOf(parts.toSign, signature);
    return base;
  };
}

/**
 * Decodes a marshalled certificate (a PEM body) of the given version. Accepts only what Nebula
 * would accept, in the canonical encoding Nebula writes; throws CertError and nothing else.
 */
export function decodeCertificate(raw: Uint8Array, version: CertVersion): NebulaCertificate {
  try {
    if (!(raw instanceof Uint8Array))
      throw new CertError("malformed_certificate", "expected bytes");
    if (version !== 1 && version !== 2) {
      throw new CertError(
        "unsupported_version",
        `certificate version ${String(version)} is not 1 or 2`,
      );
    }
    const copy = raw.slice();
    let cert: NebulaCertificate;
    let d: WireDetails;
    if (version === 1) {
      const decoded = decodeV1(copy);
      d = decoded.fields;
      checkDecoded(1, d);
      cert = assembleCertificate(1, d, decoded.signature);
    } else {
      const decoded = decodeV2(copy);
      d = decoded.fields;
      checkDecoded(2, d);
      if (!bytesEqual(encodeV2Details(d), decoded.rawDetails)) {
        throw new CertError(
          "malformed_certificate",
          "v2 details are not in the encoding Nebula writes",
        );
      }
      cert = assembleCertificate(2, d, decoded.signature, decoded.rawDetails);
    }
    if (!bytesEqual(cert.raw, copy)) {
      throw new CertError(
        "malformed_certificate",
        `v${version} certificate is not in the encoding Nebula writes`,
      );
    }
    cert.raw = copy;
    return cert;
  } catch (e) {
    if (e instanceof CertError) throw e;
    throw new CertError("malformed_certificate", "certificate bytes could not be read", {
      cause: e,
    });
  }
}

function checkDecoded(version: CertVersion, d: WireDetails): void {
  try {
    checkWireDetails(version, d);
  } catch (e) {
    if (e instanceof CertError) {
      throw new CertError(
        "malformed_certificate",
        `Nebula would refuse this certificate: ${e.message}`,
      );
    }
    throw e;
  }
}

/** The marshalled bytes of a certificate; equals `cert.raw` for decoded and signed certificates. */
export function encodeCertificate(cert: NebulaCertificate): Uint8Array {
  if (cert.version !== 1 && cert.version !== 2) {
    throw new CertError(
      "unsupported_version",
      `certificate version ${String(cert.version)} is not 1 or 2`,
    );
  }
  const d = wireDetailsOf(cert);
  if (cert.version === 2) {
    d.networks.sort(compareCidr);
    d.unsafeNetworks.sort(compareCidr);
  }
  checkWireDetails(cert.version, d);
  return assembleCertificate(cert.version, d, cert.signature).raw;
}

/** Recomputes a fingerprint for other signature bytes (P-256 signatures have two valid forms). */
export function fingerprintWithSignature(cert: NebulaCertificate, signature: Uint8Array): string {
  const d = wireDetailsOf(cert);
  if (cert.version === 1) return sha256HexOf(encodeV1(d, signature));
  return sha256HexOf(v2FingerprintInput(encodeV2Details(d), d.curve, d.publicKey, signature));
}

function goTime(d: Date): string {
  return d.toISOString().replace(".000Z", "Z");
}

const hex = (b: Uint8Array) => bytesToHex(b);

/** Exactly one element of `nebula-cert print -json` (Nebula 1.11) for this certificate. */
export function certificateToPrintJson(cert: NebulaCertificate): unknown {
  if (cert.version === 1) {
    return {
      details: {
        curve: cert.curve,
        groups: [...cert.groups],
        isCa: cert.isCA,
        issuer: cert.issuer,
        name: cert.name,
        networks: [...cert.networks],
        notAfter: goTime(cert.notAfter),
        notBefore: goTime(cert.notBefore),
        publicKey: hex(cert.publicKey),
        unsafeNetworks: [...cert.unsafeNetworks],
      },
      fingerprint: cert.fingerprint,
      signature: hex(cert.signature),
      version: 1,
    };
  }
  const orNull = (l: string[]) => (l.length === 0 ? null : [...l]);
  return {
    curve: cert.curve,
    details: {
      groups: orNull(cert.groups),
      isCa: cert.isCA,
      issuer: cert.issuer,
      name: cert.name,
      networks: orNull(cert.networks),
      notAfter: goTime(cert.notAfter),
      notBefore: goTime(cert.notBefore),
      unsafeNetworks: orNull(cert.unsafeNetworks),
    },
    fingerprint: cert.fingerprint,
    publicKey: hex(cert.publicKey),
    signature: hex(cert.signature),
    version: 2,
  };
}

export { CURVE_WIRE };
