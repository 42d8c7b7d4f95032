/**
 * The self-hosted edge on Bun: Bun.serve in front, and Bun's fetch with a `tls` option (client
 * certificate and key, relay CA) to reach the signers. Run with `bun edge/bun.ts` and the variables
 * of edge/config.ts and edge/selfhost.ts.
 */
import { getConnInfo } from "hono/bun";
import type { EnvSource } from "./config.ts";
import type { SignerTransport } from "./relay.ts";
import {
  createSelfHostedEdge,
  exitOnConfigError,
  type RelayTls,
  selfHostConfigFromEnv,
} from "./selfhost.ts";

/** Relays over mutual TLS with Bun's fetch. */
export function createBunTransport(tls: RelayTls): SignerTransport {
  return (_region, request) =>
    fetch(request, {
      tls: { ca: tls.ca, cert: tls.cert, key: tls.key, rejectUnauthorized: true },
    } as RequestInit);
}

export interface BunEdge {
  url: string;
  stop(): Promise<void>;
}

export function startBunEdge(env: EnvSource): BunEdge {
  const config = selfHostConfigFromEnv(env);
  const app = createSelfHostedEdge(
    env,
    config.edge,
    createBunTransport(config.tls),
    (c) => getConnInfo(c).remote.address,
  );
  const server = Bun.serve({ port: config.port, hostname: config.host, fetch: app.fetch });
  return { url: `http://${config.host}:${server.port}`, stop: () => server.stop(true) };
}

if (import.meta.main) {
  try {
    const edge = startBunEdge(process.env);
    console.log(JSON.stringify({ msg: "edge ready", runtime: "bun", url: edge.url }));
  } catch (e) {
    exitOnConfigError(e);
  }
}
