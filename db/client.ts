/**
 * Opens the signer's libSQL database: an embedded file (`file:...`, the default) or a libSQL server
 * (`libsql://...` with an auth token). Migrations from db/migrations are applied before it is handed
 * out. Files run in WAL mode with a busy timeout, so readers never wait for the writer and a second
 * process waits briefly instead of failing at once.
 *
 * Two clients share the database: `read` (a pool, for concurrent queries) and `write` (one
 * connection, used by exactly one writer at a time — the store serialises writes through it, which is
 * also what keeps the audit hash chain linear). For files, statements prepared on `write` run inside
 * the writer's open transaction, so the writer's hot statements are built once.
 */
import { statSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { type Client, createClient, LibsqlError } from "@libsql/client";
import { drizzle, type LibSQLDatabase } from "drizzle-orm/libsql";
import { migrate } from "drizzle-orm/libsql/migrator";
import { KeyholeError } from "../core/errors.ts";
import { createFileClient } from "./file-client.ts";
import * as schema from "./schema.ts";
import { createWalOffLoop, type WalEvent, type WalOffLoop, type WalStats } from "./wal.ts";

export const MIGRATIONS_FOLDER = resolve(dirname(fileURLToPath(import.meta.url)), "migrations");

export type Orm = LibSQLDatabase<typeof schema>;

export interface DatabaseOptions {
  /** `file:relative/or/absolute.db`, `file:///abs.db`, `libsql://host`, `http(s)://host`. */
  url: string;
  /** Bearer token for a libSQL server (Turso). Never logged. */
  authToken?: string | undefined;
  /** How long a file connection waits for another writer's lock before failing (default 5000 ms). */
  busyTimeoutMs?: number | undefined;
  /** Background checkpoint failures and fallbacks of a file database (db/wal.ts), for the log. */
  onWalEvent?: ((e: WalEvent) => void) | undefined;
}

export interface Database {
  /** The URL without credentials, for logs. */
  readonly url: string;
  readonly kind: "file" | "remote";
  readonly read: Orm;
  readonly write: Orm;
  readonly readClient: Client;
  readonly writeClient: Client;
  /**
   * True when statements prepared on `write` run inside the writer's open transaction (file
   * databases: one connection, see FileClientOptions.joinOpenTransaction). Otherwise statements of a
   * transaction must be built on the transaction itself.
   */
  readonly writeJoinsTransaction: boolean;
  /**
   * Replaces the write connection. Called after a storage failure: a connection that hit SQLITE_BUSY
   * or an I/O error can keep a statement in progress and refuse every later transaction.
   */
  reopenWriter(): Promise<void>;
  /**
   * Throws storage_unavailable when a file database was deleted or replaced since it was opened
   * (SQLite would keep writing to the unlinked file and lose every write). One stat, skipped when
   * the last one that found the file is younger than `maxAgeMs` (reads pass 100 ms: a read of a
   * file deleted that recently still sees its last committed state; writes pass nothing and always
   * look). Once the file is found gone, or its WAL could not be synced (db/wal.ts), every later
   * call throws.
   */
  assertReachable(maxAgeMs?: number): void;
  /** WAL syncs and checkpoints of a file database's writer (db/wal.ts); null for a server. */
  walStats(): WalStats | null;
  close(): Promise<void>;
}

export async function openDatabase(options: DatabaseOptions): Promise<Database> {
  const url = options.url.trim();
  const kind = url.startsWith("file:") ? "file" : remoteScheme(url) ? "remote" : null;
  if (kind === null) {
    throw new KeyholeError(
      "storage_unavailable",
      `database URL must start with file:, libsql:, http(s): or ws(s): (got ${JSON.stringify(redactUrl(url).slice(0, 60))})`,
    );
  }
  const timeout = options.busyTimeoutMs ?? 5000;
  const base = {
    url,
    ...(options.authToken ? { authToken: options.authToken } : {}),
    ...(kind === "file" ? { timeout } : {}),
  };
  let readClient: Client | undefined;
  let writeClient: Client | undefined;
  const path = kind === "file" ? filePathOf(url) : null;
  // A file's writer commits without blocking on fsync or checkpoints (db/wal.ts); `:memory:` has
  // no WAL.
  let wal: WalOffLoop | null = null;
  if (path !== null && path !== ":memory:") {
    wal = createWalOffLoop({
      path,
      busyTimeoutMs: timeout,
      // The writer's connection is idle here: its commit has settled and the writer waits for this.
      inlineCheckpoint: async () => {
        await writeClient?.execute("PRAGMA wal_checkpoint(PASSIVE)").catch(() => undefined);
      },
      onEvent: options.onWalEvent,
    });
  }
  const walOffLoop = wal;
  // Files go through the statement-caching client (db/file-client.ts); servers through @libsql/client.
  const open = (concurrency: number, writer = false): Client =>
    path !== null
      ? createFileClient({
          path,
          timeoutMs: timeout,
          maxConnections: concurrency,
          joinOpenTransaction: writer,
          afterCommit: writer && walOffLoop ? () => walOffLoop.commitDurable() : undefined,
        })
      : createClient({ ...base, concurrency });
  const openWriter = async (): Promise<Client> => {
    const c = open(1, true);
    try {
      await c.execute("PRAGMA foreign_keys = ON");
      if (walOffLoop) {
        await c.execute("PRAGMA journal_mode = WAL");
        for (const pragma of walOffLoop.writerPragmas) await c.execute(pragma);
        walOffLoop.arm();
      }
    } catch (e) {
      c.close();
      throw e;
    }
    return c;
  };
  try {
    writeClient = await openWriter();
    let write = drizzle(writeClient, { schema });
    await applyMigrations(write);
    readClient = open(8);
    const read = drizzle(readClient, { schema });
    await readClient.execute("SELECT 1");
    const fileIdentity = path !== null ? identityOf(path) : null;
    let foundAt = Number.NEGATIVE_INFINITY;
    let gone = false;
    const rc = readClient;
    let wc = writeClient;
    return {
      url: redactUrl(url),
      kind,
      read,
      get write() {
        return write;
      },
      readClient: rc,
      writeJoinsTransaction: kind === "file",
      get writeClient() {
        return wc;
      },
      async reopenWriter() {
        const next = await openWriter().catch((e: unknown) => {
          throw toStorageError(e, `cannot reopen the database ${redactUrl(url)}`);
        });
        wc.close();
        wc = next;
        writeClient = next;
        write = drizzle(next, { schema });
      },
      assertReachable(maxAgeMs = 0) {
        const walFailure = walOffLoop?.failure();
        if (walFailure) throw walFailure;
        if (path === null || fileIdentity === null || path === ":memory:") return;
        if (!gone && maxAgeMs > 0 && performance.now() - foundAt < maxAgeMs) return;
        const now = identityOf(path);
        if (gone || now === null || now !== fileIdentity) {
          gone = true;
          throw new KeyholeError(
            "storage_unavailable",
            "the database file is gone or was replaced; restart the signer",
          );
        }
        foundAt = performance.now();
      },
      walStats: () => walOffLoop?.stats() ?? null,
      async close() {
        await walOffLoop?.close();
        rc.close();
        wc.close();
      },
    };
  } catch (e) {
    await wal?.close();
    readClient?.close();
    writeClient?.close();
    throw toStorageError(e, `cannot open the database ${redactUrl(url)}`);
  }
}

/**
 * drizzle's migrator reads which migrations ran before it opens its transaction, so two processes
 * starting on a new database at once can both try to apply the first one. The loser sees "already
 * exists" after the winner committed (tables and journal row together); running again then finds
 * nothing left to do.
 */
async function applyMigrations(orm: Orm): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await migrate(orm, { migrationsFolder: MIGRATIONS_FOLDER });
      return;
    } catch (e) {
      if (attempt >= 5 || !/already exists/.test(causeMessages(e))) throw e;
      await new Promise((r) => setTimeout(r, 20 * attempt));
    }
  }
}

function causeMessages(e: unknown): string {
  let out = "";
  for (let cur: unknown = e, i = 0; cur instanceof Error && i < 5; cur = cur.cause, i++) {
    out += ` ${cur.message}`;
  }
  return out;
}

function remoteScheme(url: string): boolean {
  return /^(libsql|https?|wss?):\/\//.test(url);
}

/** The path SQLite opens for a `file:` URL (query string dropped). */
export function filePathOf(url: string): string {
  const withoutQuery = url.replace(/\?.*$/, "");
  if (withoutQuery.startsWith("file://")) return decodeURIComponent(new URL(withoutQuery).pathname);
  return decodeURIComponent(withoutQuery.slice("file:".length));
}

function identityOf(path: string): string | null {
  if (path === ":memory:") return "memory";
  try {
    const st = statSync(path);
    return `${st.dev}:${st.ino}`;
  } catch {
    return null;
  }
}

/** The URL with any userinfo and query (which may carry a token) removed. */
export function redactUrl(url: string): string {
  return url.replace(/\/\/[^/@]*@/, "//").replace(/\?.*$/, "");
}

const STORAGE_CODES =
  /^(SQLITE_(READONLY|BUSY|LOCKED|CANTOPEN|IOERR|FULL|CORRUPT|NOTADB|PERM|PROTOCOL|AUTH|NOMEM|INTERRUPT|ABORT)|CLIENT_CLOSED|TRANSACTION_ACTIVE|SERVER_ERROR|HRANA_|HRANA_WEBSOCKET|URL_|STREAM_|WEBSOCKETS_|PROTOCOL_|HTTP_)/;

/** True when the error says the database is unusable (read-only, locked, gone, unreachable). */
export function isStorageFailure(e: unknown): boolean {
  if (e instanceof KeyholeError) return e.code === "storage_unavailable";
  const code = libsqlCode(e);
  if (code !== null) return STORAGE_CODES.test(code);
  const msg = e instanceof Error ? e.message : String(e);
  return /ECONNREFUSED|ECONNRESET|ENOTFOUND|EHOSTUNREACH|ETIMEDOUT|fetch failed|socket|readonly|read-only|locked|busy|unable to open|disk I\/O/i.test(
    msg,
  );
}

/** The libSQL/SQLite error code (extended when available), e.g. SQLITE_CONSTRAINT_UNIQUE. */
export function libsqlCode(e: unknown): string | null {
  for (let cur: unknown = e, depth = 0; cur && depth < 5; depth++) {
    if (cur instanceof LibsqlError) {
      return cur.extendedCode ?? cur.code;
    }
    const c = (cur as { code?: unknown }).code;
    if (typeof c === "string" && /^(SQLITE_|HRANA|CLIENT_|TRANSACTION_)/.test(c)) return c;
    cur = (cur as { cause?: unknown }).cause;
  }
  return null;
}

/** Wraps a database failure as storage_unavailable; the cause is kept for logs, the message is generic. */
export function toStorageError(e: unknown, what: string): KeyholeError {
  if (e instanceof KeyholeError) return e;
  const code = libsqlCode(e) ?? (e instanceof Error ? e.name : "unknown");
  return new KeyholeError(
    "storage_unavailable",
    `${what}: storage is unavailable (${code})`,
    undefined,
    { cause: e },
  );
}
