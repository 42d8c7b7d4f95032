/**
 * The narrow interface between the signer and key custody: the only place a CA private key is sealed
 * or opened. Everything the signer needs to audit a key use (one row per KMS attempt, with its request
 * id) comes back in the results or in the error, so no caller ever has to look inside a backend.
 */

/** Bound to every seal and open. Non-secret ids: KMS logs the context in plaintext. */
export interface EncryptionContext {
  org: string;
  network: string;
  ca: string;
}

/** One copy of a CA key, sealed under one region's key. A CA is stored with one copy per region. */
export interface SealedCopy {
  region: string;
  keyId: string;
  ciphertext: Uint8Array;
}

export type KmsOperation = "encrypt" | "decrypt";
export type AttemptOutcome = "ok" | "denied" | "unavailable" | "error";

/** One call to one region's KMS, as the audit log records it. */
export interface KmsAttempt {
  region: string;
  keyId: string;
  operation: KmsOperation;
  /** The KMS request id (aws: from $metadata or the error); local: a random id. Null when none came back. */
  requestId: string | null;
  outcome: AttemptOutcome;
  /** Short, non-secret reason, e.g. "timeout after 500ms" or "AccessDeniedException". */
  error?: string;
  latencyMs: number;
  /** Started by the hedge timer rather than by a failure of the region before it. */
  hedged?: boolean;
}

export interface SealResult {
  copies: SealedCopy[];
  attempts: KmsAttempt[];
}

export interface OpenResult<T> {
  value: T;
  attempts: KmsAttempt[];
  region: string;
  keyId: string;
  /** True when this call joined a decrypt another concurrent call had started. */
  shared: boolean;
}

export type CustodyErrorKind = "denied" | "unavailable" | "invalid";

/**
 * The one error custody throws. `denied` maps to 403 context_denied, `unavailable` to 503
 * kms_unavailable, `invalid` to a configuration or input fault. The message never holds key material.
 */
export class CustodyError extends Error {
  readonly kind: CustodyErrorKind;
  /** Every KMS attempt made, so the caller can audit each one. */
  readonly attempts: KmsAttempt[];

  constructor(
    kind: CustodyErrorKind,
    message: string,
    attempts: KmsAttempt[] = [],
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "CustodyError";
    this.kind = kind;
    this.attempts = attempts;
  }
}

export function isCustodyError(e: unknown): e is CustodyError {
  return e instanceof CustodyError;
}

export interface RegionHealth {
  status: "ok" | "down";
  latencyMs?: number;
  error?: string;
}

export interface CustodyStats {
  /** Decrypt calls sent, per region (hedged and failed ones included). */
  decryptCalls: Record<string, number>;
  /** Encrypt calls sent, per region. */
  encryptCalls: Record<string, number>;
  /** openCaKey calls (each joiner counts). */
  opens: number;
  /** Opens that joined a decrypt already in flight instead of starting one. */
  sharedOpens: number;
  /** Times a region's availability failure sent a decrypt on to the next region. */
  failovers: number;
  /** Times the hedge timer started a parallel decrypt in the next region. */
  hedges: number;
  /** Attempts refused by KMS as a context mismatch, access denial or invalid ciphertext. */
  denials: number;
  /** Decrypts that waited COALESCE_UNDER_LOAD_MS for more callers before starting. */
  coalescingWaits: number;
}

export interface KeyCustody {
  readonly backend: "local" | "aws";
  /** Human label for logs and health: says plainly when the backend is for development only. */
  readonly label: string;
  /** Preference order. */
  readonly regions: readonly string[];
  /**
   * Seals the plaintext in EVERY region (independent keys). Any region failing => CustodyError (a CA
   * must exist sealed twice). Does not zero `plaintext` (caller owns it).
   */
  sealCaKey(plaintext: Uint8Array, context: EncryptionContext): Promise<SealResult>;
  /**
   * Opens the CA key for one use. Concurrent calls for the same caId and context share ONE decrypt; the
   * plaintext is zeroed as soon as the last concurrent `use` settles and is never kept for later calls.
   * Regions are tried in preference order; availability failures fail over to the next; a context
   * mismatch / access denied / invalid ciphertext is "denied" and NOT retried elsewhere. With a hedge,
   * a slow first region gets the next one asked in parallel. Every attempt is in `attempts`.
   */
  openCaKey<T>(
    caId: string,
    copies: readonly SealedCopy[],
    context: EncryptionContext,
    use: (plaintext: Uint8Array) => Promise<T>,
  ): Promise<OpenResult<T>>;
  /** Per-region reachability for /v1/health and metrics. */
  health(): Promise<Record<string, RegionHealth>>;
  stats(): CustodyStats;
  close(): Promise<void>;
}

export interface CustodyOptions {
  /** Longest one KMS call may take before it counts as a region failure. */
  attemptTimeoutMs: number;
  /** Ask the next region in parallel when the first has not answered after this long; null = never. */
  hedgeAfterMs: number | null;
  /**
   * How long a region whose decrypt failed (other than a refusal), or was outrun by the hedge, is
   * asked after the others instead of first (0: always in the configured order).
   */
  regionCooldownMs: number;
}

export const DEFAULT_CUSTODY_OPTIONS: CustodyOptions = {
  attemptTimeoutMs: 2000,
  hedgeAfterMs: null,
  regionCooldownMs: 5000,
};

export type LocalCustodyConfig = {
  backend: "local";
  /** Master keys live in `${dataDir}/kms/<region>.key`. */
  dataDir: string;
  /** Default ["local-a", "local-b"]. */
  regions?: string[];
} & Partial<CustodyOptions>;

export type AwsCustodyConfig = {
  backend: "aws";
  /** region => key id or ARN; insertion order is preference order. */
  keys: Record<string, string>;
  /** region => endpoint URL (a KMS-compatible server such as moto_server). */
  endpoints?: Record<string, string>;
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
} & Partial<CustodyOptions>;

export type CustodyConfig = LocalCustodyConfig | AwsCustodyConfig;
