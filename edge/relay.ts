/**
 * The relay from the edge to the signer regions over mutual TLS. Regions are tried in preference
 * order (nearest first when the caller's location is known); a region that could not be reached is
 * tried last for a short cool-down; an unreachable region or a 5xx answer fails over to the next
 * region; a 4xx is the signer's verdict and is never retried. Every attempt carries the same
 * `Idempotency-Key`, so a retried relay never issues a certificate twice. The transport (how bytes
 * reach a region with the client certificate) is injected: the mtls_certificates binding on
 * Cloudflare, an undici Agent on Node, Bun's fetch with `tls` on Bun.
 */
import { type HealthView, isErrorCode } from "../core/contract/index.ts";
import { KeyholeError } from "../core/errors.ts";
import type { SignerRegion, SignerSite } from "./config.ts";

export type { SignerRegion } from "./config.ts";

/** Sends one request to one region; throws when the region cannot be reached. */
export type SignerTransport = (region: SignerRegion, request: Request) => Promise<Response>;

export interface RelayRequest {
  method: string;
  /** Path and query, starting with `/v1/`. */
  path: string;
  headers: Headers;
  body?: Uint8Array;
  /** The caller's location (Cloudflare's `request.cf`), to try the nearest region first. */
  near?: SignerSite;
}

export interface RelayAttempt {
  region: string;
  /** HTTP status, or 0 when the region could not be reached. */
  status: number;
  ms: number;
  error?: string;
}

export interface RelayResult {
  response: Response;
  /** The region that answered (the last one tried when all failed). */
  region: string;
  attempts: RelayAttempt[];
}

export type RegionHealth = NonNullable<HealthView["regions"]>[string];

export interface SignerRelay {
  readonly regions: readonly SignerRegion[];
  /** Relays to the first region that answers with < 500; throws signer_unavailable when none is reachable. */
  relay(request: RelayRequest): Promise<RelayResult>;
  /** Asks every region's `/v1/health` in parallel. */
  health(headers: Headers): Promise<Record<string, RegionHealth>>;
}

export interface SignerRelayOptions {
  regions: readonly SignerRegion[];
  transport: SignerTransport;
  timeoutMs: number;
  cooldownMs: number;
  healthTimeoutMs?: number;
  now?: () => number;
}

/** Great-circle distance in km, to order regions by nearness to the caller. */
function distanceKm(a: SignerSite, b: SignerSite): number {
  const rad = Math.PI / 180;
  const dLat = (b.lat - a.lat) * rad;
  const dLon = (b.lon - a.lon) * rad;
  const h =
    Math.sin(dLat / 2) ** 2 +
    Math.cos(a.lat * rad) * Math.cos(b.lat * rad) * Math.sin(dLon / 2) ** 2;
  return 2 * 6371 * Math.asin(Math.min(1, Math.sqrt(h)));
}

function describeFailure(e: unknown): string {
  if (e instanceof Error) {
    const cause = (e as Error & { cause?: unknown }).cause;
    const causeText = cause instanceof Error ? `: ${cause.message}` : "";
    return `${e.message}${causeText}`.slice(0, 200);
  }
  return String(e).slice(0, 200);
}

async function withDeadline<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([work, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** Whether a 5xx body is a Keyhole error written by a signer (not a proxy's or platform's page). */
function isSignerError(body: ArrayBuffer): boolean {
  try {
    const parsed = JSON.parse(new TextDecoder().decode(body)) as { error?: { code?: unknown } };
    return isErrorCode(parsed.error?.code);
  } catch {
    return false;
  }
}

/** The attempts of a relay that reached no signer, kept with the error it threw. */
const attemptsOfFailure = new WeakMap<object, RelayAttempt[]>();

function withAttempts<E extends object>(attempts: RelayAttempt[], error: E): E {
  attemptsOfFailure.set(error, attempts);
  return error;
}

/** Every region a failed relay tried (region, status, time, error), for the edge's log line. */
export function relayAttemptsOf(error: unknown): RelayAttempt[] | undefined {
  return typeof error === "object" && error !== null ? attemptsOfFailure.get(error) : undefined;
}

export function createSignerRelay(options: SignerRelayOptions): SignerRelay {
  const now = options.now ?? Date.now;
  const regions = [...options.regions];
  if (regions.length === 0) throw new Error("createSignerRelay needs at least one region");
  /** Region name -> time until which it is tried last. */
  const coolingUntil = new Map<string, number>();

  function order(near: SignerSite | undefined): SignerRegion[] {
    let preferred = regions;
    if (near && regions.every((r) => r.site)) {
      preferred = [...regions].sort(
        (a, b) => distanceKm(near, a.site as SignerSite) - distanceKm(near, b.site as SignerSite),
      );
    }
    const at = now();
    const ready = preferred.filter((r) => (coolingUntil.get(r.name) ?? 0) <= at);
    const cooling = preferred.filter((r) => (coolingUntil.get(r.name) ?? 0) > at);
    return [...ready, ...cooling];
  }

  async function attempt(region: SignerRegion, req: RelayRequest): Promise<Response> {
    const init: RequestInit = { method: req.method, headers: req.headers, redirect: "manual" };
    if (req.body && req.method !== "GET" && req.method !== "HEAD")
      init.body = req.body as Uint8Array<ArrayBuffer>;
    const request = new Request(`${region.url}${req.path}`, init);
    return withDeadline(
      options.transport(region, request),
      options.timeoutMs,
      `signer region ${region.name}`,
    );
  }

  return {
    regions,
    async relay(req) {
      const attempts: RelayAttempt[] = [];
      let lastAnswer: { response: Response; region: string } | undefined;
      for (const region of order(req.near)) {
        const started = now();
        let response: Response;
        try {
          response = await attempt(region, req);
        } catch (e) {
          coolingUntil.set(region.name, now() + options.cooldownMs);
          attempts.push({
            region: region.name,
            status: 0,
            ms: now() - started,
            error: describeFailure(e),
          });
          continue;
        }
        if (response.status < 500) {
          attempts.push({ region: region.name, status: response.status, ms: now() - started });
          coolingUntil.delete(region.name);
          return { response, region: region.name, attempts };
        }
        // A 5xx: the next region may succeed, and the Idempotency-Key makes the retry safe. A
        // signer's own 5xx (its KMS, storage or audit unavailable there) carries a Keyhole error
        // body and is kept, so the caller hears the signer's reason if every region says the
        // same. Any other 5xx (the platform's 52x, a proxy's 502/504, a transport that turns a
        // refused connection into a 500) means the signer was not reached.
        const body = await response.arrayBuffer();
        const ms = now() - started;
        if (isSignerError(body)) {
          attempts.push({ region: region.name, status: response.status, ms });
          coolingUntil.delete(region.name);
          lastAnswer = {
            response: new Response(body, { status: response.status, headers: response.headers }),
            region: region.name,
          };
        } else {
          coolingUntil.set(region.name, now() + options.cooldownMs);
          attempts.push({
            region: region.name,
            status: response.status,
            ms,
            error: `answered ${response.status} without a signer error body`,
          });
        }
      }
      if (lastAnswer) return { ...lastAnswer, attempts };
      const tried = attempts.map((a) => `${a.region}: ${a.error ?? a.status}`).join("; ");
      throw withAttempts(
        attempts,
        new KeyholeError(
          "signer_unavailable",
          "no signer region could be reached; try again shortly",
          {
            regions: attempts.map((a) => ({
              region: a.region,
              error: a.error ?? `status ${a.status}`,
            })),
          },
          { cause: new Error(tried) },
        ),
      );
    },
    async health(headers) {
      const timeout = options.healthTimeoutMs ?? Math.min(options.timeoutMs, 3000);
      const entries = await Promise.all(
        regions.map(async (region): Promise<[string, RegionHealth]> => {
          const started = now();
          try {
            const res = await withDeadline(
              options.transport(
                region,
                new Request(`${region.url}/v1/health`, { method: "GET", headers }),
              ),
              timeout,
              `signer region ${region.name}`,
            );
            await res.body?.cancel();
            const latencyMs = now() - started;
            if (res.status >= 500) {
              return [region.name, { status: "down", latencyMs, error: `status ${res.status}` }];
            }
            coolingUntil.delete(region.name);
            return [region.name, { status: "ok", latencyMs }];
          } catch (e) {
            coolingUntil.set(region.name, now() + options.cooldownMs);
            return [region.name, { status: "down", error: describeFailure(e) }];
          }
        }),
      );
      return Object.fromEntries(entries);
    },
  };
}
