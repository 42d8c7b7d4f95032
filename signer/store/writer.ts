/**
 * The store's single writer with group commit. Every write is a job queued here; the writer takes
 * all pending jobs (up to `maxBatch`), runs them in ONE write transaction, each inside its own
 * savepoint, and commits once, so a burst of issuances costs one fsync instead of one each. A job
 * that fails for its own reason (name taken, code already used) rolls back to its savepoint and only
 * that caller sees the error (see runBatch for the fast path that skips savepoints until one is
 * needed); a storage failure (read-only, locked, gone) fails the whole transaction
 * and every caller in it gets storage_unavailable, with nothing of the batch written.
 *
 * One writer also serialises the audit hash chain: each row reads the previous hash inside the
 * transaction that writes it.
 */

import { KeyholeError } from "../../core/errors.ts";
import type { Database, Orm } from "../../db/client.ts";
import { isStorageFailure, toStorageError } from "../../db/client.ts";

export type WriteTx = Parameters<Parameters<Orm["transaction"]>[0]>[0];

/**
 * What a job returns: a value, or an error to report AFTER its writes are committed (used when a
 * refusal must itself leave a trace, e.g. a reused host token blocks the host and is audited).
 */
export type JobResult<T> = { value: T } | { committedError: KeyholeError };

/**
 * Per-transaction state jobs share: the audit chain head once read (saves a query per row), and rows
 * appended but not yet inserted. Append-only rows (certificates, audit events) are inserted in
 * multi-row statements by `flush` — once per batch on the fast path, once per job when isolated.
 */
export interface TxState {
  chainHead: string | null;
  pendingCertificates: unknown[];
  pendingAudit: unknown[];
}

/** Writes the pending rows of `state` and empties its lists. */
export type FlushPending = (tx: WriteTx, state: TxState) => Promise<void>;

function freshState(): TxState {
  return { chainHead: null, pendingCertificates: [], pendingAudit: [] };
}

interface Job {
  run: (tx: WriteTx, state: TxState) => Promise<JobResult<unknown>>;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

export interface WriterStats {
  transactions: number;
  jobs: number;
  largestBatch: number;
  /** Batches re-run with one savepoint per job because a job failed on the fast path. */
  isolatedRetries: number;
  storageFailures: number;
}

export interface Writer {
  /** Queue a job; resolves once its transaction has committed. */
  submit<T>(run: (tx: WriteTx, state: TxState) => Promise<JobResult<T>>): Promise<T>;
  /** Resolves when the queue is empty and no transaction is running. */
  drain(): Promise<void>;
  stats(): WriterStats;
}

type Outcome = { ok: true; result: JobResult<unknown> } | { ok: false; error: unknown };

/** Thrown inside the fast-path transaction to roll it back when one job fails. */
class RetryIsolated extends Error {}

export function createWriter(db: Database, maxBatch: number, flush: FlushPending): Writer {
  const queue: Job[] = [];
  let running: Promise<void> | null = null;
  const counters: WriterStats = {
    transactions: 0,
    jobs: 0,
    largestBatch: 0,
    isolatedRetries: 0,
    storageFailures: 0,
  };

  /**
   * Fast path: every job of the batch runs straight in the transaction (no savepoints). If one job
   * fails, the whole transaction rolls back and the batch runs again with each job in its own
   * savepoint, so a failing job never leaves half its writes behind.
   */
  async function runBatch(batch: Job[], isolated: boolean): Promise<Outcome[]> {
    const outcomes: Outcome[] = [];
    db.assertReachable();
    await db.write.transaction(async (tx) => {
      const state = freshState();
      for (const job of batch) {
        if (!isolated) {
          try {
            outcomes.push({ ok: true, result: await job.run(tx, state) });
          } catch (e) {
            if (isStorageFailure(e)) throw e;
            throw new RetryIsolated();
          }
          continue;
        }
        const head = state.chainHead;
        try {
          const result = await tx.transaction(async (sp) => {
            const r = await job.run(sp, state);
            await flush(sp, state);
            return r;
          });
          outcomes.push({ ok: true, result });
        } catch (e) {
          if (isStorageFailure(e)) throw e;
          state.chainHead = head;
          state.pendingCertificates = [];
          state.pendingAudit = [];
          outcomes.push({ ok: false, error: e });
        }
      }
      if (!isolated) {
        try {
          await flush(tx, state);
        } catch (e) {
          if (isStorageFailure(e)) throw e;
          throw new RetryIsolated();
        }
      }
      // A deleted file would swallow the commit silently; refuse before committing.
      db.assertReachable();
    });
    return outcomes;
  }

  async function commitBatch(batch: Job[]): Promise<void> {
    let outcomes: Outcome[];
    try {
      try {
        outcomes = await runBatch(batch, batch.length === 1);
      } catch (e) {
        if (!(e instanceof RetryIsolated)) throw e;
        counters.isolatedRetries++;
        outcomes = await runBatch(batch, true);
      }
    } catch (e) {
      counters.storageFailures++;
      const err = toStorageError(e, "the write was not saved");
      for (const job of batch) job.reject(err);
      // Start the next batch on a fresh connection; if even that fails, the next batch says so.
      await db.reopenWriter().catch(() => {});
      return;
    }
    counters.transactions++;
    counters.jobs += batch.length;
    counters.largestBatch = Math.max(counters.largestBatch, batch.length);
    batch.forEach((job, i) => {
      const o = outcomes[i];
      if (o === undefined) job.reject(new KeyholeError("internal", "write outcome missing"));
      else if (!o.ok) job.reject(o.error);
      else if ("committedError" in o.result) job.reject(o.result.committedError);
      else job.resolve(o.result.value);
    });
  }

  async function pump(): Promise<void> {
    // Let every caller of this tick enqueue before the first transaction starts.
    await new Promise<void>((r) => setImmediate(r));
    while (queue.length > 0) {
      await commitBatch(queue.splice(0, maxBatch));
    }
    running = null;
  }

  return {
    submit<T>(run: (tx: WriteTx, state: TxState) => Promise<JobResult<T>>): Promise<T> {
      return new Promise<T>((resolve, reject) => {
        queue.push({ run, resolve: resolve as (v: unknown) => void, reject });
        running ??= pump();
      });
    },
    async drain() {
      while (running !== null) await running;
    },
    stats: () => ({ ...counters }),
  };
}
