/**
 * The signer's data layer as the routes see it. Everything the signer remembers (networks, CAs and
 * their sealed keys, hosts, one-time codes, host tokens, certificates, idempotent replies, the audit
 * chain) goes through this one interface, so the HTTP code never writes SQL and every multi-row change
 * is one transaction. Implemented by `createSignerStore` in `./index.ts` over libSQL (db/).
 *
 * Conventions:
 * - Every failure a caller can act on is a KeyholeError with an API code (name_taken, ip_taken,
 *   ip_outside_network, network_full, not_found, invalid_enrollment_code, invalid_host_token,
 *   host_token_reused, host_blocked, idempotency_conflict). A database that is read-only, locked,
 *   gone or unreachable is `storage_unavailable`, and a write that fails leaves nothing half written.
 * - Secrets (enrollment codes, host tokens) are generated here, returned once, and stored as sha256.
 * - Writes are serialised through one writer that commits several pending writes per transaction
 *   (group commit); each write is isolated by a savepoint, so one failing write never affects another.
 * - Times are `Date`s in records; views (core/contract) carry ISO strings.
 */

import type {
  AuditRowView,
  CaView,
  CertificateView,
  HostView,
  NetworkView,
} from "../../core/contract/api.ts";
import type { WalStats } from "../../db/wal.ts";
import type { WriterStats } from "./writer.ts";

export type Curve = "25519" | "P256";
export type CertVersion = 1 | 2;
export type CaState = "active" | "previous" | "retired";
export type HostState = "pending" | "enrolled" | "blocked";
export type AuditOutcome = "ok" | "denied" | "error";

// ---- records ----

export interface NetworkRecord {
  id: string;
  org: string;
  name: string;
  /** Canonical CIDR text, in the order given at creation (allocation tries them in this order). */
  cidrs: string[];
  curve: Curve;
  certVersion: CertVersion;
  /** Groups the CA is constrained to; null when unconstrained. */
  groups: string[] | null;
  /** Moves with every change to the network's CAs, lighthouses or revocations (see IssuanceView). */
  revision: number;
  createdAt: Date;
}

/** One KMS-sealed copy of a CA private key. Same shape as custody's `SealedCopy`. */
export interface SealedCaKey {
  region: string;
  keyId: string;
  ciphertext: Uint8Array;
}

export interface CaRecord {
  id: string;
  networkId: string;
  org: string;
  /** The CA certificate, Nebula PEM. */
  certificate: string;
  /** Hex sha256 fingerprint as Nebula prints it. */
  fingerprint: string;
  notBefore: Date;
  notAfter: Date;
  state: CaState;
  createdAt: Date;
  /** One sealed copy per region, in the order they were stored. */
  sealedKeys: SealedCaKey[];
}

export interface HostRecord {
  id: string;
  networkId: string;
  /** Org of the host's network (the KMS context for code and token paths comes from here). */
  org: string;
  name: string;
  /** The first of `ips` (the address in the network's first CIDR), e.g. "10.1.0.7/16". */
  ip: string;
  /**
   * Every overlay address of the host, one per network CIDR in the network's order, each with its
   * CIDR's prefix ("10.1.0.7/16", "fd00::7/64"): the host certificate's `networks`.
   */
  ips: string[];
  groups: string[];
  lighthouse: boolean;
  staticAddrs: string[];
  state: HostState;
  /** Lifetime of each certificate issued to this host, seconds. */
  certLifetimeS: number;
  createdAt: Date;
}

export interface CertificateRecord {
  fingerprint: string;
  /** null for direct signing (`POST /v1/networks/{id}/sign`). */
  hostId: string | null;
  networkId: string;
  caId: string;
  /** Nebula PEM. */
  pem: string;
  notBefore: Date;
  notAfter: Date;
  revokedAt: Date | null;
  createdAt: Date;
}

// ---- inputs ----

/** What the caller knows about one audited event; the store adds seq, id, at, prev_hash and hash. */
export interface AuditEventInput {
  traceId: string;
  /** Who: "user:<issuer>#<sub>", "host:<hostId>", "code:<hostId>", "system". */
  actor: string;
  org: string;
  networkId?: string | null;
  /** Dotted verb: "ca.create", "kms.decrypt", "cert.sign", "host.register", "host.block", ... */
  action: string;
  outcome: AuditOutcome;
  region?: string | null;
  keyId?: string | null;
  /** The KMS request id of every attempt this event covers. */
  kmsRequestIds?: string[];
  certFingerprint?: string | null;
  /** Non-secret facts (never a key, code or token). */
  detail?: Record<string, unknown>;
  /** Defaults to the store's clock. */
  at?: Date;
}

/** A CA made and sealed by the caller (ids are the caller's: they are in the KMS encryption context). */
export interface NewCa {
  id: string;
  certificate: string;
  fingerprint: string;
  notBefore: Date;
  notAfter: Date;
  /** Must hold at least one copy; invariant 2 wants two (one per region). */
  sealedKeys: SealedCaKey[];
}

export interface CreateNetworkInput {
  /** Caller-chosen id (use `newId("net")`), because the CA was sealed with it in the context. */
  id: string;
  org: string;
  name: string;
  cidrs: string[];
  curve: Curve;
  certVersion: CertVersion;
  groups: string[] | null;
  ca: NewCa;
  /** CA creation and its KMS encrypt attempts; written in the same transaction. */
  audit: AuditEventInput[];
}

export interface RotateCaInput {
  networkId: string;
  ca: NewCa;
  /** true: the old active CA becomes `retired` (out of the bundle now); false: `previous`. */
  retirePrevious: boolean;
  audit: AuditEventInput[];
}

export interface RegisterHostInput {
  networkId: string;
  name: string;
  /**
   * "10.1.0.7" or "10.1.0.7/16" (the prefix must equal the network CIDR's): the host's address in the
   * CIDR that holds it. Every other CIDR of the network (all of them when absent) gets its lowest free
   * address.
   */
  ip?: string | undefined;
  groups: string[];
  lighthouse: boolean;
  staticAddrs: string[];
  certLifetimeS: number;
  /** Lifetime of the one-time enrollment code, seconds. */
  codeTtlS: number;
  /** Written with the host; the store adds `hostId`, `name` and `ip` to each event's detail. */
  audit: AuditEventInput[];
}

export interface RegisteredHost {
  host: HostRecord;
  /** The one-time code, shown once; only its sha256 is stored. */
  enrollmentCode: string;
  codeExpiresAt: Date;
}

/** A credential that checked out (not yet consumed: consumption happens in `recordIssuance`). */
export interface HostCredential {
  host: HostRecord;
  network: NetworkRecord;
  /** Host token generation (0 for an enrollment code). */
  generation: number;
}

/** How an issuance was authorised; the store consumes/rotates it in the issuance transaction. */
export type IssuanceCredential =
  | { kind: "enrollment_code"; code: string }
  | { kind: "host_token"; token: string }
  | { kind: "direct" };

export interface NewCertificate {
  fingerprint: string;
  hostId: string | null;
  networkId: string;
  caId: string;
  pem: string;
  notBefore: Date;
  notAfter: Date;
}

export interface IdempotencyInput {
  org: string;
  /** The Idempotency-Key header value. */
  key: string;
  /** sha256 hex of the request (method, path, body) so a different request under the same key is refused. */
  requestHash: string;
  /** The JSON response to replay. Must hold no secret (strip host tokens before passing it). */
  response: unknown;
}

export interface IssuanceInput {
  certificate: NewCertificate;
  credential: IssuanceCredential;
  /** Decrypt attempts and the signature: all written with the certificate or not at all. */
  audit: AuditEventInput[];
  idempotency?: IdempotencyInput | undefined;
}

export type EnrolledHost = Pick<HostRecord, "id" | "networkId" | "name" | "state">;

export type IssuanceResult =
  | {
      replayed: false;
      certificate: CertificateRecord;
      /** New host token (enrollment and renewal), shown once; null for direct signing. */
      hostToken: string | null;
      /** The host the certificate was issued to, now enrolled; null for direct signing. */
      host: EnrolledHost | null;
      auditRows: AuditRowView[];
    }
  | {
      /** Another request with the same Idempotency-Key committed first: its response, nothing written. */
      replayed: true;
      response: unknown;
    };

export interface AuditFilter {
  networkId?: string | undefined;
  traceId?: string | undefined;
  since?: Date | undefined;
  until?: Date | undefined;
  /** 1..1000, newest first. */
  limit: number;
}

export interface AuditChainReport {
  ok: boolean;
  /** Rows checked. */
  rows: number;
  /** seq of the first row whose hash or link does not match. */
  firstBadSeq?: number;
}

export interface BlockResult {
  host: HostRecord;
  /** Fingerprints revoked by this block (they join the network's blocklist). */
  revokedFingerprints: string[];
}

// ---- the store ----

/** See SignerStore.issuanceView. Time-dependent parts are computed on each call. */
export interface IssuanceView {
  activeCa: CaRecord;
  /** PEM of every CA the network trusts now (as caBundle). */
  caBundle(): string;
  /** The network's lighthouses (as listLighthouses). */
  lighthouses: readonly HostRecord[];
  /** Fingerprints of revoked certificates not yet expired (as blocklist). */
  blocklist(): string[];
}

export interface SignerStore {
  /** Group-commit counters (transactions, writes, largest batch), for metrics. */
  writerStats(): WriterStats;
  /** WAL syncs and checkpoints of a file database (db/wal.ts); null on a libSQL server. */
  walStats(): WalStats | null;
  // networks and CAs
  /** Network + active CA + sealed keys + audit rows in one transaction. name_taken when (org, name) exists. */
  createNetwork(input: CreateNetworkInput): Promise<NetworkRecord>;
  /** Unscoped lookup (code and token paths find the org through it). */
  getNetwork(id: string): Promise<NetworkRecord | null>;
  /** null when absent OR owned by another org (reads answer not_found either way). */
  getNetworkForOrg(org: string, id: string): Promise<NetworkRecord | null>;
  listNetworks(org: string): Promise<NetworkRecord[]>;
  listCas(networkId: string): Promise<CaRecord[]>;
  /** The CA new certificates are signed with. not_found when the network has none. */
  getActiveCa(networkId: string): Promise<CaRecord>;
  /**
   * What an issuance in the network reads besides its host, as of `network.revision`: kept in memory
   * per network and read again when the revision of a freshly read network record has moved (every
   * change to CAs, lighthouses or revocations moves it in the same transaction). not_found when the
   * network has no active CA.
   */
  issuanceView(network: NetworkRecord): Promise<IssuanceView>;
  /** PEM of every active or previous CA not yet expired, active first: `pki.ca`. */
  caBundle(networkId: string): Promise<string>;
  /** Old active => previous (or retired), new CA active; one transaction. */
  rotateCa(input: RotateCaInput): Promise<CaRecord>;
  networkView(network: NetworkRecord): Promise<NetworkView>;
  caView(ca: CaRecord): CaView;

  // hosts
  /** Allocates (or checks) the address, inserts host + hashed enrollment code + audit in one transaction. */
  registerHost(input: RegisterHostInput): Promise<RegisteredHost>;
  getHost(id: string): Promise<HostRecord | null>;
  listHosts(networkId: string): Promise<HostRecord[]>;
  /** The lighthouses of a network (blocked ones included), read through an index of lighthouses only. */
  listLighthouses(networkId: string): Promise<HostRecord[]>;
  hostView(host: HostRecord): Promise<HostView>;
  certificateView(cert: CertificateRecord, caFingerprint: string): CertificateView;
  /**
   * State blocked, its certificates revoked, its tokens rotated; one transaction with the audit rows
   * (the store adds `hostId` and the revoked fingerprints to each event's detail). not_found when absent.
   */
  blockHost(hostId: string, audit: AuditEventInput[]): Promise<BlockResult>;
  /** Fingerprints of revoked, unexpired certificates of the network: `pki.blocklist`. */
  blocklist(networkId: string): Promise<string[]>;

  // credentials (checked here, consumed by recordIssuance)
  /** invalid_enrollment_code when unknown, used or expired; host_blocked when the host is blocked. */
  authenticateEnrollmentCode(code: string): Promise<HostCredential>;
  /**
   * invalid_host_token when unknown; host_blocked when blocked; host_token_reused when the token was
   * already rotated away — and then the host is blocked (committed, audited with `traceId`) first.
   */
  authenticateHostToken(token: string, trace: { traceId: string }): Promise<HostCredential>;

  // issuance
  /**
   * One transaction: consume the credential (a code used concurrently wins once; a rotated token
   * blocks the host and fails with host_token_reused), insert the certificate, mark the host enrolled,
   * mint the next host token, write the audit rows and the idempotent response. Any failure => nothing
   * of it is written and the caller must return no certificate.
   */
  recordIssuance(input: IssuanceInput): Promise<IssuanceResult>;
  /** The stored response for (org, key), null when none; idempotency_conflict when requestHash differs. */
  findIdempotentResponse(org: string, key: string, requestHash: string): Promise<unknown | null>;
  getCertificate(fingerprint: string): Promise<CertificateRecord | null>;
  /** How many certificates the host was issued with this notBefore (whole seconds). */
  countCertificatesIssuedAt(hostId: string, notBefore: Date): Promise<number>;
  listCertificates(hostId: string): Promise<CertificateRecord[]>;

  // audit
  /** Standalone audit rows (denials, failed decrypts), chained and committed before it resolves. */
  recordAudit(events: AuditEventInput[]): Promise<AuditRowView[]>;
  /** Rows of `org`, newest first. */
  listAudit(org: string, filter: AuditFilter): Promise<AuditRowView[]>;
  /**
   * Recomputes every hash and link from the first row. Catches edited, inserted and deleted rows;
   * rows cut off the end leave a valid shorter chain (compare `lastAuditHash` with a kept copy).
   */
  verifyAuditChain(): Promise<AuditChainReport>;

  /** Flushes pending writes, then closes the database. */
  close(): Promise<void>;
}

export interface SignerStoreOptions {
  /** Defaults to `() => new Date()`. */
  clock?: () => Date;
  /** Most writes committed in one transaction (default 256). */
  maxBatch?: number;
  /** File databases: how long to wait for another process's write lock (default 5000 ms). */
  busyTimeoutMs?: number;
}
