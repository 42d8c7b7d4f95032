/**
 * Making a network's CA: a fresh key pair, the self-signed CA certificate, and the private key sealed
 * in every custody region with the context {org, network, ca}. The plaintext key exists only inside
 * this function and is zeroed before it returns, on every path. Every KMS attempt becomes an audit row.
 */
import {
  certificateToPem,
  generateCaKeyPair,
  signCertificate,
  signerFromPrivateKey,
} from "../core/cert/index.ts";
import { KeyholeError } from "../core/errors.ts";
import { type AuditBase, kmsAttemptEvents, requestIdsOf } from "./audit.ts";
import { isCustodyError } from "./custody/types.ts";
import { newId } from "./ids.ts";
import { certCurve, type SignerRuntime, wholeSeconds } from "./runtime.ts";
import type { AuditEventInput, CertVersion, Curve, NewCa } from "./store/types.ts";

export interface CaRequest {
  org: string;
  networkId: string;
  /** Name written in the CA certificate. */
  name: string;
  curve: Curve;
  certVersion: CertVersion;
  lifetimeS: number;
  /** The CA is constrained to these networks (hosts must be inside them). */
  cidrs: string[];
  /** The CA is constrained to these groups when set. */
  groups: string[] | null;
  audit: Omit<AuditBase, "org" | "networkId">;
  action: "ca.create" | "ca.rotate";
}

export interface SealedCa {
  ca: NewCa;
  /** kms.encrypt rows and the ca.create / ca.rotate row, to commit with the CA. */
  audit: AuditEventInput[];
}

export async function makeSealedCa(rt: SignerRuntime, req: CaRequest): Promise<SealedCa> {
  if (req.lifetimeS < 60) {
    throw new KeyholeError(
      "invalid_duration",
      'caLifetime must be at least one minute, e.g. "87600h"',
    );
  }
  const caId = newId("ca");
  const base: AuditBase = { ...req.audit, org: req.org, networkId: req.networkId };
  const now = wholeSeconds(rt.clock());
  const keys = await generateCaKeyPair(certCurve(req.curve));
  try {
    const signer = await signerFromPrivateKey(certCurve(req.curve), keys.privateKey);
    const cert = await signCertificate(
      {
        version: req.certVersion,
        name: req.name,
        networks: req.cidrs,
        unsafeNetworks: [],
        groups: req.groups ?? [],
        isCA: true,
        notBefore: now,
        notAfter: new Date(now.getTime() + req.lifetimeS * 1000),
        publicKey: keys.publicKey,
        curve: certCurve(req.curve),
      },
      null,
      signer,
    );
    const context = { org: req.org, network: req.networkId, ca: caId };
    let sealed: Awaited<ReturnType<typeof rt.custody.sealCaKey>>;
    try {
      sealed = await rt.custody.sealCaKey(keys.privateKey, context);
    } catch (e) {
      if (isCustodyError(e)) {
        rt.metrics.kms(e.attempts);
        await rt.store.recordAudit([
          ...kmsAttemptEvents(base, "encrypt", e.attempts, { caId }),
          {
            ...base,
            action: req.action,
            outcome: e.kind === "denied" ? "denied" : "error",
            kmsRequestIds: requestIdsOf(e.attempts),
            detail: { caId, error: e.kind },
          },
        ]);
      }
      throw e;
    }
    rt.metrics.kms(sealed.attempts);
    const ca: NewCa = {
      id: caId,
      certificate: certificateToPem(cert),
      fingerprint: cert.fingerprint,
      notBefore: cert.notBefore,
      notAfter: cert.notAfter,
      sealedKeys: sealed.copies.map((c) => ({
        region: c.region,
        keyId: c.keyId,
        ciphertext: c.ciphertext,
      })),
    };
    const audit: AuditEventInput[] = [
      ...kmsAttemptEvents(base, "encrypt", sealed.attempts, { caId }),
      {
        ...base,
        action: req.action,
        outcome: "ok",
        kmsRequestIds: requestIdsOf(sealed.attempts),
        detail: {
          caId,
          caFingerprint: cert.fingerprint,
          curve: req.curve,
          certVersion: req.certVersion,
          sealedIn: sealed.copies.map((c) => c.region),
        },
      },
    ];
    return { ca, audit };
  } finally {
    keys.privateKey.fill(0);
  }
}
