/**
 * What the self-hosted edge (Node or Bun) reads at start besides the shared settings: where to
 * listen and the relay's TLS material (the edge's client certificate and key, and the relay CA that
 * signed the signers' server certificates). Read once; a wrong value stops the process with a
 * message naming the variable.
 *
 *   KEYHOLE_EDGE_HOST          optional, default 127.0.0.1
 *   KEYHOLE_EDGE_PORT          optional, default 8787
 *   KEYHOLE_RELAY_CA           required: PEM file of the relay CA (the signers' server certificates)
 *   KEYHOLE_RELAY_CLIENT_CERT  required: PEM file of the edge's client certificate
 *   KEYHOLE_RELAY_CLIENT_KEY   required: PEM file of its private key (keep it 0600)
 */
import { readFileSync } from "node:fs";
import { ConfigError, createOidcVerifier, oidcOptionsFromEnv } from "../core/auth/index.ts";
import { createEdgeApp, type EdgeDeps } from "./app.ts";
import { type EdgeConfig, type EnvSource, edgeConfigFromEnv } from "./config.ts";
import { createMemoryRateLimiter } from "./limiter.ts";
import { createSignerRelay, type SignerTransport } from "./relay.ts";

export interface RelayTls {
  /** PEM of the relay CA. */
  ca: string;
  /** PEM of the edge's client certificate. */
  cert: string;
  /** PEM of the client certificate's private key. */
  key: string;
}

export interface SelfHostConfig {
  edge: EdgeConfig;
  host: string;
  port: number;
  tls: RelayTls;
}

function readPem(env: EnvSource, variable: string, banner: RegExp): string {
  const path = env[variable]?.trim();
  if (!path) throw new ConfigError(variable, "set it to the path of a PEM file");
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new ConfigError(
      variable,
      `cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? e}`,
    );
  }
  if (!banner.test(text)) throw new ConfigError(variable, `${path} does not hold the expected PEM`);
  return text;
}

export function selfHostConfigFromEnv(env: EnvSource): SelfHostConfig {
  const portText = env.KEYHOLE_EDGE_PORT?.trim() || "8787";
  const port = Number(portText);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new ConfigError("KEYHOLE_EDGE_PORT", `"${portText}" is not a TCP port (0-65535)`);
  }
  return {
    edge: edgeConfigFromEnv(env),
    host: env.KEYHOLE_EDGE_HOST?.trim() || "127.0.0.1",
    port,
    tls: {
      ca: readPem(env, "KEYHOLE_RELAY_CA", /-----BEGIN CERTIFICATE-----/),
      cert: readPem(env, "KEYHOLE_RELAY_CLIENT_CERT", /-----BEGIN CERTIFICATE-----/),
      key: readPem(env, "KEYHOLE_RELAY_CLIENT_KEY", /-----BEGIN [A-Z ]*PRIVATE KEY-----/),
    },
  };
}

/** The app with an in-process limiter and the given transport: what node.ts and bun.ts serve. */
export function createSelfHostedEdge(
  env: EnvSource,
  edge: EdgeConfig,
  transport: SignerTransport,
  clientAddress: EdgeDeps["clientAddress"],
  log: NonNullable<EdgeDeps["log"]> = (line) => console.log(JSON.stringify(line)),
): ReturnType<typeof createEdgeApp> {
  return createEdgeApp({
    config: edge,
    oidc: createOidcVerifier(oidcOptionsFromEnv(env)),
    limiter: createMemoryRateLimiter({ rules: edge.rates }),
    relay: createSignerRelay({
      regions: edge.signers,
      transport,
      timeoutMs: edge.signerTimeoutMs,
      cooldownMs: edge.signerCooldownMs,
    }),
    clientAddress,
    log,
  });
}

/** Prints a configuration mistake as one clear line and exits 2; rethrows anything else. */
export function exitOnConfigError(e: unknown): never {
  if (e instanceof ConfigError) {
    console.error(`keyhole edge: configuration error: ${e.message}`);
    process.exit(2);
  }
  throw e;
}
