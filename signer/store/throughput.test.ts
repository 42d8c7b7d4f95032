// Group commit on a real libSQL file: many concurrent issuances (certificate + audit row each) commit
// together. Prints both rates; asserts that concurrent issuances commit in shared transactions and
// run several times faster than one-at-a-time issuance (what a store without group commit gets).
// The absolute rate depends on the machine and its load, so it is printed rather than asserted.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { auditEvent, certFor, networkInput, openTestStore, type TestStore } from "./testing.ts";

let t: TestStore;
beforeAll(async () => {
  t = await openTestStore({ busyTimeoutMs: 5000 });
});
afterAll(async () => {
  await t.cleanup();
});

let sequentialRate = 0;

describe("issuance throughput (group commit)", () => {
  it("sequential issuances (no concurrency): the baseline", async () => {
    const net = await t.store.createNetwork(
      networkInput("org-a", "seq", ["10.0.0.0/8"], t.clock.now),
    );
    const ca = await t.store.getActiveCa(net.id);
    const n = 300;
    const started = performance.now();
    for (let i = 0; i < n; i++) {
      await t.store.recordIssuance({
        certificate: certFor(net.id, ca.id, null, t.clock.now),
        credential: { kind: "direct" },
        audit: [auditEvent("org-a", "cert.sign")],
      });
    }
    const seconds = (performance.now() - started) / 1000;
    sequentialRate = n / seconds;
    process.stdout.write(
      `\n[store throughput] ${n} sequential issuances: ${Math.round(sequentialRate)}/s\n`,
    );
    expect(sequentialRate).toBeGreaterThan(5);
  });
  it("concurrent issuances commit together, each with its audit row, chain intact", async () => {
    const net = await t.store.createNetwork(
      networkInput("org-a", "bench", ["10.0.0.0/8"], t.clock.now),
    );
    const ca = await t.store.getActiveCa(net.id);
    const issue = () =>
      t.store.recordIssuance({
        certificate: certFor(net.id, ca.id, null, t.clock.now),
        credential: { kind: "direct" },
        audit: [
          auditEvent("org-a", "cert.sign", {
            networkId: net.id,
            region: "local-a",
            kmsRequestIds: ["r"],
          }),
        ],
      });
    await Promise.all(Array.from({ length: 200 }, issue)); // warm-up
    const n = 5000;
    const txBefore = t.store.writerStats().transactions;
    const cpuBefore = process.cpuUsage();
    const started = performance.now();
    const results = await Promise.all(Array.from({ length: n }, issue));
    const seconds = (performance.now() - started) / 1000;
    const cpu = process.cpuUsage(cpuBefore);
    const cpuSeconds = (cpu.user + cpu.system) / 1e6;
    const rate = Math.round(n / seconds);
    const stats = t.store.writerStats();
    // CPU time per issuance does not depend on how busy the machine is; the wall-clock rate does.
    process.stdout.write(
      `\n[store throughput] ${n} concurrent issuances in ${seconds.toFixed(2)} s = ${rate}/s ` +
        `(${stats.transactions - txBefore} transactions, largest batch ${stats.largestBatch}); ` +
        `CPU ${((cpuSeconds / n) * 1e6).toFixed(0)} µs per issuance = ${Math.round(n / cpuSeconds)}/s per free core; ` +
        `sequential ${Math.round(sequentialRate)}/s\n`,
    );
    expect(sequentialRate).toBeGreaterThan(0);
    expect(stats.transactions - txBefore).toBeLessThan(n / 10);
    expect(results.every((r) => !r.replayed)).toBe(true);
    expect(stats.largestBatch).toBeGreaterThan(1);
    expect(rate).toBeGreaterThan(sequentialRate * 2);
    const chain = await t.store.verifyAuditChain();
    expect(chain).toEqual({ ok: true, rows: n + 200 + 300 + 2 });
  });

  it("concurrent enrollments (code consumed, host enrolled, token minted, certificate, audit) commit together", async () => {
    const net = await t.store.createNetwork(
      networkInput("org-a", "enroll", ["10.0.0.0/8"], t.clock.now),
    );
    const ca = await t.store.getActiveCa(net.id);
    const n = 1000;
    const regs = await Promise.all(
      Array.from({ length: n }, (_, i) =>
        t.store.registerHost({
          networkId: net.id,
          name: `h${i}`,
          groups: [],
          lighthouse: false,
          staticAddrs: [],
          certLifetimeS: 3600,
          codeTtlS: 3600,
          audit: [auditEvent("org-a", "host.register", { networkId: net.id })],
        }),
      ),
    );
    const txBefore = t.store.writerStats().transactions;
    const started = performance.now();
    const results = await Promise.all(
      regs.map((r) =>
        t.store.recordIssuance({
          certificate: certFor(net.id, ca.id, r.host.id, t.clock.now),
          credential: { kind: "enrollment_code", code: r.enrollmentCode },
          audit: [auditEvent("org-a", "cert.sign", { networkId: net.id })],
        }),
      ),
    );
    const seconds = (performance.now() - started) / 1000;
    const transactions = t.store.writerStats().transactions - txBefore;
    process.stdout.write(
      `\n[store throughput] ${n} concurrent enrollments in ${seconds.toFixed(2)} s = ${Math.round(n / seconds)}/s (${transactions} transactions)\n`,
    );
    expect(results.every((r) => !r.replayed && r.hostToken !== null)).toBe(true);
    expect(new Set(results.map((r) => (r.replayed ? "" : r.hostToken))).size).toBe(n);
    expect(transactions).toBeLessThan(n / 10);
    expect((await t.store.verifyAuditChain()).ok).toBe(true);
  });
});
