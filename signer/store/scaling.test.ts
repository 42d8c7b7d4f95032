// Cost per registration and per enrollment does not grow with the network (real libSQL file, 5,000
// hosts in a dual-stack network). Timing-free: every statement the store sends is recorded through a
// counting client; the rows each returns are summed, and EXPLAIN QUERY PLAN of each must read tables
// that grow with the network (hosts, host_addresses, enrollment codes, tokens, certificates) only
// through an index. Rates at 100 and at 5,000 hosts are printed, not asserted.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Client, InStatement, InValue, Transaction } from "@libsql/client";
import { drizzle } from "drizzle-orm/libsql";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Database, openDatabase } from "../../db/client.ts";
import * as schema from "../../db/schema.ts";
import { createSignerStore, type SignerStoreHandle } from "./index.ts";
import { auditEvent, certFor, networkInput } from "./testing.ts";

interface Sent {
  sql: string;
  args: InValue[];
  rows: number;
}

/** Statements sent while `on` is true. */
const log = { on: false, sent: [] as Sent[] };

function record(stmt: InStatement, rows: number): void {
  if (!log.on) return;
  const sql = typeof stmt === "string" ? stmt : stmt.sql;
  const raw = typeof stmt === "string" ? [] : (stmt.args ?? []);
  log.sent.push({ sql, args: Array.isArray(raw) ? [...raw] : [], rows });
}

function countingTx(tx: Transaction): Transaction {
  return new Proxy(tx, {
    get(target, prop, receiver) {
      if (prop === "execute") {
        return async (stmt: InStatement) => {
          const r = await target.execute(stmt);
          record(stmt, r.rows.length);
          return r;
        };
      }
      if (prop === "batch") {
        return async (stmts: InStatement[]) => {
          const rs = await target.batch(stmts);
          for (const [i, r] of rs.entries()) record(stmts[i] as InStatement, r.rows.length);
          return rs;
        };
      }
      const v = Reflect.get(target, prop, receiver);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

function countingClient(c: Client): Client {
  return new Proxy(c, {
    get(target, prop, receiver) {
      if (prop === "execute") {
        return async (stmt: InStatement) => {
          const r = await target.execute(stmt);
          record(stmt, r.rows.length);
          return r;
        };
      }
      if (prop === "batch") {
        return async (stmts: InStatement[], mode?: "write" | "read" | "deferred") => {
          const rs = await target.batch(stmts, mode);
          for (const [i, r] of rs.entries()) record(stmts[i] as InStatement, r.rows.length);
          return rs;
        };
      }
      if (prop === "transaction") {
        return async (mode?: "write" | "read" | "deferred") =>
          countingTx(await target.transaction(mode));
      }
      const v = Reflect.get(target, prop, receiver);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

/** Tables whose row count grows with hosts: read only through an index, never scanned. */
const GROWING = [
  "hosts",
  "host_addresses",
  "enrollment_codes",
  "host_tokens",
  "certificates",
  "audit_events",
];

let dir: string;
let inner: Database;
let store: SignerStoreHandle;
let networkId: string;
const clock = { now: new Date("2030-01-01T00:00:00.000Z") };

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "keyhole-scale-"));
  inner = await openDatabase({ url: `file:${join(dir, "scale.db")}` });
  const readClient = countingClient(inner.readClient);
  const writeClient = countingClient(inner.writeClient);
  const db: Database = {
    url: inner.url,
    kind: inner.kind,
    read: drizzle(readClient, { schema }),
    write: drizzle(writeClient, { schema }),
    readClient,
    writeClient,
    writeJoinsTransaction: inner.writeJoinsTransaction,
    reopenWriter: () => Promise.reject(new Error("not expected in this test")),
    assertReachable: (maxAgeMs) => inner.assertReachable(maxAgeMs),
    walStats: () => inner.walStats(),
    close: () => inner.close(),
  };
  store = createSignerStore(db, { clock: () => clock.now });
  const net = await store.createNetwork(
    networkInput("org-a", "big", ["10.64.0.0/16", "fd64::/64"], clock.now),
  );
  networkId = net.id;
});
afterAll(async () => {
  await store?.close();
  rmSync(dir, { recursive: true, force: true });
});

let registered = 0;
function hostInput(lighthouse = false) {
  registered++;
  return {
    networkId,
    name: `h${registered}`,
    groups: [],
    lighthouse,
    staticAddrs: lighthouse ? [`192.0.2.${registered}:4242`] : [],
    certLifetimeS: 86400,
    codeTtlS: 3600,
    audit: [auditEvent("org-a", "host.register", { networkId })],
  };
}

/** Registers up to `total` hosts in concurrent groups (group commit), returns the rate. */
async function growTo(total: number): Promise<number> {
  const started = performance.now();
  const before = registered;
  while (registered < total) {
    const n = Math.min(100, total - registered);
    await Promise.all(Array.from({ length: n }, () => store.registerHost(hostInput())));
  }
  return ((registered - before) * 1000) / (performance.now() - started);
}

interface Cost {
  statements: number;
  rowsReturned: number;
  plans: { sql: string; detail: string }[];
}

/** Runs `act` with the statement log on, then explains every statement it sent. */
async function costOf(act: () => Promise<unknown>): Promise<Cost> {
  log.sent = [];
  log.on = true;
  try {
    await act();
  } finally {
    log.on = false;
  }
  const sent = log.sent.filter((s) => !/^(begin|commit|rollback|savepoint|release)/i.test(s.sql));
  const plans: Cost["plans"] = [];
  for (const s of sent) {
    if (!/^\s*(select|update|delete|insert|with)/i.test(s.sql)) continue;
    const plan = await inner.readClient.execute({
      sql: `EXPLAIN QUERY PLAN ${s.sql}`,
      args: s.args,
    });
    for (const row of plan.rows) plans.push({ sql: s.sql, detail: String(row.detail) });
  }
  return {
    statements: sent.length,
    rowsReturned: sent.reduce((n, s) => n + s.rows, 0),
    plans,
  };
}

/**
 * Full scans of a table that grows with the network (an index SEARCH is what is wanted). The audit
 * chain head (`ORDER BY seq DESC LIMIT 1`) walks the rowid tree from its end and stops at one row.
 */
function scansOfGrowing(plans: Cost["plans"]): string[] {
  return plans
    .filter((p) => {
      const m = /^SCAN (\w+)/.exec(p.detail);
      if (m === null || !GROWING.includes(m[1] as string)) return false;
      return !/order by "audit_events"\."seq" desc limit \?$/i.test(p.sql.trim());
    })
    .map((p) => `${p.detail} <= ${p.sql}`);
}

function planText(plans: Cost["plans"]): string {
  return plans.map((p) => p.detail).join("\n");
}

/** The store calls `POST /v1/enroll` makes (signer/routes/enroll.ts and signer/issue.ts), in order. */
async function enrollOne(code: string): Promise<void> {
  const cred = await store.authenticateEnrollmentCode(code);
  const ca = await store.getActiveCa(networkId);
  const cert = certFor(networkId, ca.id, cred.host.id, clock.now);
  await store.getCertificate(cert.fingerprint);
  await store.caBundle(networkId);
  await store.listLighthouses(networkId);
  await store.blocklist(networkId);
  await store.recordIssuance({
    certificate: cert,
    credential: { kind: "enrollment_code", code },
    audit: [auditEvent("org-a", "cert.sign", { networkId, certFingerprint: cert.fingerprint })],
  });
}

describe("cost per registration and enrollment does not grow with the network", () => {
  it("5,000 dual-stack hosts: same statements and rows at 100 and at 5,000 hosts, all indexed", async () => {
    // three lighthouses, then ordinary hosts
    for (let i = 0; i < 3; i++) await store.registerHost(hostInput(true));
    const rateSmall = await growTo(100);
    // one enrollment first, so caches filled once per process (org of a network) are warm
    await enrollOne((await store.registerHost(hostInput())).enrollmentCode);
    const regSmall = await costOf(() => store.registerHost(hostInput()));
    const pending = await store.registerHost(hostInput());
    const enrollSmall = await costOf(() => enrollOne(pending.enrollmentCode));

    const rateLarge = await growTo(5000);
    const regLarge = await costOf(() => store.registerHost(hostInput()));
    const pendingLarge = await store.registerHost(hostInput());
    const enrollLarge = await costOf(() => enrollOne(pendingLarge.enrollmentCode));
    const last = await store.getHost(pendingLarge.host.id);

    console.log(
      `registration rate: ${rateSmall.toFixed(0)}/s for the first 100 hosts, ${rateLarge.toFixed(0)}/s from 100 to 5,000 hosts`,
    );
    console.log(
      `per registration: ${regSmall.statements} statements, ${regSmall.rowsReturned} rows at 100 hosts; ${regLarge.statements}, ${regLarge.rowsReturned} at 5,000`,
    );
    console.log(
      `per enrollment: ${enrollSmall.statements} statements, ${enrollSmall.rowsReturned} rows at 100 hosts; ${enrollLarge.statements}, ${enrollLarge.rowsReturned} at 5,000`,
    );

    const distinct = new Set([...regLarge.plans, ...enrollLarge.plans].map((p) => p.detail));
    console.log(`query plans:\n  ${[...distinct].sort().join("\n  ")}`);

    expect(registered).toBeGreaterThanOrEqual(5000);
    expect(last?.ips).toEqual([
      expect.stringMatching(/^10\.64\.\d+\.\d+\/16$/),
      expect.stringMatching(/^fd64::[0-9a-f]+\/64$/),
    ]);
    const stored = await inner.readClient.execute("SELECT count(*) AS n FROM host_addresses");
    expect(Number(stored.rows[0]?.n)).toBe(2 * registered);
    expect(regLarge.statements).toBe(regSmall.statements);
    expect(regLarge.rowsReturned).toBe(regSmall.rowsReturned);
    expect(enrollLarge.statements).toBe(enrollSmall.statements);
    expect(enrollLarge.rowsReturned).toBe(enrollSmall.rowsReturned);
    expect(scansOfGrowing(regLarge.plans), planText(regLarge.plans)).toEqual([]);
    expect(scansOfGrowing(enrollLarge.plans), planText(enrollLarge.plans)).toEqual([]);
    // the lighthouse read goes through the partial index that holds lighthouses only
    expect(enrollLarge.plans.some((p) => p.detail.includes("hosts_network_lighthouses"))).toBe(
      true,
    );
    // A partial index's column compared with a bound parameter makes SQLite prepare the statement
    // again on every call (statements.ts, equalsConstant): the constants are written into the SQL.
    const rebound = [...regLarge.plans, ...enrollLarge.plans]
      .map((p) => p.sql)
      .filter((q) => /"(cas|host_tokens)"\."state" = \?|"lighthouse" = \?/.test(q));
    expect(rebound).toEqual([]);
  });
});
