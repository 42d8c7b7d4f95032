/**
 * A libSQL client for `file:` databases that keeps its prepared statements.
 *
 * @libsql/client's file backend prepares every statement again on each call and asks for its
 * columns twice; on the signer's hot path (enrollment: ~19 short statements) that preparation was
 * the largest single cost measured (`npm run bench`, signer profile). This client speaks the same
 * `Client` interface drizzle uses, over the same embedded engine (the `libsql` package that
 * @libsql/client itself wraps), and keeps one statement per SQL text per connection (LRU, bounded),
 * so a statement is prepared once and then only bound and stepped. Everything else matches the
 * library: positional and named arguments, integers as numbers (or a RangeError past 2^53), blobs as
 * ArrayBuffers, rows with named and indexed columns, BEGIN IMMEDIATE transactions that own their
 * connection until they settle, and errors as LibsqlError with the SQLite code.
 *
 * Remote URLs (libsql://, https://) keep using @libsql/client.
 */
import { Buffer } from "node:buffer";
import {
  type Client,
  type InArgs,
  type InStatement,
  type InValue,
  LibsqlError,
  type ResultSet,
  type Transaction,
  type TransactionMode,
} from "@libsql/client";
import Sqlite from "libsql";

type Connection = InstanceType<typeof Sqlite>;
type Statement = ReturnType<Connection["prepare"]>;

/** Statements kept per connection; the signer uses a few dozen distinct texts. */
const STATEMENT_CACHE_SIZE = 256;

interface Prepared {
  stmt: Statement;
  /** Column names, or null for a statement that returns no rows. */
  columns: string[] | null;
  columnTypes: string[];
}

const EXPLAIN = /^\s*explain\b/i;

function describe(stmt: Statement): Prepared {
  stmt.safeIntegers(true);
  if (!stmt.reader) return { stmt, columns: null, columnTypes: [] };
  stmt.raw(true);
  const cols = stmt.columns();
  return { stmt, columns: cols.map((c) => c.name), columnTypes: cols.map((c) => c.type ?? "") };
}

class CachedConnection {
  readonly db: Connection;
  private readonly cache = new Map<string, Prepared>();

  private readonly path: string;
  private readonly timeoutMs: number | undefined;

  constructor(path: string, timeoutMs: number | undefined) {
    this.path = path;
    this.timeoutMs = timeoutMs;
    this.db = new Sqlite(path, timeoutMs === undefined ? {} : { timeout: timeoutMs });
  }

  get open(): boolean {
    return this.db.open;
  }

  get inTransaction(): boolean {
    return this.db.inTransaction;
  }

  private prepared(sql: string): Prepared {
    const hit = this.cache.get(sql);
    if (hit !== undefined) {
      // Most recently used last, so the first key is the one to evict.
      this.cache.delete(sql);
      this.cache.set(sql, hit);
      return hit;
    }
    const entry = describe(this.db.prepare(sql));
    this.cache.set(sql, entry);
    if (this.cache.size > STATEMENT_CACHE_SIZE) {
      const oldest = this.cache.keys().next().value;
      if (oldest !== undefined) this.cache.delete(oldest);
    }
    return entry;
  }

  execute(stmt: InStatement): ResultSet {
    const { sql, args } = normalize(stmt);
    if (EXPLAIN.test(sql)) return this.explain(sql, args);
    return this.runPrepared(sql, args);
  }

  private runPrepared(sql: string, args: InArgs): ResultSet {
    try {
      const p = this.prepared(sql);
      const bound = bindArgs(args);
      if (p.columns === null) {
        const info = p.stmt.run(bound) as { changes: number; lastInsertRowid: number | bigint };
        return resultSet([], [], [], info.changes, BigInt(info.lastInsertRowid));
      }
      const columns = p.columns;
      const rows = (p.stmt.all(bound) as unknown[][]).map((raw) => rowOf(raw, columns));
      return resultSet(columns, p.columnTypes, rows, 0, undefined);
    } catch (e) {
      throw asLibsqlError(e);
    }
  }

  /**
   * libsql leaves an EXPLAIN statement active after its last row, and an active statement pins its
   * connection's read snapshot until it is finalized: this connection would stop seeing commits. An
   * EXPLAIN (a diagnostic) runs on a connection of its own, closed before returning (so inside a
   * transaction it does not see that transaction's uncommitted schema changes).
   */
  private explain(sql: string, args: InArgs): ResultSet {
    const once = new CachedConnection(this.path, this.timeoutMs);
    try {
      return once.runPrepared(sql, args);
    } finally {
      once.close();
    }
  }

  close(): void {
    this.cache.clear();
    try {
      if (this.db.open) this.db.close();
    } catch {
      // nothing useful to do while tearing down
    }
  }
}

export interface FileClientOptions {
  /** Filesystem path (or `:memory:`). */
  path: string;
  /** Busy timeout in milliseconds. */
  timeoutMs?: number | undefined;
  /** Connections at most (each open transaction holds one). Default 1. */
  maxConnections?: number | undefined;
  /**
   * For a client with one connection owned by a single writer: a statement executed on the client
   * while that writer's transaction holds the connection runs inside the transaction, instead of
   * failing with TRANSACTION_ACTIVE. This lets statements prepared once on the client (drizzle's
   * `.prepare()`) serve every transaction. Only the owner of the transaction may use the client.
   */
  joinOpenTransaction?: boolean | undefined;
  /**
   * Awaited after every write this client commits (a transaction's COMMIT, a batch, a statement run
   * outside a transaction) before the call resolves: db/wal.ts's durable commit, for a connection
   * whose own COMMIT does not sync.
   */
  afterCommit?: (() => Promise<void>) | undefined;
}

/** Opens a `file:` database with statement caching; checks that it can be read before returning. */
export function createFileClient(options: FileClientOptions): Client {
  // Every connection to `:memory:` would be a database of its own.
  const max = options.path === ":memory:" ? 1 : Math.max(1, options.maxConnections ?? 1);
  if (options.joinOpenTransaction && max !== 1) {
    throw new LibsqlError("joinOpenTransaction needs a client with one connection", "CLIENT_ERROR");
  }
  // The connection an open transaction holds (tracked only when statements may join it).
  let inTransaction: CachedConnection | null = null;
  const idle: CachedConnection[] = [];
  const all = new Set<CachedConnection>();
  const waiters: { resolve: (c: CachedConnection) => void; reject: (e: unknown) => void }[] = [];
  let closed = false;

  const checkOpen = () => {
    if (closed) throw new LibsqlError("The client is closed", "CLIENT_CLOSED");
  };
  const openOne = () => {
    const c = new CachedConnection(options.path, options.timeoutMs);
    all.add(c);
    return c;
  };
  const acquire = (): Promise<CachedConnection> => {
    checkOpen();
    const c = idle.pop();
    if (c !== undefined) return Promise.resolve(c);
    if (all.size < max) return Promise.resolve(openOne());
    if (max === 1) {
      return Promise.reject(
        new LibsqlError(
          "This client has a single connection, which an open transaction is holding; commit or roll back first.",
          "TRANSACTION_ACTIVE",
        ),
      );
    }
    return new Promise((resolve, reject) => waiters.push({ resolve, reject }));
  };
  const release = (c: CachedConnection) => {
    if (c.open && c.inTransaction) {
      try {
        c.execute("ROLLBACK");
      } catch {
        c.close();
      }
    }
    if (closed || !c.open) {
      c.close();
      all.delete(c);
      return;
    }
    const waiter = waiters.shift();
    if (waiter) waiter.resolve(c);
    else idle.push(c);
  };
  const afterCommit = options.afterCommit;
  const withConnection = async <T>(fn: (c: CachedConnection) => T): Promise<T> => {
    const c = await acquire();
    let result: T;
    try {
      checkOpen();
      result = fn(c);
    } finally {
      release(c);
    }
    if (afterCommit) await afterCommit();
    return result;
  };

  const first = openOne();
  try {
    first.execute("SELECT 1");
  } catch (e) {
    first.close();
    throw e;
  }
  idle.push(first);

  const client: Client = {
    protocol: "file",
    get closed() {
      return closed;
    },
    execute(stmtOrSql: InStatement | string, args?: InArgs): Promise<ResultSet> {
      const stmt = normalize(stmtOrSql, args);
      const joined = inTransaction;
      if (joined !== null) {
        try {
          checkOpen();
          return Promise.resolve(joined.execute(stmt));
        } catch (e) {
          return Promise.reject(e);
        }
      }
      return withConnection((c) => c.execute(stmt));
    },
    batch(stmts, mode = "deferred") {
      return withConnection((c) => runBatch(c, stmts, beginOf(mode)));
    },
    migrate(stmts) {
      return withConnection((c) => {
        c.execute("PRAGMA foreign_keys=off");
        try {
          return runBatch(c, stmts, "BEGIN DEFERRED");
        } finally {
          c.execute("PRAGMA foreign_keys=on");
        }
      });
    },
    async transaction(mode: TransactionMode = "write"): Promise<Transaction> {
      const c = await acquire();
      try {
        checkOpen();
        c.execute(beginOf(mode));
      } catch (e) {
        release(c);
        throw e;
      }
      if (!options.joinOpenTransaction) return fileTransaction(c, release, afterCommit);
      inTransaction = c;
      return fileTransaction(
        c,
        (held) => {
          if (inTransaction === held) inTransaction = null;
          release(held);
        },
        afterCommit,
      );
    },
    executeMultiple(sql: string) {
      return withConnection((c) => {
        try {
          c.db.exec(sql);
        } catch (e) {
          throw asLibsqlError(e);
        }
      });
    },
    async sync() {
      return undefined;
    },
    async reconnect() {
      for (const c of idle.splice(0)) {
        c.close();
        all.delete(c);
      }
      closed = false;
    },
    close() {
      closed = true;
      inTransaction = null;
      for (const c of all) c.close();
      all.clear();
      idle.length = 0;
      for (const w of waiters.splice(0)) {
        w.reject(new LibsqlError("The client is closed", "CLIENT_CLOSED"));
      }
    },
  };
  return client;
}

function fileTransaction(
  c: CachedConnection,
  release: (c: CachedConnection) => void,
  afterCommit: (() => Promise<void>) | undefined,
): Transaction {
  let held: CachedConnection | null = c;
  const settle = () => {
    if (held !== null) release(held);
    held = null;
  };
  const live = () => {
    if (held === null) throw new LibsqlError("The transaction is closed", "TRANSACTION_CLOSED");
    return held;
  };
  return {
    get closed() {
      return held === null;
    },
    async execute(stmtOrSql: InStatement | string, args?: InArgs) {
      return live().execute(normalize(stmtOrSql, args));
    },
    async batch(stmts: BatchItem[]) {
      const conn = live();
      return stmts.map((s) => conn.execute(batchItem(s)));
    },
    async executeMultiple(sql: string) {
      try {
        live().db.exec(sql);
      } catch (e) {
        throw asLibsqlError(e);
      }
    },
    async rollback() {
      try {
        if (held?.open && held.inTransaction) held.execute("ROLLBACK");
      } finally {
        settle();
      }
    },
    async commit() {
      try {
        live().execute("COMMIT");
      } finally {
        settle();
      }
      if (afterCommit) await afterCommit();
    },
    close() {
      settle();
    },
  };
}

type BatchItem = InStatement | [string, InArgs?];

function runBatch(c: CachedConnection, stmts: BatchItem[], begin: string): ResultSet[] {
  c.execute(begin);
  try {
    const out = stmts.map((s) => c.execute(batchItem(s)));
    c.execute("COMMIT");
    return out;
  } finally {
    if (c.inTransaction) c.execute("ROLLBACK");
  }
}

function batchItem(s: BatchItem): InStatement {
  return Array.isArray(s) ? { sql: s[0], args: s[1] ?? [] } : s;
}

function beginOf(mode: TransactionMode): string {
  if (mode === "write") return "BEGIN IMMEDIATE";
  if (mode === "read") return "BEGIN TRANSACTION READONLY";
  if (mode === "deferred") return "BEGIN DEFERRED";
  throw new RangeError(`unknown transaction mode ${String(mode)}`);
}

/** `execute(sql, args)` and `execute({ sql, args })` alike. */
function normalize(stmt: InStatement, args?: InArgs): { sql: string; args: InArgs } {
  if (typeof stmt === "string") return { sql: stmt, args: args ?? [] };
  return { sql: stmt.sql, args: stmt.args ?? [] };
}

function bindArgs(args: InArgs): unknown[] | Record<string, unknown> {
  if (Array.isArray(args)) return args.map(toSql);
  const named: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(args)) {
    const bare = name[0] === ":" || name[0] === "@" || name[0] === "$" ? name.slice(1) : name;
    named[bare] = toSql(value);
  }
  return named;
}

const MIN_I64 = -(2n ** 63n);
const MAX_I64 = 2n ** 63n - 1n;

function toSql(value: InValue): unknown {
  if (typeof value === "number") {
    if (!Number.isFinite(value)) {
      throw new RangeError("Only finite numbers (not Infinity or NaN) can be passed as arguments");
    }
    return value;
  }
  if (typeof value === "bigint") {
    if (value < MIN_I64 || value > MAX_I64) {
      throw new RangeError("bigint is too large to be represented as a 64-bit integer");
    }
    return value;
  }
  if (typeof value === "boolean") return value ? 1 : 0;
  if (value instanceof ArrayBuffer) return Buffer.from(value);
  if (value instanceof Date) return value.valueOf();
  if (value === undefined) throw new TypeError("undefined cannot be passed as an argument");
  return value;
}

function fromSql(value: unknown): unknown {
  if (typeof value === "bigint") {
    if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER)) {
      throw new RangeError(
        "Received integer which cannot be safely represented as a JavaScript number",
      );
    }
    return Number(value);
  }
  if (value instanceof Buffer) {
    return value.buffer.slice(value.byteOffset, value.byteOffset + value.byteLength);
  }
  return value;
}

/** A row as the library returns it: values by index (not enumerable) and by column name. */
function rowOf(raw: unknown[], columns: string[]): ResultSet["rows"][number] {
  const row: Record<string | number, unknown> = {};
  Object.defineProperty(row, "length", { value: raw.length });
  for (let i = 0; i < raw.length; i++) {
    const value = fromSql(raw[i]);
    Object.defineProperty(row, i, { value });
    const name = columns[i] as string;
    if (!Object.hasOwn(row, name)) {
      Object.defineProperty(row, name, {
        value,
        enumerable: true,
        configurable: true,
        writable: true,
      });
    }
  }
  return row as unknown as ResultSet["rows"][number];
}

function resultSet(
  columns: string[],
  columnTypes: string[],
  rows: ResultSet["rows"],
  rowsAffected: number,
  lastInsertRowid: bigint | undefined,
): ResultSet {
  return {
    columns,
    columnTypes,
    rows,
    rowsAffected,
    lastInsertRowid,
    toJSON() {
      return { columns, columnTypes, rows: rows.map((r) => Array.from(r)), rowsAffected };
    },
  };
}

function asLibsqlError(e: unknown): unknown {
  if (e instanceof LibsqlError) return e;
  const err = e as { code?: unknown; rawCode?: unknown; message?: unknown };
  if (e instanceof Error && typeof err.code === "string" && err.code.startsWith("SQLITE")) {
    const rawCode = typeof err.rawCode === "number" ? err.rawCode : undefined;
    const base = rawCode === undefined ? err.code : baseCodeOf(rawCode, err.code);
    return new LibsqlError(e.message, base, err.code, rawCode, e);
  }
  return e;
}

/** SQLite's primary result code name for an extended code (SQLITE_CONSTRAINT_UNIQUE -> SQLITE_CONSTRAINT). */
function baseCodeOf(rawCode: number, extended: string): string {
  if ((rawCode & 0xff) === rawCode) return extended;
  const cut = extended.indexOf("_", "SQLITE_".length);
  return cut === -1 ? extended : extended.slice(0, cut);
}
