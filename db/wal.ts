/**
 * Durable commits and WAL checkpoints off the event loop, for the one write connection of a file
 * database.
 *
 * With SQLite's default `synchronous = FULL` every COMMIT calls fsync on the WAL, and every
 * thousandth page makes the committing connection checkpoint (copy pages back, fsync the database),
 * all on the calling thread: the signer's event loop stood still for 1 to 22 ms per commit, 12% of
 * its time under load (`npm run bench`, statement timings). Here the write connection runs with
 * `synchronous = NORMAL` and `wal_autocheckpoint = 0`, so its COMMIT only writes the WAL, and then:
 *
 * - `commitDurable()` fdatasyncs the WAL file on the runtime's file thread pool. The writer resolves
 *   its callers only after that, so nothing is answered before its commit is on disk: the same
 *   guarantee as FULL (SQLite's NORMAL syncs the WAL before each checkpoint and the database after
 *   it, and the WAL header when the file is reused).
 * - At most every `checkpointEveryMs`, passive checkpoints run on a connection of their own through
 *   libsql's asynchronous API, which steps them on a worker thread (see checkpointIfDue). If they
 *   keep failing, `inlineCheckpoint` (the writer's own, blocking checkpoint) takes over so the WAL
 *   cannot grow without bound.
 */
import { open } from "node:fs/promises";
import { createRequire } from "node:module";
import { KeyholeError } from "../core/errors.ts";

/** The part of libsql's promise API used here (libsql/promise). */
export interface AsyncConnection {
  /** Runs SQL on libsql's worker thread, leaving no statement open (one would pin a snapshot). */
  exec(sql: string): Promise<unknown>;
  close(): void;
}

export interface WalEvent {
  event: "checkpoint_failed" | "checkpoint_inline";
  error?: string;
}

export interface WalStats {
  /** WAL fdatasyncs made (one per committed batch). */
  syncs: number;
  /** Passive checkpoints completed off the event loop. */
  checkpoints: number;
  checkpointFailures: number;
  /** Checkpoints run by the writer itself after background checkpoints failed. */
  inlineCheckpoints: number;
}

export interface WalOffLoopOptions {
  /** The database file's path (the WAL is `<path>-wal`). */
  path: string;
  busyTimeoutMs: number;
  /** Least time between two background checkpoints (default 200 ms). */
  checkpointEveryMs?: number;
  /** Runs a checkpoint on the write connection itself (the fallback), while it is idle. */
  inlineCheckpoint: () => Promise<void>;
  onEvent?: ((e: WalEvent) => void) | undefined;
  /** Opens the checkpoint connection (default: libsql/promise on `path`; tests inject failures). */
  openCheckpointer?: () => AsyncConnection;
}

export interface WalOffLoop {
  /** The pragmas the write connection runs with (after `journal_mode = WAL`). */
  readonly writerPragmas: readonly string[];
  /**
   * Called once the write connection runs in WAL mode with `writerPragmas`; until then its commits
   * sync themselves (FULL) and `commitDurable` has nothing to do.
   */
  arm(): void;
  /** Resolves once everything committed so far is on disk; rejects when the WAL cannot be synced. */
  commitDurable(): Promise<void>;
  /** The error of the first sync that failed (then kept: see syncWal), or null. */
  failure(): KeyholeError | null;
  stats(): WalStats;
  /** Waits for a running checkpoint and closes the checkpoint connection. */
  close(): Promise<void>;
}

/** Consecutive background failures after which the writer checkpoints inline. */
const FAILURES_BEFORE_INLINE = 3;

function openAsyncConnection(path: string, timeoutMs: number): AsyncConnection {
  const require = createRequire(import.meta.url);
  const Database = require("libsql/promise") as new (
    path: string,
    opts: { timeout: number },
  ) => AsyncConnection;
  return new Database(path, { timeout: timeoutMs });
}

export function createWalOffLoop(options: WalOffLoopOptions): WalOffLoop {
  const walPath = `${options.path}-wal`;
  const every = options.checkpointEveryMs ?? 200;
  const counters: WalStats = {
    syncs: 0,
    checkpoints: 0,
    checkpointFailures: 0,
    inlineCheckpoints: 0,
  };
  let checkpointer: AsyncConnection | null = null;
  let checkpointing: Promise<void> | null = null;
  let lastCheckpoint = performance.now();
  let failuresInARow = 0;
  let closed = false;
  let armed = false;
  let failed: KeyholeError | null = null;

  async function syncWal(): Promise<void> {
    try {
      const file = await open(walPath, "r");
      try {
        await file.datasync();
      } finally {
        await file.close();
      }
    } catch (e) {
      // After a failed sync the state of the file on disk is unknown (what the kernel dropped is
      // not said), so the database takes no further writes until the signer restarts.
      failed = new KeyholeError(
        "storage_unavailable",
        "the database's write-ahead log could not be synced to disk; restart the signer once the disk is healthy",
        undefined,
        { cause: e },
      );
      throw failed;
    }
    counters.syncs++;
  }

  // One sync at a time; a caller arriving while one runs waits for the next, which starts after
  // its commit (a sync that began earlier might not cover it).
  let running: Promise<void> | null = null;
  let next: Promise<void> | null = null;
  function sync(): Promise<void> {
    if (running === null) {
      running = syncWal().finally(() => {
        running = null;
      });
      return running;
    }
    next ??= running
      .catch(() => undefined)
      .then(() => {
        next = null;
        return sync();
      });
    return next;
  }

  async function checkpoint(): Promise<void> {
    try {
      checkpointer ??=
        options.openCheckpointer?.() ?? openAsyncConnection(options.path, options.busyTimeoutMs);
      await checkpointer.exec("PRAGMA wal_checkpoint(PASSIVE)");
      counters.checkpoints++;
      failuresInARow = 0;
    } catch (e) {
      counters.checkpointFailures++;
      failuresInARow++;
      options.onEvent?.({
        event: "checkpoint_failed",
        error: e instanceof Error ? e.message.slice(0, 200) : String(e),
      });
      try {
        checkpointer?.close();
      } catch {
        // the next attempt opens a new one
      }
      checkpointer = null;
    } finally {
      lastCheckpoint = performance.now();
      checkpointing = null;
    }
  }

  /**
   * Checkpoints in two steps, both on libsql's worker thread (the event loop never waits):
   * - when one is due, a checkpoint starts in the background while the writer goes on committing; it
   *   copies the bulk of the WAL;
   * - after the commit that follows its end, the writer waits for a second one, which has only the
   *   last few commits to copy. A checkpoint that ends before the next commit has copied the whole
   *   WAL, so SQLite starts the WAL over at the next write instead of letting it grow under steady
   *   load; copying the bulk first leaves the writer's wait to the last commits' pages and the
   *   database file's fsync (15-21 ms measured here, against 14-27 ms for one checkpoint of all).
   */
  let catchUp = false;
  async function checkpointIfDue(): Promise<void> {
    if (closed || checkpointing !== null) return;
    if (catchUp) {
      catchUp = false;
      checkpointing = checkpoint();
      await checkpointing;
      return;
    }
    if (performance.now() - lastCheckpoint < every) return;
    if (failuresInARow >= FAILURES_BEFORE_INLINE) {
      lastCheckpoint = performance.now();
      counters.inlineCheckpoints++;
      options.onEvent?.({ event: "checkpoint_inline" });
      // Try the background again next time; a further failure brings the inline one back.
      failuresInARow = FAILURES_BEFORE_INLINE - 1;
      await options.inlineCheckpoint();
      return;
    }
    checkpointing = checkpoint().then(() => {
      catchUp = failuresInARow === 0;
    });
  }

  return {
    writerPragmas: ["PRAGMA synchronous = NORMAL", "PRAGMA wal_autocheckpoint = 0"],
    arm() {
      armed = true;
    },
    failure: () => failed,
    async commitDurable() {
      if (!armed) return;
      if (failed) throw failed;
      await sync();
      await checkpointIfDue();
    },
    stats: () => ({ ...counters }),
    async close() {
      closed = true;
      await checkpointing;
      try {
        checkpointer?.close();
      } catch {
        // closing anyway
      }
      checkpointer = null;
    },
  };
}
