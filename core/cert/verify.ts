/**
 * Trust: a pool of CA certificates keyed by fingerprint, and verification in Nebula's order
 * (ca_pool.go): blocklist, issuer in the pool, curve, CA valid now, certificate valid now,
 * signature, CA constraints, then the blocklist again under the other P-256 signature form.
 */
import { fingerprintWithSignature, wireDetailsOf } from "./certificate.ts";
import { checkCaConstraints } from "./constraints.ts";
import { CertError } from "./errors.ts";
import { parseCertificatesPem } from "./pem.ts";
import { swapS, verifyMessage, verifyMessageSync } from "./signer.ts";
import type { NebulaCertificate } from "./types.ts";
import { encodeV1Details } from "./v1.ts";
import { encodeV2Details, v2SigningMessage } from "./v2.ts";

export interface VerifyOptions {
  /** The time to check validity at; now when absent. */
  now?: Date;
  /** Fingerprints of certificates that must be refused. */
  blocklist?: Iterable<string>;
}

/** The bytes the CA signed for this certificate. */
export function signingMessageOf(cert: NebulaCertificate): Uint8Array {
  const d = wireDetailsOf(cert);
  if (cert.version === 1) return encodeV1Details(d);
  return v2SigningMessage(encodeV2Details(d), d.curve, d.publicKey);
}

/** True when `caPublicKey` signed `cert` (either S form for P-256, as Go accepts). */
export async function verifySignature(
  cert: NebulaCertificate,
  caPublicKey: Uint8Array,
): Promise<boolean> {
  let message: Uint8Array;
  try {
    message = signingMessageOf(cert);
  } catch {
    return false;
  }
  return verifyMessage(cert.curve, caPublicKey, message, cert.signature);
}

function checkValidAt(cert: NebulaCertificate, at: number, isCa: boolean): void {
  if (cert.notBefore.getTime() > at) {
    throw new CertError(
      isCa ? "ca_not_yet_valid" : "not_yet_valid",
      `${isCa ? "the CA" : "the certificate"} ${JSON.stringify(cert.name)} is not valid before ${cert.notBefore.toISOString()}`,
    );
  }
  if (cert.notAfter.getTime() < at) {
    throw new CertError(
      isCa ? "ca_expired" : "expired",
      `${isCa ? "the CA" : "the certificate"} ${JSON.stringify(cert.name)} expired at ${cert.notAfter.toISOString()}`,
    );
  }
}

export class CaPool {
  readonly #cas = new Map<string, NebulaCertificate>();

  /** Every certificate in the bundle; refuses non-CA certificates and CAs whose self-signature fails. */
  static fromPem(pem: string): CaPool {
    const pool = new CaPool();
    for (const ca of parseCertificatesPem(pem)) pool.add(ca);
    return pool;
  }

  /** Adds a CA after checking it is one and that it signed itself. Expired CAs are kept (as Nebula does). */
  add(ca: NebulaCertificate): void {
    if (!ca.isCA)
      throw new CertError("not_a_ca", `${JSON.stringify(ca.name)} is not a CA certificate`);
    if (!verifyMessageSync(ca.curve, ca.publicKey, signingMessageOf(ca), ca.signature)) {
      throw new CertError(
        "ca_not_self_signed",
        `the CA ${JSON.stringify(ca.name)} is not validly self-signed`,
      );
    }
    this.#cas.set(ca.fingerprint, ca);
  }

  get(fingerprint: string): NebulaCertificate | undefined {
    return this.#cas.get(fingerprint);
  }

  list(): NebulaCertificate[] {
    return [...this.#cas.values()];
  }

  /** Verifies like Nebula; throws CertError with the reason, returns the signing CA. */
  async verify(cert: NebulaCertificate, options: VerifyOptions = {}): Promise<NebulaCertificate> {
    const blocked = new Set(options.blocklist ?? []);
    const at = (options.now ?? new Date()).getTime();
    if (blocked.has(cert.fingerprint)) {
      throw new CertError("blocked", `the certificate ${cert.fingerprint} is on the blocklist`);
    }
    if (cert.issuer === "") {
      throw new CertError("ca_not_found", "the certificate has no issuer (is it a CA?)");
    }
    const ca = this.#cas.get(cert.issuer);
    if (!ca) throw new CertError("ca_not_found", `no trusted CA has fingerprint ${cert.issuer}`);
    if (ca.curve !== cert.curve) {
      throw new CertError(
        "wrong_curve",
        `the certificate is ${cert.curve} but its CA is ${ca.curve}`,
      );
    }
    checkValidAt(ca, at, true);
    checkValidAt(cert, at, false);
    if (!(await verifySignature(cert, ca.publicKey))) {
      throw new CertError(
        "bad_signature",
        "the certificate signature does not verify under its CA",
      );
    }
    const d = wireDetailsOf(cert);
    checkCaConstraints(ca, {
      notBefore: cert.notBefore.getTime(),
      notAfter: cert.notAfter.getTime(),
      groups: d.groups,
      networks: d.networks,
      unsafeNetworks: d.unsafeNetworks,
    });
    if (cert.curve === "P256" && blocked.size > 0) {
      const other = fingerprintWithSignature(cert, swapS(cert.signature));
      if (blocked.has(other)) {
        throw new CertError(
          "blocked",
          `the certificate ${cert.fingerprint} is on the blocklist (other signature form)`,
        );
      }
    }
    return ca;
  }
}
