/**
 * A closed-loop load generator: `concurrency` workers each send the next request as soon as the last
 * one answered, for a fixed count or time. Returns throughput and latency percentiles. Bounded in both
 * count and time so it always stops by itself.
 */
export interface LoadResult {
  concurrency: number;
  requests: number;
  errors: number;
  /** First few distinct error messages, for the report. */
  errorSamples: string[];
  seconds: number;
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Runs combined by `medianOfRuns` (rates and percentiles are their medians); absent for one. */
  runs?: number;
}

export interface LoadOptions {
  concurrency: number;
  /** Stop after this many requests in total... */
  total: number;
  /** ...or after this long, whichever comes first. */
  maxMs: number;
  /** One request; `i` is its index. Throw (or reject) to count an error. */
  request: (i: number) => Promise<void>;
}

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx] ?? Number.NaN;
}

export function median(values: readonly number[]): number {
  return percentile(
    [...values].sort((a, b) => a - b),
    50,
  );
}

export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  const latencies: number[] = [];
  const samples = new Set<string>();
  let next = 0;
  let errors = 0;
  const start = performance.now();
  const deadline = start + options.maxMs;
  const worker = async () => {
    while (next < options.total && performance.now() < deadline) {
      const i = next++;
      const t0 = performance.now();
      try {
        await options.request(i);
        latencies.push(performance.now() - t0);
      } catch (e) {
        errors++;
        if (samples.size < 5) samples.add((e as Error).message.slice(0, 200));
      }
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, worker));
  const seconds = (performance.now() - start) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    concurrency: options.concurrency,
    requests: latencies.length,
    errors,
    errorSamples: [...samples],
    seconds,
    perSecond: latencies.length / seconds,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    maxMs: latencies.at(-1) ?? Number.NaN,
  };
}

/**
 * Several runs of the same load as one result: the median run's rate and percentiles (each the median
 * over the runs), the worst latency of all, and every request and error counted.
 */
export function medianOfRuns(results: readonly LoadResult[]): LoadResult {
  const first = results[0];
  if (!first) throw new Error("medianOfRuns needs at least one run");
  if (results.length === 1) return first;
  const of = (k: "perSecond" | "p50Ms" | "p99Ms") => median(results.map((r) => r[k]));
  return {
    concurrency: first.concurrency,
    requests: results.reduce((n, r) => n + r.requests, 0),
    errors: results.reduce((n, r) => n + r.errors, 0),
    errorSamples: [...new Set(results.flatMap((r) => r.errorSamples))].slice(0, 5),
    seconds: results.reduce((n, r) => n + r.seconds, 0),
    perSecond: of("perSecond"),
    p50Ms: of("p50Ms"),
    p99Ms: of("p99Ms"),
    maxMs: Math.max(...results.map((r) => r.maxMs)),
    runs: results.length,
  };
}
