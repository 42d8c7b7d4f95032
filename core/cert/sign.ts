/**
 * Signing certificates as Nebula does for each version. Everything verification would refuse is
 * refused first, with a CertError naming the constraint, so a signature is never spent on a
 * certificate that Nebula would reject.
 */
import {
  checkWireDetails,
  prepareCertificate,
  unixSeconds,
  v1SigningParts,
  v2SigningMessageParts,
  type WireDetails,
} from "./certificate.ts";
import { checkCaConstraints } from "./constraints.ts";
import { bytesEqual } from "./der.ts";
import { CertError } from "./errors.ts";
import { type Cidr, compareCidr, parseCidr } from "./ip.ts";
import { checkPublicKey } from "./keys.ts";
import { type CaSigner, normalizeLowS, producesLowS } from "./signer.ts";
import type { CertificateDetails, NebulaCertificate } from "./types.ts";

function invalid(message: string): CertError {
  return new CertError("invalid_details", message);
}

// Issuer bytes per CA certificate, decoded once.
const issuerCache = new WeakMap<NebulaCertificate, Uint8Array>();

function issuerBytesOf(ca: NebulaCertificate): Uint8Array {
  let b = issuerCache.get(ca);
  if (!b) {
    const hex = ca.fingerprint;
    if (!/^[0-9a-f]{64}$/.test(hex))
      throw invalid("the CA fingerprint is not 64 lowercase hex digits");
    b = new Uint8Array(32);
    for (let i = 0; i < 32; i++) b[i] = Number.parseInt(hex.slice(i * 2, i * 2 + 2), 16);
    issuerCache.set(ca, b);
  }
  return b;
}

function parseList(list: unknown, what: string): Cidr[] {
  if (!Array.isArray(list)) throw invalid(`${what} must be a list`);
  return list.map((t) => parseCidr(t as string));
}

/**
 * Signs `details` as Nebula does for the version. `ca` null => a self-signed CA (details.isCA
 * true, signed by its own key). Sets `issuer` from the CA. v2 networks come back in Nebula's order.
 */
export async function signCertificate(
  details: Omit<CertificateDetails, "issuer">,
  ca: NebulaCertificate | null,
  signer: CaSigner,
): Promise<NebulaCertificate> {
  const { version, curve } = details;
  if (version !== 1 && version !== 2) {
    throw new CertError(
      "unsupported_version",
      `certificate version ${String(version)} is not 1 or 2`,
    );
  }
  if (curve !== "CURVE25519" && curve !== "P256") {
    throw new CertError("wrong_curve", `unknown curve ${String(curve)}`);
  }
  if (signer.curve !== curve) {
    throw new CertError(
      "wrong_curve",
      `the certificate is ${curve} but the signing key is ${signer.curve}`,
    );
  }
  if (typeof details.name !== "string") throw invalid("name must be a string");
  if (!Array.isArray(details.groups) || details.groups.some((g) => typeof g !== "string")) {
    throw invalid("groups must be a list of strings");
  }
  let issuer: Uint8Array;
  if (ca === null) {
    if (!details.isCA)
      throw invalid("a certificate without a CA must be a self-signed CA (isCA true)");
    if (!bytesEqual(signer.publicKey, details.publicKey)) {
      throw new CertError("key_mismatch", "a self-signed CA must be signed by its own key");
    }
    issuer = new Uint8Array(0);
  } else {
    if (details.isCA) throw invalid("a CA certificate cannot be signed by another CA");
    if (!ca.isCA)
      throw new CertError("not_a_ca", `${JSON.stringify(ca.name)} is not a CA certificate`);
    if (ca.curve !== curve) {
      throw new CertError("wrong_curve", `the host key is ${curve} but the CA is ${ca.curve}`);
    }
    if (!bytesEqual(signer.publicKey, ca.publicKey)) {
      throw new CertError("key_mismatch", "the signing key does not belong to the CA certificate");
    }
    issuer = issuerBytesOf(ca);
  }
  checkPublicKey(curve, details.publicKey, details.isCA);

  const d: WireDetails = {
    name: details.name,
    networks: parseList(details.networks, "networks"),
    unsafeNetworks: parseList(details.unsafeNetworks, "unsafeNetworks"),
    groups: [...details.groups],
    isCA: details.isCA,
    notBefore: unixSeconds(details.notBefore, "notBefore"),
    notAfter: unixSeconds(details.notAfter, "notAfter"),
    issuer,
    publicKey: details.publicKey,
    curve,
  };
  if (d.notAfter <= d.notBefore) throw invalid("notAfter must be later than notBefore");
  if (version === 2) {
    d.networks.sort(compareCidr);
    d.unsafeNetworks.sort(compareCidr);
  } else if (!d.isCA && d.networks.length > 1) {
    throw new CertError(
      "invalid_network",
      "a v1 host certificate holds exactly one IPv4 network; use certificate version 2 for more",
    );
  }
  checkWireDetails(version, d);
  if (ca !== null) {
    checkCaConstraints(ca, {
      notBefore: d.notBefore * 1000,
      notAfter: d.notAfter * 1000,
      groups: d.groups,
      networks: d.networks,
      unsafeNetworks: d.unsafeNetworks,
    });
  }

  // Start the signature first; while it is computed (off the main thread where the runtime allows),
  // prepare everything that does not depend on it: the encoding prefix, its hash, the model.
  const message = version === 1 ? v1SigningParts(d) : v2SigningMessageParts(d);
  const pending = signer.sign(message.toSign);
  pending.catch(() => undefined);
  const sealed = prepareCertificate(version, d, message, ca === null ? "" : ca.fingerprint);
  let signature = await pending;
  if (!(signature instanceof Uint8Array) || signature.length === 0) {
    throw new CertError("bad_signature", "the signer returned no signature");
  }
  if (curve === "P256" && !producesLowS(signer)) signature = normalizeLowS(signature);
  return sealed(signature);
}
