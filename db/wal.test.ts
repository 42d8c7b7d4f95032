// db/wal.ts against real libSQL files: the writer's commits are synced by the WAL fdatasync before
// they resolve, checkpoints run on their own connection and keep the WAL from growing, a WAL that
// cannot be synced fails the write as storage_unavailable, and failing background checkpoints hand
// over to the writer's own.
import { mkdtempSync, rmSync, statSync, unlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Client } from "@libsql/client";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { KeyholeError } from "../core/errors.ts";
import { isStorageFailure, openDatabase } from "./client.ts";
import { createFileClient } from "./file-client.ts";
import { type AsyncConnection, createWalOffLoop, type WalEvent, type WalOffLoop } from "./wal.ts";

let dir: string;
let path: string;
const cleanups: (() => Promise<void> | void)[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "keyhole-wal-"));
  path = join(dir, "w.db");
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  rmSync(dir, { recursive: true, force: true });
});

async function codeOf(p: Promise<unknown>): Promise<string> {
  return p.then(
    () => "no error",
    (e: unknown) => (e instanceof KeyholeError ? e.code : String(e)),
  );
}

/** A writer client wired as db/client.ts wires it. */
async function writer(
  options: Partial<Parameters<typeof createWalOffLoop>[0]> = {},
): Promise<{ client: Client; wal: WalOffLoop }> {
  let client: Client | undefined;
  const wal = createWalOffLoop({
    path,
    busyTimeoutMs: 5000,
    inlineCheckpoint: async () => {
      await client?.execute("PRAGMA wal_checkpoint(PASSIVE)");
    },
    ...options,
  });
  client = createFileClient({
    path,
    joinOpenTransaction: true,
    afterCommit: () => wal.commitDurable(),
  });
  await client.execute("PRAGMA journal_mode = WAL");
  for (const p of wal.writerPragmas) await client.execute(p);
  wal.arm();
  await client.execute("create table t (id integer primary key, v text)");
  const c = client;
  cleanups.push(async () => {
    await wal.close();
    c.close();
  });
  return { client, wal };
}

async function insertBatch(client: Client, rows: number, size = 512): Promise<void> {
  const tx = await client.transaction("write");
  for (let i = 0; i < rows; i++) {
    await tx.execute({ sql: "insert into t (v) values (?)", args: ["x".repeat(size)] });
  }
  await tx.commit();
}

describe("WAL off the event loop", () => {
  it("runs the writer with NORMAL sync and no autocheckpoint, and syncs the WAL for every commit", async () => {
    const { client, wal } = await writer();
    const sync = await client.execute("PRAGMA synchronous");
    expect(Number(sync.rows[0]?.synchronous)).toBe(1);
    const auto = await client.execute("PRAGMA wal_autocheckpoint");
    expect(Number(auto.rows[0]?.wal_autocheckpoint)).toBe(0);

    const before = wal.stats().syncs;
    for (let i = 0; i < 5; i++) await insertBatch(client, 3);
    expect(wal.stats().syncs - before).toBeGreaterThanOrEqual(5);

    const other = createFileClient({ path });
    cleanups.push(() => other.close());
    const n = await other.execute("select count(*) as n from t");
    expect(Number(n.rows[0]?.n)).toBe(15);
  });

  it("checkpoints in the background under back-to-back writes, so the WAL stays far smaller than what was written", async () => {
    const { client, wal } = await writer({ checkpointEveryMs: 20 });
    const written = 400 * 40 * 512;
    for (let i = 0; i < 400; i++) {
      await insertBatch(client, 40);
    }
    expect(wal.stats().checkpoints).toBeGreaterThan(0);
    expect(wal.stats().checkpointFailures).toBe(0);
    expect(statSync(`${path}-wal`).size).toBeLessThan(written / 2);
    // Everything checkpointed so far is in the database file itself.
    expect(statSync(path).size).toBeGreaterThan(written / 4);
  });

  it("hands over to the writer's own checkpoint when background checkpoints keep failing", async () => {
    const events: WalEvent[] = [];
    const failing: AsyncConnection = {
      exec: () => Promise.reject(new Error("SQLITE_IOERR: disk I/O error")),
      close: () => undefined,
    };
    const { client, wal } = await writer({
      checkpointEveryMs: 0,
      openCheckpointer: () => failing,
      onEvent: (e) => events.push(e),
    });
    for (let i = 0; i < 20; i++) await insertBatch(client, 20);
    const s = wal.stats();
    expect(s.checkpoints).toBe(0);
    expect(s.checkpointFailures).toBeGreaterThanOrEqual(3);
    expect(s.inlineCheckpoints).toBeGreaterThan(0);
    expect(
      events.some((e) => e.event === "checkpoint_failed" && /disk I\/O/.test(e.error ?? "")),
    ).toBe(true);
    expect(events.some((e) => e.event === "checkpoint_inline")).toBe(true);
    // The inline checkpoints did their work: the database file holds the rows.
    expect(statSync(path).size).toBeGreaterThan((20 * 20 * 512) / 2);
  });

  it("fails a write whose WAL cannot be synced with storage_unavailable", async () => {
    const db = await openDatabase({ url: `file:${path}` });
    cleanups.push(() => db.close());
    await db.writeClient.execute("create table t (id integer primary key, v text)");
    await db.writeClient.execute("insert into t (v) values ('a')");
    unlinkSync(`${path}-wal`);
    const error = await db.writeClient.execute("insert into t (v) values ('b')").then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(KeyholeError);
    expect((error as KeyholeError).code).toBe("storage_unavailable");
    expect(isStorageFailure(error)).toBe(true);
    expect((error as Error).message).not.toContain(dir);
    // The disk's state is unknown after a failed sync: the database refuses from now on, before a
    // writer begins anything.
    expect(() => db.assertReachable()).toThrow(/restart the signer/);
    expect(() => db.assertReachable(100)).toThrow(/restart the signer/);
    expect(db.walStats()?.syncs).toBeGreaterThan(0);
  });

  it("a store whose WAL failed to sync refuses every later write and read until restarted", async () => {
    const { openSignerStore } = await import("../signer/store/index.ts");
    const store = await openSignerStore({ url: `file:${path}` });
    cleanups.push(() => store.close());
    const audit = (action: string) => ({
      traceId: "0af7651916cd43dd8448eb211c80319c",
      actor: "user:test",
      org: "org-a",
      action,
      outcome: "ok" as const,
    });
    await store.recordAudit([audit("first")]);
    unlinkSync(`${path}-wal`);
    const failedWrite = await store.recordAudit([audit("second")]).catch((e: unknown) => e);
    expect((failedWrite as KeyholeError).code).toBe("storage_unavailable");
    // The writer checks the database (Database.assertReachable) before it begins a transaction.
    expect(() => store.database.assertReachable()).toThrow(/restart the signer/);
    const refused = await store.recordAudit([audit("third")]).catch((e: unknown) => e);
    expect((refused as KeyholeError).code).toBe("storage_unavailable");
    expect((refused as Error).message).toMatch(/restart the signer/);
    expect(await codeOf(store.getNetwork("net_x"))).toBe("storage_unavailable");
  });

  it("is used by openDatabase for files: the writer's pragmas and its sync counter", async () => {
    const db = await openDatabase({ url: `file:${path}` });
    cleanups.push(() => db.close());
    const sync = await db.writeClient.execute("PRAGMA synchronous");
    expect(Number(sync.rows[0]?.synchronous)).toBe(1);
    const readSync = await db.readClient.execute("PRAGMA synchronous");
    expect(Number(readSync.rows[0]?.synchronous)).toBe(2);
    const before = db.walStats()?.syncs ?? 0;
    await db.writeClient.execute("create table t (id integer primary key)");
    expect(db.walStats()?.syncs ?? 0).toBeGreaterThan(before);
    const memory = await openDatabase({ url: "file::memory:" });
    cleanups.push(() => memory.close());
    expect(memory.walStats()).toBeNull();
  });
});
