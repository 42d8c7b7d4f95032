/**
 * Issuing one host certificate: check the request against the network and its CA before any key is
 * touched, open the CA key through custody (concurrent issuances for one CA share one decrypt), sign,
 * then commit the certificate with its audit rows in ONE store transaction before answering. If that
 * commit fails the caller gets an error and no certificate (invariant 5).
 */
import {
  type CaSigner,
  type CertificateDetails,
  certificateToPem,
  type NebulaCertificate,
  parseCertificatesPem,
  parsePublicKeyPem,
  signCertificate,
  signerFromPrivateKey,
} from "../core/cert/index.ts";
import { cidrContainsIp, parseCidr, parseIp } from "../core/cert/ip.ts";
import { KeyholeError } from "../core/errors.ts";
import { type AuditBase, kmsAttemptEvents, requestIdsOf } from "./audit.ts";
import { type EncryptionContext, isCustodyError, type KmsAttempt } from "./custody/types.ts";
import { certCurve, type SignerRuntime, wholeSeconds } from "./runtime.ts";
import { sameCertificateTooSoon } from "./store/refusals.ts";
import type {
  AuditEventInput,
  CaRecord,
  CertificateRecord,
  EnrolledHost,
  IdempotencyInput,
  IssuanceCredential,
  IssuanceView,
  NetworkRecord,
} from "./store/types.ts";

export interface HostCertRequest {
  network: NetworkRecord;
  /** Org of the verified caller (user) or of the credential's network (code, token): the KMS context. */
  contextOrg: string;
  audit: Omit<AuditBase, "org" | "networkId">;
  hostId: string | null;
  name: string;
  /** Overlay addresses with prefix, e.g. "10.1.0.7/16". */
  networks: string[];
  unsafeNetworks: string[];
  groups: string[];
  /** Nebula public key PEM from the host (never a private key: invariant 6). */
  publicKeyPem: string;
  lifetimeS: number;
  credential: IssuanceCredential;
  /** Idempotency key scope and request hash; the secret-free response is added here. */
  idempotency?: Omit<IdempotencyInput, "response"> | undefined;
}

export interface SignedHostCert {
  certificate: NebulaCertificate;
  pem: string;
  ca: CaRecord;
  /** The network's CAs, lighthouses and blocklist the certificate was signed against. */
  view: IssuanceView;
}

export type IssueOutcome<R> =
  | {
      replayed: false;
      record: CertificateRecord;
      host: EnrolledHost | null;
      hostToken: string | null;
      /** The secret-free response (what an idempotent retry replays). */
      response: R;
    }
  | { replayed: true; response: R };

const caCertCache = new Map<string, NebulaCertificate>();

/** Identical certificates for one key within one second that are made distinct (by notAfter). */
const SAME_SECOND_REPEATS = 5;

/**
 * Issuances that share one decrypt get the same plaintext buffer from custody; they share one
 * imported signing key too. Keyed weakly by that buffer, so the key goes when the buffer does
 * (custody zeroes the buffer and drops it once the last of them has signed).
 */
const signersByPlaintext = new WeakMap<Uint8Array, Promise<CaSigner>>();

function signerFor(curve: "CURVE25519" | "P256", plaintext: Uint8Array): Promise<CaSigner> {
  let signer = signersByPlaintext.get(plaintext);
  if (!signer) {
    signer = signerFromPrivateKey(curve, plaintext);
    signersByPlaintext.set(plaintext, signer);
  }
  return signer;
}

function caCertOf(ca: CaRecord): NebulaCertificate {
  let cert = caCertCache.get(ca.id);
  if (!cert) {
    const parsed = parseCertificatesPem(ca.certificate)[0];
    if (!parsed) throw new KeyholeError("internal", "stored CA certificate is unreadable");
    cert = parsed;
    if (caCertCache.size > 1000) caCertCache.clear();
    caCertCache.set(ca.id, cert);
  }
  return cert;
}

/**
 * Checks everything that does not need the CA key: the public key (strict parse, curve of the
 * network), addresses inside the network, groups allowed by a constrained CA. Throws a 4xx
 * KeyholeError; nothing has been written or decrypted when it does.
 */
export function checkHostCertRequest(
  network: NetworkRecord,
  req: Pick<HostCertRequest, "publicKeyPem" | "networks" | "groups">,
): Uint8Array {
  let key: { curve: string; publicKey: Uint8Array };
  try {
    key = parsePublicKeyPem(req.publicKeyPem);
  } catch (e) {
    throw new KeyholeError(
      "invalid_public_key",
      `publicKey: ${(e as Error).message}; send the .pub file made by \`nebula-cert keygen\``,
      { field: "publicKey" },
    );
  }
  if (key.curve !== certCurve(network.curve)) {
    throw new KeyholeError(
      "wrong_curve",
      `publicKey is a ${key.curve === "P256" ? "P256" : "25519"} key but network uses ${network.curve}; make one with \`nebula-cert keygen -curve ${network.curve}\``,
      { field: "publicKey", networkCurve: network.curve },
    );
  }
  const cidrs = network.cidrs.map((c) => parseCidr(c));
  for (const text of req.networks) {
    let addr: ReturnType<typeof parseIp>;
    try {
      addr = parseIp(text.split("/")[0] ?? "");
    } catch {
      throw new KeyholeError("invalid_network", `${JSON.stringify(text)} is not an IP address`, {
        field: "networks",
      });
    }
    if (!cidrs.some((c) => cidrContainsIp(c, addr))) {
      throw new KeyholeError(
        "ip_outside_network",
        `${text} is outside the network (${network.cidrs.join(", ")})`,
        { field: "networks" },
      );
    }
  }
  if (network.groups !== null) {
    const allowed = new Set(network.groups);
    const unknown = req.groups.filter((g) => !allowed.has(g));
    if (unknown.length > 0) {
      throw new KeyholeError(
        "unknown_group",
        `the network's CA allows only the groups ${network.groups.join(", ") || "(none)"}; not ${unknown.join(", ")}`,
        { field: "groups", unknown },
      );
    }
  }
  return key.publicKey;
}

/** Gives the network address its prefix ("10.1.0.7" => "10.1.0.7/16") from the CIDR that holds it. */
export function withPrefix(network: NetworkRecord, ip: string): string {
  if (ip.includes("/")) return ip;
  const addr = parseIp(ip);
  for (const text of network.cidrs) {
    const cidr = parseCidr(text);
    if (cidrContainsIp(cidr, addr)) return `${ip}/${cidr.prefix}`;
  }
  throw new KeyholeError(
    "ip_outside_network",
    `${ip} is outside the network (${network.cidrs.join(", ")})`,
  );
}

export async function issueHostCert<R>(
  rt: SignerRuntime,
  req: HostCertRequest,
  buildResponse: (signed: SignedHostCert) => Promise<R>,
): Promise<IssueOutcome<R>> {
  const network = req.network;
  const publicKey = checkHostCertRequest(network, req);
  const view = await rt.store.issuanceView(network);
  const ca = view.activeCa;
  const caCert = caCertOf(ca);
  const base: AuditBase = { ...req.audit, org: network.org, networkId: network.id };
  const now = wholeSeconds(rt.clock());
  // A host certificate never outlives its CA: the lifetime is cut to end one second before it.
  const latest = caCert.notAfter.getTime() - 1000;
  const notAfter = new Date(Math.min(now.getTime() + req.lifetimeS * 1000, latest));
  if (notAfter.getTime() <= now.getTime()) {
    throw new KeyholeError("constraint_violation", "the network's CA has expired; rotate it first");
  }
  const details: Omit<CertificateDetails, "issuer"> = {
    version: network.certVersion,
    name: req.name,
    networks: req.networks,
    unsafeNetworks: req.unsafeNetworks,
    groups: req.groups,
    isCA: false,
    notBefore: now,
    notAfter,
    publicKey,
    curve: certCurve(network.curve),
  };
  // A host renewing the same key more than a few times in one second is told to wait before its
  // CA key is opened (nothing written); earlier repeats start past the certificates already made.
  let firstBack = 0;
  if (req.hostId !== null && req.credential.kind === "host_token") {
    firstBack = await rt.store.countCertificatesIssuedAt(req.hostId, now);
    if (firstBack > SAME_SECOND_REPEATS) throw sameCertificateTooSoon();
  }
  const context: EncryptionContext = { org: req.contextOrg, network: network.id, ca: ca.id };
  const started = performance.now();
  let opened: Awaited<ReturnType<typeof rt.custody.openCaKey<NebulaCertificate>>>;
  try {
    opened = await rt.custody.openCaKey(ca.id, ca.sealedKeys, context, async (plaintext) => {
      const signer = await signerFor(certCurve(network.curve), plaintext);
      // The same key renewed within one second would give byte-identical certificates (one
      // fingerprint); such a repeat ends one second earlier instead, a few times, and past that
      // the caller is told to come back in a second (nothing is written).
      for (let back = firstBack; back <= SAME_SECOND_REPEATS; back++) {
        const shorter = new Date(notAfter.getTime() - back * 1000);
        const cert = await signCertificate({ ...details, notAfter: shorter }, caCert, signer);
        if ((await rt.store.getCertificate(cert.fingerprint)) === null) return cert;
      }
      throw sameCertificateTooSoon();
    });
  } catch (e) {
    await auditFailedOpen(rt, base, ca, req, e);
    throw e;
  }
  rt.metrics.signing(performance.now() - started);
  if (!opened.shared) rt.metrics.kms(opened.attempts);
  const certificate = opened.value;
  const pem = certificateToPem(certificate);
  // The decrypt's own rows are written once, by the call that made it; every call writes its signature.
  const decryptRows = opened.shared
    ? []
    : kmsAttemptEvents(base, "decrypt", opened.attempts, { caId: ca.id });
  const signRow: AuditEventInput = {
    ...base,
    action: "cert.sign",
    outcome: "ok",
    region: opened.region,
    keyId: opened.keyId,
    kmsRequestIds: requestIdsOf(opened.attempts),
    certFingerprint: certificate.fingerprint,
    detail: {
      caId: ca.id,
      hostId: req.hostId,
      name: req.name,
      networks: req.networks,
      groups: req.groups,
      notAfter: notAfter.toISOString(),
      credential: req.credential.kind,
      sharedDecrypt: opened.shared,
      signer: rt.region,
    },
  };
  const response = await buildResponse({ certificate, pem, ca, view });
  let result: Awaited<ReturnType<typeof rt.store.recordIssuance>>;
  try {
    result = await rt.store.recordIssuance({
      certificate: {
        fingerprint: certificate.fingerprint,
        hostId: req.hostId,
        networkId: network.id,
        caId: ca.id,
        pem,
        notBefore: certificate.notBefore,
        notAfter: certificate.notAfter,
      },
      credential: req.credential,
      audit: [...decryptRows, signRow],
      idempotency: req.idempotency ? { ...req.idempotency, response } : undefined,
    });
  } catch (e) {
    // No certificate leaves. The key was still used: keep that on record if the database lets us.
    await rt.store
      .recordAudit([
        ...decryptRows,
        {
          ...signRow,
          outcome: "error",
          certFingerprint: null,
          detail: {
            ...signRow.detail,
            error: e instanceof KeyholeError ? e.code : "internal",
            withheld: true,
          },
        },
      ])
      .catch(() => {});
    throw e;
  }
  if (result.replayed) return { replayed: true, response: result.response as R };
  return {
    replayed: false,
    record: result.certificate,
    host: result.host,
    hostToken: result.hostToken,
    response,
  };
}

async function auditFailedOpen(
  rt: SignerRuntime,
  base: AuditBase,
  ca: CaRecord,
  req: HostCertRequest,
  e: unknown,
): Promise<void> {
  const attempts: KmsAttempt[] = isCustodyError(e) ? e.attempts : [];
  rt.metrics.kms(attempts);
  const outcome = isCustodyError(e) && e.kind === "denied" ? "denied" : "error";
  try {
    await rt.store.recordAudit([
      ...kmsAttemptEvents(base, "decrypt", attempts, { caId: ca.id }),
      {
        ...base,
        action: "cert.sign",
        outcome,
        kmsRequestIds: requestIdsOf(attempts),
        detail: {
          caId: ca.id,
          hostId: req.hostId,
          name: req.name,
          error: isCustodyError(e) ? e.kind : e instanceof KeyholeError ? e.code : "internal",
          ...(req.contextOrg !== base.org ? { callerOrg: req.contextOrg } : {}),
          signer: rt.region,
        },
      },
    ]);
  } catch (auditError) {
    rt.logger.log("error", "audit write failed after a refused key open", {
      traceId: base.traceId,
      code: auditError instanceof KeyholeError ? auditError.code : "internal",
    });
    throw new KeyholeError(
      "audit_unavailable",
      "the audit log could not be written; nothing was issued",
    );
  }
}

/**
 * A caller of another org asks for this network's CA. The request goes to KMS anyway, with the
 * caller's own org in the context, so the refusal comes from the key service and is on record
 * (invariant 3); no custody region is retried. Nothing is signed whatever KMS answers. Always throws.
 */
export async function openForeignCa(
  rt: SignerRuntime,
  network: NetworkRecord,
  caller: { org: string; traceId: string; actor: string },
): Promise<never> {
  const ca = await rt.store.getActiveCa(network.id);
  const base: AuditBase = {
    traceId: caller.traceId,
    actor: caller.actor,
    org: network.org,
    networkId: network.id,
  };
  const refused = new KeyholeError(
    "context_denied",
    "the key service refused to open this network's CA for you",
  );
  let attempts: KmsAttempt[] = [];
  let error: KeyholeError = refused;
  try {
    const opened = await rt.custody.openCaKey(
      ca.id,
      ca.sealedKeys,
      { org: caller.org, network: network.id, ca: ca.id },
      async () => {
        // Reached only if the key service ignored the context: still nothing is signed.
        return "opened";
      },
    );
    attempts = opened.attempts;
    rt.logger.log("error", "key service opened a CA under another org's context", {
      traceId: caller.traceId,
      caId: ca.id,
    });
  } catch (e) {
    if (isCustodyError(e)) {
      attempts = e.attempts;
      if (e.kind === "unavailable") {
        error = new KeyholeError(
          "kms_unavailable",
          "no key service region could be reached; try again shortly",
        );
      }
    }
  }
  rt.metrics.kms(attempts);
  try {
    await rt.store.recordAudit([
      ...kmsAttemptEvents(base, "decrypt", attempts, { caId: ca.id, callerOrg: caller.org }),
      {
        ...base,
        action: "cert.sign",
        outcome: error.code === "context_denied" ? "denied" : "error",
        kmsRequestIds: requestIdsOf(attempts),
        detail: { caId: ca.id, callerOrg: caller.org, error: error.code, signer: rt.region },
      },
    ]);
  } catch {
    throw new KeyholeError(
      "audit_unavailable",
      "the audit log could not be written; nothing was issued",
    );
  }
  throw error;
}
