/**
 * The signer's settings, read once from the environment at start. A wrong or missing value stops the
 * process with a message naming the variable and what it wants. Every variable:
 *
 * - KEYHOLE_REGION            this signer's region name, e.g. "eu-west-1" (required)
 * - KEYHOLE_DB_URL            libSQL database: "file:.keyhole/keyhole.db" (default) or "libsql://host"
 * - KEYHOLE_DB_AUTH_TOKEN     token for a libsql:// server (Turso); never logged
 * - KEYHOLE_KMS               key custody backend: "local" (default, development only) or "aws"
 * - KEYHOLE_KMS_KEYS          aws: "region=keyId,region=keyId" in preference order (required for aws);
 *                             local: optional "region=label,..." naming the two local regions
 * - KEYHOLE_KMS_ENDPOINTS     aws: optional "region=url,..." for a KMS-compatible server (moto_server)
 * - KEYHOLE_DATA_DIR          local custody: folder holding the development master keys (default .keyhole/data)
 * - KEYHOLE_KMS_TIMEOUT_MS    longest one KMS call may take before failing over (default 2000)
 * - KEYHOLE_KMS_HEDGE_MS      ask the next region in parallel after this long (default: never)
 * - KEYHOLE_KMS_COOLDOWN_MS  ask a region that just failed last, for this long (default 5000; 0 = never)
 * - KEYHOLE_SIGNER_HOST       address to listen on (default 127.0.0.1)
 * - KEYHOLE_SIGNER_PORT       port to listen on (default 8443)
 * - KEYHOLE_TLS_CERT          PEM file of the signer's server certificate (required)
 * - KEYHOLE_TLS_KEY           PEM file of its private key (required)
 * - KEYHOLE_TLS_CLIENT_CA     PEM file of the relay CA whose client certificates are accepted (required)
 * - KEYHOLE_OIDC_ISSUERS, KEYHOLE_OIDC_AUDIENCE, KEYHOLE_ORG_CLAIM, KEYHOLE_OIDC_JWKS_COOLDOWN_MS:
 *                             as for the edge (core/auth/env.ts)
 * - KEYHOLE_NEBULA_PORT       listen port suggested to enrolling hosts (default 4242)
 */
import { ConfigError, oidcOptionsFromEnv } from "../core/auth/env.ts";
import type { OidcVerifierOptions } from "../core/auth/oidc.ts";
import { parseRegionMap } from "./custody/index.ts";
import type { CustodyConfig } from "./custody/types.ts";

export interface SignerConfig {
  region: string;
  db: { url: string; authToken?: string };
  custody: CustodyConfig;
  listen: { host: string; port: number };
  tls: { certFile: string; keyFile: string; clientCaFile: string };
  oidc: OidcVerifierOptions;
  nebulaListenPort: number;
}

type Env = Record<string, string | undefined>;

function value(env: Env, name: string): string | undefined {
  const v = env[name]?.trim();
  return v === "" ? undefined : v;
}

function required(env: Env, name: string, hint: string): string {
  const v = value(env, name);
  if (v === undefined) throw new ConfigError(name, `not set; ${hint}`);
  return v;
}

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const v = value(env, name);
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new ConfigError(name, `${JSON.stringify(v)} is not a whole number from ${min} to ${max}`);
  }
  return n;
}

function regionMap(env: Env, name: string): Record<string, string> {
  try {
    return parseRegionMap(
      required(env, name, 'set it like "us-east-1=<value>,eu-west-1=<value>"'),
      name,
    );
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    throw new ConfigError(name, (e as Error).message);
  }
}

export function signerConfigFromEnv(env: Env): SignerConfig {
  const region = required(env, "KEYHOLE_REGION", 'name this signer\'s region, e.g. "eu-west-1"');
  if (!/^[a-z][a-z0-9-]{0,62}$/.test(region)) {
    throw new ConfigError(
      "KEYHOLE_REGION",
      "lowercase letters, digits and '-', starting with a letter",
    );
  }
  const dbUrl = value(env, "KEYHOLE_DB_URL") ?? "file:.keyhole/keyhole.db";
  if (!/^(file:|libsql:\/\/|https?:\/\/|wss?:\/\/)/.test(dbUrl)) {
    throw new ConfigError("KEYHOLE_DB_URL", 'use "file:path/to/keyhole.db" or "libsql://host"');
  }
  const dbAuthToken = value(env, "KEYHOLE_DB_AUTH_TOKEN");
  const attemptTimeoutMs = integer(env, "KEYHOLE_KMS_TIMEOUT_MS", 2000, 50, 60_000);
  const hedge = value(env, "KEYHOLE_KMS_HEDGE_MS");
  const hedgeAfterMs =
    hedge === undefined ? null : integer(env, "KEYHOLE_KMS_HEDGE_MS", 0, 1, 60_000);
  const regionCooldownMs = integer(env, "KEYHOLE_KMS_COOLDOWN_MS", 5000, 0, 3_600_000);
  const kms = value(env, "KEYHOLE_KMS") ?? "local";
  let custody: CustodyConfig;
  if (kms === "local") {
    const dataDir = value(env, "KEYHOLE_DATA_DIR") ?? ".keyhole/data";
    const regions = value(env, "KEYHOLE_KMS_KEYS")
      ? Object.keys(regionMap(env, "KEYHOLE_KMS_KEYS"))
      : undefined;
    custody = {
      backend: "local",
      dataDir,
      attemptTimeoutMs,
      hedgeAfterMs,
      regionCooldownMs,
      ...(regions ? { regions } : {}),
    };
  } else if (kms === "aws") {
    const keys = regionMap(env, "KEYHOLE_KMS_KEYS");
    if (Object.keys(keys).length < 2) {
      throw new ConfigError(
        "KEYHOLE_KMS_KEYS",
        "name two regions: each CA key is sealed in two (invariant 2)",
      );
    }
    const endpoints = value(env, "KEYHOLE_KMS_ENDPOINTS")
      ? regionMap(env, "KEYHOLE_KMS_ENDPOINTS")
      : undefined;
    for (const r of Object.keys(endpoints ?? {})) {
      if (!Object.hasOwn(keys, r))
        throw new ConfigError("KEYHOLE_KMS_ENDPOINTS", `region ${r} is not in KEYHOLE_KMS_KEYS`);
    }
    custody = {
      backend: "aws",
      keys,
      attemptTimeoutMs,
      hedgeAfterMs,
      regionCooldownMs,
      ...(endpoints ? { endpoints } : {}),
    };
  } else {
    throw new ConfigError(
      "KEYHOLE_KMS",
      `${JSON.stringify(kms)} is not a backend; use "local" or "aws"`,
    );
  }
  const tlsHint =
    "the signer serves only mutual TLS; `keyhole dev pki` makes development certificates";
  return {
    region,
    db: { url: dbUrl, ...(dbAuthToken ? { authToken: dbAuthToken } : {}) },
    custody,
    listen: {
      host: value(env, "KEYHOLE_SIGNER_HOST") ?? "127.0.0.1",
      port: integer(env, "KEYHOLE_SIGNER_PORT", 8443, 0, 65535),
    },
    tls: {
      certFile: required(env, "KEYHOLE_TLS_CERT", tlsHint),
      keyFile: required(env, "KEYHOLE_TLS_KEY", tlsHint),
      clientCaFile: required(env, "KEYHOLE_TLS_CLIENT_CA", tlsHint),
    },
    oidc: oidcOptionsFromEnv(env),
    nebulaListenPort: integer(env, "KEYHOLE_NEBULA_PORT", 4242, 1, 65535),
  };
}
