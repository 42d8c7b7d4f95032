/**
 * The one error type of the certificate library. Every refusal carries a stable `code` that callers
 * switch on (the signer maps it to an API error with `apiCodeOf`); messages say what was wrong and,
 * for input, what to do. Messages never contain key material.
 */
import type { ErrorCode } from "../contract/errors.ts";

/**
 * Every reason core/cert refuses something. Stable: callers and tests switch on these.
 *
 * - malformed_certificate: bytes are not a certificate Nebula would read (or not in its canonical encoding)
 * - malformed_pem: no PEM block, bad base64, text outside blocks, or an unexpected banner
 * - unsupported_version: certificate version other than 1 or 2
 * - invalid_public_key: wrong length, point not on the curve, compressed point, small-order X25519 point
 * - invalid_private_key: wrong length or out-of-range scalar
 * - key_mismatch: a private key that does not belong to the certificate's public key
 * - wrong_curve: a key or certificate on a different curve than the CA
 * - bad_signature: the signature does not verify under the CA key
 * - expired / not_yet_valid: the certificate is outside its validity window at the given time
 * - ca_expired / ca_not_yet_valid: the signing CA is outside its validity window at the given time
 * - ca_not_found: no trusted CA has the certificate's issuer fingerprint
 * - not_a_ca: a non-CA certificate where a CA was required (pool member, signing CA)
 * - ca_not_self_signed: a CA whose self-signature does not verify
 * - blocked: the certificate's fingerprint (either P-256 signature form) is on the blocklist
 * - group_not_allowed: a group the signing CA does not list
 * - network_not_allowed: a network outside every network of the signing CA
 * - unsafe_network_not_allowed: an unsafe network outside every unsafe network of the signing CA
 * - validity_exceeds_ca: notBefore before, or notAfter after, the signing CA's window
 * - invalid_network: text that is not an address with a prefix, or a network the version cannot hold
 * - invalid_details: other details Nebula would refuse (name, groups, times, CA flags, duplicates)
 * - wrong_passphrase: the passphrase does not open the encrypted key (or the ciphertext was altered)
 * - unsupported_encryption: an encrypted key with an algorithm or KDF version Nebula does not write
 */
export type CertErrorCode =
  | "malformed_certificate"
  | "malformed_pem"
  | "unsupported_version"
  | "invalid_public_key"
  | "invalid_private_key"
  | "key_mismatch"
  | "wrong_curve"
  | "bad_signature"
  | "expired"
  | "not_yet_valid"
  | "ca_expired"
  | "ca_not_yet_valid"
  | "ca_not_found"
  | "not_a_ca"
  | "ca_not_self_signed"
  | "blocked"
  | "group_not_allowed"
  | "network_not_allowed"
  | "unsafe_network_not_allowed"
  | "validity_exceeds_ca"
  | "invalid_network"
  | "invalid_details"
  | "wrong_passphrase"
  | "unsupported_encryption";

export class CertError extends Error {
  readonly code: CertErrorCode;

  constructor(code: CertErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "CertError";
    this.code = code;
  }
}

export function isCertError(e: unknown): e is CertError {
  return e instanceof CertError;
}

/** The public API code for each certificate error, so the wire mapping lives in one table. */
const API_CODE: Record<CertErrorCode, ErrorCode> = {
  malformed_certificate: "invalid_request",
  malformed_pem: "invalid_request",
  unsupported_version: "invalid_request",
  invalid_public_key: "invalid_public_key",
  invalid_private_key: "invalid_request",
  key_mismatch: "invalid_request",
  wrong_curve: "wrong_curve",
  bad_signature: "invalid_request",
  expired: "constraint_violation",
  not_yet_valid: "constraint_violation",
  ca_expired: "constraint_violation",
  ca_not_yet_valid: "constraint_violation",
  ca_not_found: "not_found",
  not_a_ca: "invalid_request",
  ca_not_self_signed: "invalid_request",
  blocked: "host_blocked",
  group_not_allowed: "unknown_group",
  network_not_allowed: "ip_outside_network",
  unsafe_network_not_allowed: "constraint_violation",
  validity_exceeds_ca: "constraint_violation",
  invalid_network: "invalid_network",
  invalid_details: "invalid_request",
  wrong_passphrase: "forbidden",
  unsupported_encryption: "invalid_request",
};

export function apiCodeOf(code: CertErrorCode): ErrorCode {
  return API_CODE[code];
}
