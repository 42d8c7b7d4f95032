/**
 * Rate limits of the edge, behind one interface with two implementations: the Workers
 * rate-limiting binding on Cloudflare (counted per Cloudflare location, limits fixed in
 * wrangler.toml) and an in-process fixed-window counter for Node and Bun. Three buckets: client
 * address (enrollment/renewal: cuts off code guessing), org+subject (authenticated calls), and
 * network (certificates signed).
 */
import type { RateRule, RateRules } from "./config.ts";

export type RateBucket = keyof RateRules;

export interface RateDecision {
  allowed: boolean;
  limit: number;
  /** Requests left in this window; absent when the backend does not say (Workers binding). */
  remaining?: number;
  /** Seconds until the window resets (an upper bound when the backend does not say). */
  resetSec: number;
}

export interface RateLimiter {
  check(bucket: RateBucket, key: string): Promise<RateDecision>;
}

/** The Workers rate-limiting binding's interface (`env.NAME.limit({ key })`). */
export interface WorkersRateLimitBinding {
  limit(options: { key: string }): Promise<{ success: boolean }>;
}

export interface MemoryRateLimiterOptions {
  rules: RateRules;
  /** Milliseconds clock, for tests. */
  now?: () => number;
  /** Most keys remembered before expired windows are swept (bounded memory under a flood). */
  maxKeys?: number;
}

interface Window {
  start: number;
  count: number;
}

/** In-process fixed-window limiter for the self-hosted edge (one process: exact counts). */
export function createMemoryRateLimiter(options: MemoryRateLimiterOptions): RateLimiter {
  const now = options.now ?? Date.now;
  const maxKeys = options.maxKeys ?? 100_000;
  const windows = new Map<string, Window>();

  function sweep(at: number): void {
    for (const [key, w] of windows) {
      const bucket = key.slice(0, key.indexOf("|")) as RateBucket;
      if (at - w.start >= options.rules[bucket].periodSec * 1000) windows.delete(key);
    }
    // Still full after dropping expired windows: forget the oldest (fails open for old keys only).
    while (windows.size >= maxKeys) {
      const first = windows.keys().next();
      if (first.done) break;
      windows.delete(first.value);
    }
  }

  return {
    async check(bucket, key) {
      const rule: RateRule = options.rules[bucket];
      const at = now();
      const id = `${bucket}|${key}`;
      const periodMs = rule.periodSec * 1000;
      let w = windows.get(id);
      if (!w || at - w.start >= periodMs) {
        if (!w && windows.size >= maxKeys) sweep(at);
        w = { start: at, count: 0 };
        windows.set(id, w);
      }
      const resetSec = Math.max(1, Math.ceil((w.start + periodMs - at) / 1000));
      if (w.count >= rule.limit) {
        return { allowed: false, limit: rule.limit, remaining: 0, resetSec };
      }
      w.count += 1;
      return { allowed: true, limit: rule.limit, remaining: rule.limit - w.count, resetSec };
    },
  };
}

export interface WorkersRateLimiterOptions {
  bindings: Record<RateBucket, WorkersRateLimitBinding>;
  /** The limits configured on the bindings (wrangler.toml), for the RateLimit-* headers. */
  rules: RateRules;
}

/** The Cloudflare rate-limiting binding as a RateLimiter. It answers only yes or no. */
export function createWorkersRateLimiter(options: WorkersRateLimiterOptions): RateLimiter {
  return {
    async check(bucket, key) {
      const rule = options.rules[bucket];
      const { success } = await options.bindings[bucket].limit({ key: `${bucket}:${key}` });
      return { allowed: success, limit: rule.limit, resetSec: rule.periodSec };
    },
  };
}
