/**
 * The audit log as a hash chain. Each row stores `prev_hash` (the previous row's hash, or 64 zeros
 * for the first) and `hash = sha256(prev_hash || canonical JSON of the row)`, where the canonical JSON
 * covers every column but seq and hash, with keys sorted. Editing a row breaks its hash; deleting or
 * inserting one breaks the next row's link. Rows are appended only inside the writer's transaction,
 * reading the previous hash there, so the chain stays linear however many signers' requests arrive.
 *
 * Limits: deleting the newest rows (truncating the tail) is not detectable from the chain alone;
 * an operator who keeps the latest hash elsewhere can compare it with `lastAuditHash`.
 */
import { createHash, randomUUID } from "node:crypto";
import { asc, gt } from "drizzle-orm";
import type { AuditRowView } from "../../core/contract/api.ts";
import { KeyholeError } from "../../core/errors.ts";
import { isStorageFailure, type Orm } from "../../db/client.ts";
import { auditEvents } from "../../db/schema.ts";
import { driverRow, prepareStatement, type TxStatements } from "./statements.ts";
import type { AuditChainReport, AuditEventInput } from "./types.ts";
import type { TxState, WriteTx } from "./writer.ts";

export const GENESIS_HASH = "0".repeat(64);

type AuditRow = typeof auditEvents.$inferSelect;

/** JSON with object keys sorted at every depth; undefined members dropped (as JSON.stringify does). */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value) ?? "null";
  if (Array.isArray(value))
    return `[${value.map((v) => (v === undefined ? "null" : canonicalJson(v))).join(",")}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
}

/** The hashed content of a row: every column but seq and hash. */
function hashedContent(row: Omit<AuditRow, "seq" | "hash">): string {
  return canonicalJson({
    id: row.id,
    at: row.at.toISOString(),
    traceId: row.traceId,
    actor: row.actor,
    org: row.org,
    networkId: row.networkId,
    action: row.action,
    outcome: row.outcome,
    region: row.region,
    keyId: row.keyId,
    kmsRequestIds: row.kmsRequestIds,
    certFingerprint: row.certFingerprint,
    detail: row.detail,
    prevHash: row.prevHash,
  });
}

export function auditHash(row: Omit<AuditRow, "seq" | "hash">): string {
  return createHash("sha256")
    .update(row.prevHash, "utf8")
    .update(hashedContent(row), "utf8")
    .digest("hex");
}

/**
 * Appends one row to the chain inside the writer's transaction. The previous hash is read from the
 * table the first time in a transaction and then carried in `state` (the writer restores it when a
 * job's savepoint rolls back). The row is queued in `state` and inserted by `flushPendingAudit`
 * before the transaction commits.
 */
export async function appendAudit(
  st: TxStatements,
  event: AuditEventInput,
  now: Date,
  state: TxState,
): Promise<AuditRowView> {
  if (state.chainHead === null) {
    const last = await st.auditHead.all();
    state.chainHead = last[0]?.hash ?? GENESIS_HASH;
  }
  const prevHash = state.chainHead;
  const row = {
    id: randomUUID(),
    at: new Date((event.at ?? now).getTime()),
    traceId: event.traceId,
    actor: event.actor,
    org: event.org,
    networkId: event.networkId ?? null,
    action: event.action,
    outcome: event.outcome,
    region: event.region ?? null,
    keyId: event.keyId ?? null,
    kmsRequestIds: [...(event.kmsRequestIds ?? [])],
    certFingerprint: event.certFingerprint ?? null,
    // Round-trip so the hashed value is exactly what reading the row back yields.
    detail: JSON.parse(JSON.stringify(event.detail ?? {})) as Record<string, unknown>,
    prevHash,
  };
  const hash = auditHash(row);
  state.chainHead = hash;
  // seq is known once the row is inserted (flushPendingAudit fills it in before anyone sees it).
  const view = toAuditView({ ...row, seq: 0, hash });
  state.pendingAudit.push({ row: { ...row, hash }, view } satisfies PendingAudit);
  return view;
}

interface PendingAudit {
  row: typeof auditEvents.$inferInsert & { id: string };
  view: AuditRowView;
}

function auditUnavailable(e: unknown): never {
  if (isStorageFailure(e)) throw e;
  throw new KeyholeError("audit_unavailable", "the audit row could not be written", undefined, {
    cause: e,
  });
}

/**
 * Inserts the appended audit rows in chain order: one prepared statement per row on a file, a few
 * hundred rows per statement on a server (see TxStatements.rowByRow).
 */
export async function flushPendingAudit(
  tx: WriteTx,
  st: TxStatements,
  state: TxState,
): Promise<void> {
  const pending = state.pendingAudit as PendingAudit[];
  state.pendingAudit = [];
  if (st.rowByRow) {
    for (const p of pending) {
      const inserted = await st.insertAudit
        .run(driverRow(auditEvents, p.row))
        .catch(auditUnavailable);
      p.view.seq = Number(inserted.lastInsertRowid ?? 0);
    }
    return;
  }
  for (let i = 0; i < pending.length; i += 200) {
    const chunk = pending.slice(i, i + 200);
    const inserted = await tx
      .insert(auditEvents)
      .values(chunk.map((p) => p.row))
      .returning({ id: auditEvents.id, seq: auditEvents.seq })
      .catch(auditUnavailable);
    const seqs = new Map(inserted.map((r) => [r.id, r.seq]));
    for (const p of chunk) p.view.seq = seqs.get(p.row.id) ?? 0;
  }
}

export function toAuditView(row: AuditRow): AuditRowView {
  return {
    seq: row.seq,
    id: row.id,
    at: row.at.toISOString(),
    traceId: row.traceId,
    actor: row.actor,
    org: row.org,
    networkId: row.networkId,
    action: row.action,
    outcome: row.outcome,
    region: row.region,
    keyId: row.keyId,
    kmsRequestIds: row.kmsRequestIds,
    certFingerprint: row.certFingerprint,
    detail: row.detail,
    hash: row.hash,
  };
}

/** Walks the whole chain in seq order, a page at a time. */
export async function verifyChain(orm: Orm, pageSize = 2000): Promise<AuditChainReport> {
  let expectedPrev = GENESIS_HASH;
  let rows = 0;
  let after = 0;
  for (;;) {
    const page = await orm
      .select()
      .from(auditEvents)
      .where(gt(auditEvents.seq, after))
      .orderBy(asc(auditEvents.seq))
      .limit(pageSize);
    for (const row of page) {
      rows++;
      if (row.prevHash !== expectedPrev || auditHash(row) !== row.hash) {
        return { ok: false, rows, firstBadSeq: row.seq };
      }
      expectedPrev = row.hash;
      after = row.seq;
    }
    if (page.length < pageSize) return { ok: true, rows };
  }
}

/** The newest row's hash (GENESIS_HASH when empty): an anchor to keep outside the database. */
export async function lastAuditHash(orm: Orm): Promise<string> {
  const last = await prepareStatement("auditHead", orm).all();
  return last[0]?.hash ?? GENESIS_HASH;
}
