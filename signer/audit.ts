/**
 * How key custody's attempts become audit rows (one row per KMS attempt, with its request id), and the
 * audit-chain check an operator runs: the route `GET /v1/audit/verify` and `checkAuditChain` for the CLI.
 */
import type { KmsAttempt, KmsOperation } from "./custody/types.ts";
import { openSignerStore } from "./store/index.ts";
import type {
  AuditChainReport,
  AuditEventInput,
  AuditOutcome,
  SignerStore,
} from "./store/types.ts";

export interface AuditBase {
  traceId: string;
  actor: string;
  org: string;
  networkId: string | null;
}

export function outcomeOf(attempt: KmsAttempt): AuditOutcome {
  if (attempt.outcome === "ok") return "ok";
  if (attempt.outcome === "denied") return "denied";
  return "error";
}

/** One `kms.encrypt` / `kms.decrypt` row per attempt. */
export function kmsAttemptEvents(
  base: AuditBase,
  operation: KmsOperation,
  attempts: readonly KmsAttempt[],
  detail: Record<string, unknown> = {},
): AuditEventInput[] {
  return attempts.map((a) => ({
    ...base,
    action: `kms.${operation}`,
    outcome: outcomeOf(a),
    region: a.region,
    keyId: a.keyId,
    kmsRequestIds: a.requestId ? [a.requestId] : [],
    detail: {
      ...detail,
      latencyMs: Math.round(a.latencyMs),
      ...(a.error ? { error: a.error } : {}),
      ...(a.hedged ? { hedged: true } : {}),
    },
  }));
}

/** Every KMS request id of a list of attempts (those that got one). */
export function requestIdsOf(attempts: readonly KmsAttempt[]): string[] {
  return attempts.flatMap((a) => (a.requestId ? [a.requestId] : []));
}

/** Recomputes the audit hash chain. For the CLI: open the store as the signer does, then call this. */
export function checkAuditChain(
  store: Pick<SignerStore, "verifyAuditChain">,
): Promise<AuditChainReport> {
  return store.verifyAuditChain();
}

/**
 * For the CLI (`keyhole audit verify --db ...`): opens the signer's database as the signer does,
 * verifies the whole chain, and closes it. Throws storage_unavailable when the database cannot be read.
 */
export async function verifyAuditChainAt(database: {
  url: string;
  authToken?: string;
}): Promise<AuditChainReport> {
  const store = await openSignerStore({ url: database.url, authToken: database.authToken });
  try {
    return await store.verifyAuditChain();
  } finally {
    await store.close();
  }
}
