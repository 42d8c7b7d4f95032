// The statement-caching file client against real libSQL files: what drizzle and the store rely on
// (rows, integers, blobs, named arguments, transactions, error codes) and what caching must not
// break (a connection sees other connections' commits after every statement shape; a statement that
// failed runs again).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Client, createClient, LibsqlError } from "@libsql/client";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { isStorageFailure, libsqlCode } from "./client.ts";
import { createFileClient } from "./file-client.ts";

let dir: string;
let path: string;
let opened: Client[];

function open(maxConnections = 1, timeoutMs?: number): Client {
  const c = createFileClient({ path, maxConnections, timeoutMs });
  opened.push(c);
  return c;
}

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), "keyhole-fileclient-"));
  path = join(dir, "t.db");
  opened = [];
  const w = open();
  await w.execute("PRAGMA journal_mode = WAL");
  await w.execute("create table t (a integer primary key, b text unique, n integer, x blob)");
});
afterEach(() => {
  for (const c of opened) c.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("file client", () => {
  it("returns rows by name and by index, as @libsql/client does", async () => {
    const c = open();
    await c.execute({ sql: "insert into t (b, n) values (?, ?)", args: ["one", 1] });
    const lib = createClient({ url: `file:${path}` });
    try {
      const sql = "select a, b, n, x from t";
      const [mine, theirs] = [await c.execute(sql), await lib.execute(sql)];
      expect(mine.columns).toEqual(theirs.columns);
      expect(mine.columnTypes).toEqual(theirs.columnTypes);
      expect({ ...mine.rows[0] }).toEqual({ ...theirs.rows[0] });
      expect(Array.from(mine.rows[0] as ArrayLike<unknown>)).toEqual(
        Array.from(theirs.rows[0] as ArrayLike<unknown>),
      );
      expect(Object.keys(mine.rows[0] as object)).toEqual(["a", "b", "n", "x"]);
    } finally {
      lib.close();
    }
  });

  it("binds named arguments, booleans, dates and blobs; refuses unsafe integers", async () => {
    const c = open();
    const blob = new Uint8Array([0, 1, 2, 255]);
    await c.execute({
      sql: "insert into t (b, n, x) values (:b, @n, $x)",
      args: { ":b": "named", "@n": true, $x: blob },
    });
    await c.execute({ sql: "insert into t (b, n) values (?, ?)", args: ["date", new Date(5000)] });
    const rows = (await c.execute("select b, n, x from t order by a")).rows;
    expect(rows.map((r) => [r.b, r.n])).toEqual([
      ["named", 1],
      ["date", 5000],
    ]);
    expect(new Uint8Array(rows[0]?.x as ArrayBuffer)).toEqual(blob);
    await c.execute({ sql: "insert into t (b, n) values (?, ?)", args: ["big", 2n ** 60n] });
    await expect(c.execute("select n from t where b = 'big'")).rejects.toThrow(RangeError);
    await expect(c.execute({ sql: "select ?", args: [Number.NaN] })).rejects.toThrow(RangeError);
  });

  it("a connection sees every commit of another after each statement shape, EXPLAIN included", async () => {
    const w = open();
    const r = open(8);
    const shapes = [
      "select b from t where a = 1",
      "select b from t",
      "select b from t order by a desc limit 1",
      "select count(*) from t",
      "EXPLAIN QUERY PLAN select b from t where a = 1",
      "EXPLAIN select b from t",
      "PRAGMA foreign_keys",
    ];
    let n = 0;
    for (const shape of shapes) {
      await r.execute(shape);
      await r.execute("select b from t where a = 1");
      await w.execute({ sql: "insert into t (b) values (?)", args: [`row${++n}`] });
      const seen = await r.execute("select count(*) as n from t");
      expect(seen.rows[0]?.n, `stale read after ${shape}`).toBe(n);
    }
  });

  it("errors are LibsqlError with the SQLite code, and the failed statement runs again", async () => {
    const c = open();
    const insert = "insert into t (b) values (?)";
    await c.execute({ sql: insert, args: ["dup"] });
    const err = await c.execute({ sql: insert, args: ["dup"] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LibsqlError);
    expect((err as LibsqlError).code).toBe("SQLITE_CONSTRAINT");
    expect(libsqlCode(err)).toBe("SQLITE_CONSTRAINT_UNIQUE");
    expect(isStorageFailure(err)).toBe(false);
    await c.execute({ sql: insert, args: ["fresh"] });
    await expect(c.execute("select nope from t")).rejects.toBeInstanceOf(LibsqlError);
    expect((await c.execute("select count(*) as n from t")).rows[0]?.n).toBe(2);
  });

  it("a transaction owns its connection: rollback leaves nothing, commit is seen, a busy writer fails as storage", async () => {
    const w = open(1);
    const tx = await w.transaction("write");
    await tx.execute({ sql: "insert into t (b) values (?)", args: ["rolled back"] });
    await expect(w.execute("select 1")).rejects.toMatchObject({ code: "TRANSACTION_ACTIVE" });
    await tx.rollback();
    expect(tx.closed).toBe(true);
    const tx2 = await w.transaction("write");
    await tx2.execute({ sql: "insert into t (b) values (?)", args: ["kept"] });
    // Another writer on the same file waits its busy timeout, then fails with a storage code.
    const other = open(1, 50);
    const busy = await other.transaction("write").catch((e: unknown) => e);
    expect(isStorageFailure(busy)).toBe(true);
    await tx2.commit();
    const rows = await open(2).execute("select b from t");
    expect(rows.rows.map((r) => r.b)).toEqual(["kept"]);
  });

  it("joinOpenTransaction: the owner's statements on the client run inside its open transaction", async () => {
    const w = createFileClient({ path, joinOpenTransaction: true });
    opened.push(w);
    const reader = open(2);
    const tx = await w.transaction("write");
    await w.execute({ sql: "insert into t (b) values (?)", args: ["joined"] });
    expect((await tx.execute("select count(*) as n from t")).rows[0]?.n).toBe(1);
    expect((await reader.execute("select count(*) as n from t")).rows[0]?.n).toBe(0);
    await tx.rollback();
    expect((await w.execute("select count(*) as n from t")).rows[0]?.n).toBe(0);
    const tx2 = await w.transaction("write");
    await w.execute({ sql: "insert into t (b) values (?)", args: ["kept"] });
    await tx2.commit();
    // After the transaction ends, statements run on their own again.
    await w.execute({ sql: "insert into t (b) values (?)", args: ["alone"] });
    const rows = await reader.execute("select b from t order by a");
    expect(rows.rows.map((r) => r.b)).toEqual(["kept", "alone"]);
    // A failed joined statement is the transaction's to handle; the transaction stays usable.
    const tx3 = await w.transaction("write");
    await expect(
      w.execute({ sql: "insert into t (b) values (?)", args: ["kept"] }),
    ).rejects.toBeInstanceOf(LibsqlError);
    await tx3.commit();
    expect(() => createFileClient({ path, maxConnections: 2, joinOpenTransaction: true })).toThrow(
      LibsqlError,
    );
  });

  it("batch is atomic: a failing statement leaves none of the batch", async () => {
    const c = open();
    await expect(
      c.batch([
        { sql: "insert into t (b) values (?)", args: ["a"] },
        { sql: "insert into t (b) values (?)", args: ["a"] },
      ]),
    ).rejects.toBeInstanceOf(LibsqlError);
    expect((await c.execute("select count(*) as n from t")).rows[0]?.n).toBe(0);
    const ok = await c.batch([
      ["insert into t (b) values (?)", ["b"]],
      "select count(*) as n from t",
    ]);
    expect(ok[1]?.rows[0]?.n).toBe(1);
  });

  it("a closed client refuses work with CLIENT_CLOSED", async () => {
    const c = open();
    c.close();
    expect(c.closed).toBe(true);
    await expect(c.execute("select 1")).rejects.toMatchObject({ code: "CLIENT_CLOSED" });
  });
});
