/**
 * In-process counters for `/v1/metrics`: requests by route and status, errors by code, signing and KMS
 * latency, failovers. JSON for people and scripts, Prometheus text for scrapers. Nothing here is secret.
 */
import type { KmsAttempt } from "./custody/types.ts";

interface Summary {
  count: number;
  sumMs: number;
  maxMs: number;
  buckets: number[];
}

const BUCKETS_MS = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000];

function summary(): Summary {
  return { count: 0, sumMs: 0, maxMs: 0, buckets: BUCKETS_MS.map(() => 0) };
}

function observe(s: Summary, ms: number): void {
  s.count++;
  s.sumMs += ms;
  if (ms > s.maxMs) s.maxMs = ms;
  BUCKETS_MS.forEach((b, i) => {
    if (ms <= b) s.buckets[i] = (s.buckets[i] ?? 0) + 1;
  });
}

export interface SignerMetrics {
  request(route: string, method: string, status: number, ms: number): void;
  error(code: string): void;
  signing(ms: number): void;
  kms(attempts: readonly KmsAttempt[]): void;
  snapshot(extra?: Record<string, unknown>): Record<string, unknown>;
  prometheus(extra?: Record<string, number>): string;
}

export function createSignerMetrics(): SignerMetrics {
  const requests = new Map<string, number>();
  const errors = new Map<string, number>();
  const signing = summary();
  const kms = new Map<string, Summary>();
  const kmsOutcomes = new Map<string, number>();
  let certificates = 0;

  const bump = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);

  return {
    request(route, method, status, _ms) {
      bump(requests, `${method} ${route} ${status}`);
    },
    error(code) {
      bump(errors, code);
    },
    signing(ms) {
      certificates++;
      observe(signing, ms);
    },
    kms(attempts) {
      for (const a of attempts) {
        let s = kms.get(a.region);
        if (!s) {
          s = summary();
          kms.set(a.region, s);
        }
        observe(s, a.latencyMs);
        bump(kmsOutcomes, `${a.region} ${a.operation} ${a.outcome}`);
      }
    },
    snapshot(extra = {}) {
      return {
        requests: Object.fromEntries(requests),
        errors: Object.fromEntries(errors),
        certificatesIssued: certificates,
        signingMs: {
          count: signing.count,
          avg: signing.count ? signing.sumMs / signing.count : 0,
          max: signing.maxMs,
        },
        kmsMs: Object.fromEntries(
          [...kms].map(([region, s]) => [
            region,
            { count: s.count, avg: s.count ? s.sumMs / s.count : 0, max: s.maxMs },
          ]),
        ),
        kmsAttempts: Object.fromEntries(kmsOutcomes),
        ...extra,
      };
    },
    prometheus(extra = {}) {
      const lines: string[] = [];
      lines.push("# TYPE keyhole_requests_total counter");
      for (const [k, v] of requests) {
        const [method, route, status] = k.split(" ");
        lines.push(
          `keyhole_requests_total{method="${method}",route="${route}",status="${status}"} ${v}`,
        );
      }
      lines.push("# TYPE keyhole_errors_total counter");
      for (const [k, v] of errors) lines.push(`keyhole_errors_total{code="${k}"} ${v}`);
      lines.push("# TYPE keyhole_certificates_issued_total counter");
      lines.push(`keyhole_certificates_issued_total ${certificates}`);
      histogram(lines, "keyhole_signing_duration_ms", "", signing);
      for (const [region, s] of kms)
        histogram(lines, "keyhole_kms_duration_ms", `region="${region}"`, s);
      lines.push("# TYPE keyhole_kms_attempts_total counter");
      for (const [k, v] of kmsOutcomes) {
        const [region, operation, outcome] = k.split(" ");
        lines.push(
          `keyhole_kms_attempts_total{region="${region}",operation="${operation}",outcome="${outcome}"} ${v}`,
        );
      }
      for (const [name, v] of Object.entries(extra)) {
        lines.push(`# TYPE keyhole_${name} counter`, `keyhole_${name} ${v}`);
      }
      return `${lines.join("\n")}\n`;
    },
  };
}

function histogram(lines: string[], name: string, labels: string, s: Summary): void {
  const sep = labels ? `${labels},` : "";
  lines.push(`# TYPE ${name} histogram`);
  BUCKETS_MS.forEach((b, i) => {
    lines.push(`${name}_bucket{${sep}le="${b}"} ${s.buckets[i] ?? 0}`);
  });
  lines.push(`${name}_bucket{${sep}le="+Inf"} ${s.count}`);
  lines.push(`${name}_sum${labels ? `{${labels}}` : ""} ${s.sumMs}`);
  lines.push(`${name}_count${labels ? `{${labels}}` : ""} ${s.count}`);
}
