/** `GET /v1/health` (anyone: liveness and each KMS region's reachability) and `GET /v1/metrics`. */
import type { HealthView } from "../../core/contract/api.ts";
import type { SignerApp } from "../app.ts";
import type { SignerRuntime } from "../runtime.ts";

export const SIGNER_VERSION = "0.1.0";

export function registerHealthRoutes(app: SignerApp, rt: SignerRuntime): void {
  app.get("/v1/health", async (c) => {
    let regions: Awaited<ReturnType<typeof rt.custody.health>>;
    try {
      regions = await rt.custody.health();
    } catch (e) {
      const error = e instanceof Error ? e.name : "error";
      regions = Object.fromEntries(
        rt.custody.regions.map((r) => [r, { status: "down" as const, error }]),
      );
    }
    const states = Object.values(regions).map((r) => r.status);
    const up = states.filter((s) => s === "ok").length;
    const status: HealthView["status"] = up === states.length ? "ok" : up > 0 ? "degraded" : "down";
    const view: HealthView = {
      status,
      role: "signer",
      region: rt.region,
      regions,
      version: SIGNER_VERSION,
    };
    return c.json(view, status === "down" ? 503 : 200);
  });

  app.get("/v1/metrics", (c) => {
    const s = rt.custody.stats();
    const custody = {
      kmsDecryptCalls: s.decryptCalls,
      kmsEncryptCalls: s.encryptCalls,
      opens: s.opens,
      sharedOpens: s.sharedOpens,
      failovers: s.failovers,
      hedges: s.hedges,
      denials: s.denials,
      coalescingWaits: s.coalescingWaits,
    };
    const w = rt.store.writerStats();
    const store = {
      transactions: w.transactions,
      writes: w.jobs,
      largestBatch: w.largestBatch,
      isolatedRetries: w.isolatedRetries,
      storageFailures: w.storageFailures,
      wal: rt.store.walStats(),
    };
    const wantsText =
      /text\/plain|openmetrics/.test(c.req.header("accept") ?? "") ||
      c.req.query("format") === "prometheus";
    if (wantsText) {
      const decrypts = Object.values(s.decryptCalls).reduce((a, b) => a + b, 0);
      const text = rt.metrics.prometheus({
        kms_decrypt_calls_total: decrypts,
        kms_failovers_total: s.failovers,
        kms_hedges_total: s.hedges,
        kms_denials_total: s.denials,
        ca_key_opens_total: s.opens,
        ca_key_shared_opens_total: s.sharedOpens,
        store_transactions_total: w.transactions,
        store_writes_total: w.jobs,
        store_storage_failures_total: w.storageFailures,
        ...(store.wal
          ? {
              store_wal_syncs_total: store.wal.syncs,
              store_checkpoints_total: store.wal.checkpoints,
              store_checkpoint_failures_total: store.wal.checkpointFailures,
              store_inline_checkpoints_total: store.wal.inlineCheckpoints,
            }
          : {}),
      });
      return c.text(text, 200, { "content-type": "text/plain; version=0.0.4" });
    }
    return c.json(rt.metrics.snapshot({ region: rt.region, custody, store }));
  });
}
