/**
 * The edge's configuration, read once from the environment (process.env on Node and Bun, the
 * Worker's vars on Cloudflare) and refused with a message that says what to fix. Nothing here is
 * secret: the edge holds no key. Variables (the README's list is built from this one):
 *
 *   KEYHOLE_SIGNERS            required. Signer regions in preference order: `eu=https://10.0.0.5:8443,us=https://...`
 *   KEYHOLE_SIGNER_SITES       optional. Where each region is, for "nearest region first" on Cloudflare:
 *                              `eu=50.11:8.68,us=39.04:-77.49` (latitude:longitude)
 *   KEYHOLE_SIGNER_TIMEOUT_MS  optional, default 10000. One relay attempt's deadline.
 *   KEYHOLE_SIGNER_COOLDOWN_MS optional, default 15000. How long an unreachable region is tried last.
 *   KEYHOLE_RATE_ADDRESS       optional, default `10/60`: requests per client address per period (s)
 *                              on /v1/enroll, /v1/renew and host-token reads (cuts off code guessing).
 *   KEYHOLE_RATE_SUBJECT       optional, default `120/60`: per org+subject on authenticated routes.
 *   KEYHOLE_RATE_NETWORK       optional, default `60/60`: certificates signed per network on /sign.
 *   KEYHOLE_TRUST_PROXY        optional (Node/Bun only): `1` takes the client address from the first
 *                              `X-Forwarded-For` entry. Leave unset unless a proxy you run sets it.
 *   KEYHOLE_OIDC_ISSUERS, KEYHOLE_OIDC_AUDIENCE, KEYHOLE_ORG_CLAIM: read by core/auth.
 *
 * On Cloudflare the rate limits are enforced by the `[[ratelimits]]` bindings of wrangler.toml; the
 * KEYHOLE_RATE_* values only feed the RateLimit-* headers there and must match them.
 */
import { ConfigError } from "../core/auth/index.ts";

export interface SignerSite {
  lat: number;
  lon: number;
}

export interface SignerRegion {
  /** Region name as operators write it (`eu`, `us-east-1`). */
  name: string;
  /** Base URL of the signer, `https://host:port` (no path). */
  url: string;
  site?: SignerSite;
}

export interface RateRule {
  limit: number;
  periodSec: number;
}

export interface RateRules {
  address: RateRule;
  subject: RateRule;
  network: RateRule;
}

export interface EdgeConfig {
  signers: SignerRegion[];
  signerTimeoutMs: number;
  signerCooldownMs: number;
  rates: RateRules;
  trustProxy: boolean;
  version: string;
}

export type EnvSource = Readonly<Record<string, string | undefined>>;

export const EDGE_VERSION = "0.1.0";

const REGION_NAME = /^[a-z0-9][a-z0-9-]{0,31}$/;

/** Throws ConfigError; the message starts with the variable's name. */
function refuse(message: string): never {
  const variable = /^[A-Z_]+/.exec(message)?.[0] ?? "edge configuration";
  throw new ConfigError(variable, message.slice(variable.length).replace(/^[: ]+/, ""));
}

/** Parses `KEYHOLE_SIGNERS` (`region=https://host:port,...`). */
export function parseSigners(text: string | undefined): SignerRegion[] {
  if (!text || text.trim() === "") {
    refuse("KEYHOLE_SIGNERS is not set: give the signer regions, e.g. eu=https://10.0.0.5:8443");
  }
  const regions: SignerRegion[] = [];
  for (const entry of text.split(",")) {
    const trimmed = entry.trim();
    if (trimmed === "") continue;
    const eq = trimmed.indexOf("=");
    if (eq <= 0) refuse(`KEYHOLE_SIGNERS entry "${trimmed}" is not region=https://host:port`);
    const name = trimmed.slice(0, eq).trim();
    const raw = trimmed.slice(eq + 1).trim();
    if (!REGION_NAME.test(name)) {
      refuse(`KEYHOLE_SIGNERS region "${name}" must be lowercase letters, digits and '-'`);
    }
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      refuse(`KEYHOLE_SIGNERS URL for ${name} ("${raw}") is not a URL`);
    }
    if (url.protocol !== "https:") {
      refuse(
        `KEYHOLE_SIGNERS URL for ${name} must be https:// (the signer speaks only mutual TLS)`,
      );
    }
    if ((url.pathname !== "/" && url.pathname !== "") || url.search || url.hash || url.username) {
      refuse(`KEYHOLE_SIGNERS URL for ${name} must be just https://host:port`);
    }
    if (regions.some((r) => r.name === name)) refuse(`KEYHOLE_SIGNERS names ${name} twice`);
    regions.push({ name, url: url.origin });
  }
  if (regions.length === 0) refuse("KEYHOLE_SIGNERS lists no region");
  return regions;
}

/** Parses `KEYHOLE_SIGNER_SITES` (`region=lat:lon,...`) onto the regions it names. */
export function applySignerSites(
  regions: SignerRegion[],
  text: string | undefined,
): SignerRegion[] {
  if (!text || text.trim() === "") return regions;
  const sites = new Map<string, SignerSite>();
  for (const entry of text.split(",")) {
    const trimmed = entry.trim();
    if (trimmed === "") continue;
    const m = /^([a-z0-9-]+)=(-?\d+(?:\.\d+)?):(-?\d+(?:\.\d+)?)$/.exec(trimmed);
    if (!m) refuse(`KEYHOLE_SIGNER_SITES entry "${trimmed}" is not region=latitude:longitude`);
    const [, name, lat, lon] = m as unknown as [string, string, string, string];
    const site = { lat: Number(lat), lon: Number(lon) };
    if (Math.abs(site.lat) > 90 || Math.abs(site.lon) > 180) {
      refuse(`KEYHOLE_SIGNER_SITES for ${name}: latitude within ±90, longitude within ±180`);
    }
    if (!regions.some((r) => r.name === name)) {
      refuse(`KEYHOLE_SIGNER_SITES names ${name}, which KEYHOLE_SIGNERS does not list`);
    }
    sites.set(name, site);
  }
  return regions.map((r) => {
    const site = sites.get(r.name);
    return site ? { ...r, site } : r;
  });
}

/** Parses a `limit/periodSeconds` rate such as `10/60`. */
export function parseRate(name: string, text: string | undefined, fallback: RateRule): RateRule {
  if (text === undefined || text.trim() === "") return fallback;
  const m = /^(\d{1,7})\/(\d{1,6})$/.exec(text.trim());
  if (!m) refuse(`${name} must be limit/periodSeconds such as 10/60, not "${text}"`);
  const limit = Number(m[1]);
  const periodSec = Number(m[2]);
  if (limit < 1 || periodSec < 1) refuse(`${name}: limit and period must be at least 1`);
  return { limit, periodSec };
}

function parseMs(name: string, text: string | undefined, fallback: number): number {
  if (text === undefined || text.trim() === "") return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 10 || n > 600_000) {
    refuse(`${name} must be whole milliseconds between 10 and 600000, not "${text}"`);
  }
  return n;
}

export const DEFAULT_RATES: RateRules = {
  address: { limit: 10, periodSec: 60 },
  subject: { limit: 120, periodSec: 60 },
  network: { limit: 60, periodSec: 60 },
};

/** Reads and checks the edge's settings once. Throws KeyholeError with a fix-it message. */
export function edgeConfigFromEnv(env: EnvSource): EdgeConfig {
  const signers = applySignerSites(parseSigners(env.KEYHOLE_SIGNERS), env.KEYHOLE_SIGNER_SITES);
  const trust = env.KEYHOLE_TRUST_PROXY?.trim() ?? "";
  if (!["", "0", "1", "true", "false"].includes(trust)) {
    refuse(`KEYHOLE_TRUST_PROXY must be 1 or 0, not "${trust}"`);
  }
  return {
    signers,
    signerTimeoutMs: parseMs("KEYHOLE_SIGNER_TIMEOUT_MS", env.KEYHOLE_SIGNER_TIMEOUT_MS, 10_000),
    signerCooldownMs: parseMs("KEYHOLE_SIGNER_COOLDOWN_MS", env.KEYHOLE_SIGNER_COOLDOWN_MS, 15_000),
    rates: {
      address: parseRate("KEYHOLE_RATE_ADDRESS", env.KEYHOLE_RATE_ADDRESS, DEFAULT_RATES.address),
      subject: parseRate("KEYHOLE_RATE_SUBJECT", env.KEYHOLE_RATE_SUBJECT, DEFAULT_RATES.subject),
      network: parseRate("KEYHOLE_RATE_NETWORK", env.KEYHOLE_RATE_NETWORK, DEFAULT_RATES.network),
    },
    trustProxy: trust === "1" || trust === "true",
    version: EDGE_VERSION,
  };
}
