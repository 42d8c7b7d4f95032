/**
 * The statements the writer runs for every issuance, each defined once. On a file database they are
 * prepared once on the write connection and run inside the writer's open transaction
 * (Database.writeJoinsTransaction): drizzle composes their SQL at startup instead of in every
 * transaction, which was a fifth of the signer's CPU per enrollment. On a libSQL server they are
 * built on each transaction, like any other query there.
 *
 * Placeholders take driver values (timestamps as epoch milliseconds, JSON as text): `driverRow`
 * converts a row with the columns' own encoders, so a prepared insert stores exactly what a built one
 * would.
 */
import type { ResultSet } from "@libsql/client";
import { and, desc, eq, getTableColumns, gt, isNull, max, ne, type SQL, sql } from "drizzle-orm";
import type { BaseSQLiteDatabase, SQLiteColumn, SQLiteTable } from "drizzle-orm/sqlite-core";
import type { Database, Orm } from "../../db/client.ts";
import type * as schema from "../../db/schema.ts";
import {
  auditEvents,
  certificates,
  enrollmentCodes,
  hosts,
  hostTokens,
  idempotency,
} from "../../db/schema.ts";
import type { WriteTx } from "./writer.ts";

type Builder = BaseSQLiteDatabase<"async", ResultSet, typeof schema>;
const ph = sql.placeholder;

/** A row's values as the driver stores them, each through its column's encoder. */
export function driverRow(
  table: SQLiteTable,
  row: Record<string, unknown>,
): Record<string, unknown> {
  const columns = getTableColumns(table);
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(row)) {
    const column = columns[key];
    if (!column) throw new Error(`${key} is not a column of this table`);
    out[key] = value === null || value === undefined ? null : column.mapToDriverValue(value);
  }
  return out;
}

/**
 * `column = 'value'` with the constant written into the SQL. SQLite plans a statement that compares a
 * partial index's column (cas.state, host_tokens.state) with a bound parameter by that parameter's
 * value, and so prepares it again every time it is bound: ~40 µs a call, measured. A literal keeps
 * the plan.
 */
export function equalsConstant(column: SQLiteColumn, value: string): SQL {
  if (!/^[a-z_]+$/.test(value)) throw new Error(`not a plain constant: ${value}`);
  return sql`${column} = ${sql.raw(`'${value}'`)}`;
}

/**
 * A placeholder that takes a driver value. drizzle runs a placeholder given straight to `values()` or
 * `set()` through the column's encoder, which fails on NULL for timestamps; inside `sql` it is bound
 * as given, like the placeholders of a WHERE clause.
 */
function driverPlaceholder(name: string) {
  return sql`${ph(name)}`;
}

/** Driver-value placeholders named after the columns, for a prepared insert of whole rows. */
function rowPlaceholders<T extends SQLiteTable>(table: T, omit: string[] = []) {
  const values: Record<string, ReturnType<typeof driverPlaceholder>> = {};
  for (const key of Object.keys(getTableColumns(table))) {
    if (!omit.includes(key)) values[key] = driverPlaceholder(key);
  }
  return values as never;
}

const DEFINITIONS = {
  findIdempotency: (b: Builder) =>
    b
      .select()
      .from(idempotency)
      .where(and(eq(idempotency.org, ph("org")), eq(idempotency.key, ph("key"))))
      .prepare(),
  insertIdempotency: (b: Builder) =>
    b.insert(idempotency).values(rowPlaceholders(idempotency)).prepare(),
  /** Uses the code once: only an unused, unexpired code matches. */
  consumeCode: (b: Builder) =>
    b
      .update(enrollmentCodes)
      .set({ usedAt: driverPlaceholder("now") })
      .where(
        and(
          eq(enrollmentCodes.hash, ph("hash")),
          isNull(enrollmentCodes.usedAt),
          gt(enrollmentCodes.expiresAt, ph("now")),
        ),
      )
      .returning({ hostId: enrollmentCodes.hostId })
      .prepare(),
  /** Marks the host enrolled unless it is blocked. */
  markEnrolled: (b: Builder) =>
    b
      .update(hosts)
      .set({ state: "enrolled" })
      .where(and(eq(hosts.id, ph("hostId")), ne(hosts.state, "blocked")))
      .returning({ id: hosts.id, networkId: hosts.networkId, name: hosts.name, state: hosts.state })
      .prepare(),
  /** Retires the host's current token (enrollment). */
  retireTokens: (b: Builder) =>
    b
      .update(hostTokens)
      .set({ state: "rotated" })
      .where(and(eq(hostTokens.hostId, ph("hostId")), equalsConstant(hostTokens.state, "current")))
      .prepare(),
  /** Retires exactly the presented token, if it is still current (renewal). */
  rotateToken: (b: Builder) =>
    b
      .update(hostTokens)
      .set({ state: "rotated" })
      .where(and(eq(hostTokens.hash, ph("hash")), equalsConstant(hostTokens.state, "current")))
      .returning({ hostId: hostTokens.hostId, generation: hostTokens.generation })
      .prepare(),
  lastGeneration: (b: Builder) =>
    b
      .select({ g: max(hostTokens.generation) })
      .from(hostTokens)
      .where(eq(hostTokens.hostId, ph("hostId")))
      .prepare(),
  insertToken: (b: Builder) => b.insert(hostTokens).values(rowPlaceholders(hostTokens)).prepare(),
  insertCertificate: (b: Builder) =>
    b.insert(certificates).values(rowPlaceholders(certificates)).prepare(),
  /** One audit row; its seq is the statement's last insert rowid (seq is the rowid). */
  insertAudit: (b: Builder) =>
    b
      .insert(auditEvents)
      .values(rowPlaceholders(auditEvents, ["seq"]))
      .prepare(),
  auditHead: (b: Builder) =>
    b
      .select({ hash: auditEvents.hash })
      .from(auditEvents)
      .orderBy(desc(auditEvents.seq))
      .limit(1)
      .prepare(),
};

export type TxStatements = {
  readonly [K in keyof typeof DEFINITIONS]: ReturnType<(typeof DEFINITIONS)[K]>;
} & {
  /**
   * True when rows are best inserted one prepared statement each (file: no round trips); false when
   * one multi-row statement per batch saves round trips to a server.
   */
  readonly rowByRow: boolean;
};

// One prepared set per write connection (a replaced connection gets a new set).
const preparedByOrm = new WeakMap<Orm, TxStatements>();

function prepareAll(b: Builder): TxStatements {
  const out: Record<string, unknown> = { rowByRow: true };
  for (const [name, define] of Object.entries(DEFINITIONS)) out[name] = define(b);
  return out as TxStatements;
}

/** Builds each statement on `tx` when first used in it. */
function builtOn(tx: WriteTx): TxStatements {
  const built: Record<string, unknown> = {};
  return new Proxy({} as TxStatements, {
    get(_, name: string) {
      if (name === "rowByRow") return false;
      if (!(name in built)) {
        const define = DEFINITIONS[name as keyof typeof DEFINITIONS];
        if (!define) return undefined;
        built[name] = define(tx as unknown as Builder);
      }
      return built[name];
    },
  });
}

/** One of these statements prepared on another handle (the read side's copy of the same query). */
export function prepareStatement<K extends keyof typeof DEFINITIONS>(
  name: K,
  on: Orm,
): TxStatements[K] {
  return DEFINITIONS[name](on as unknown as Builder) as TxStatements[K];
}

/** The statements for the writer's transaction `tx` on `db`. */
export function txStatements(db: Database, tx: WriteTx): TxStatements {
  if (!db.writeJoinsTransaction) return builtOn(tx);
  const orm = db.write;
  let set = preparedByOrm.get(orm);
  if (!set) {
    set = prepareAll(orm as unknown as Builder);
    preparedByOrm.set(orm, set);
  }
  return set;
}
