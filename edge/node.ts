/**
 * The self-hosted edge on Node: @hono/node-server in front, and an undici Agent that presents the
 * edge's client certificate to the signers and trusts only the relay CA. Run with
 * `node bin/run-ts.mjs edge/node.ts` (or tsx) and the variables of edge/config.ts and edge/selfhost.ts.
 */
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { serve } from "@hono/node-server";
import { getConnInfo } from "@hono/node-server/conninfo";
import { Agent, fetch as undiciFetch } from "undici";
import type { EnvSource } from "./config.ts";
import type { SignerTransport } from "./relay.ts";
import {
  createSelfHostedEdge,
  exitOnConfigError,
  type RelayTls,
  selfHostConfigFromEnv,
} from "./selfhost.ts";

/** Relays over mutual TLS with undici: the client certificate is presented, only the relay CA trusted. */
export function createUndiciTransport(tls: RelayTls): SignerTransport {
  const agent = new Agent({
    connect: { ca: tls.ca, cert: tls.cert, key: tls.key, rejectUnauthorized: true },
    keepAliveTimeout: 10_000,
  });
  return async (_region, request) => {
    const init: Parameters<typeof undiciFetch>[1] = {
      method: request.method,
      headers: [...request.headers],
      redirect: "manual",
      dispatcher: agent,
    };
    if (request.method !== "GET" && request.method !== "HEAD") {
      init.body = new Uint8Array(await request.arrayBuffer());
    }
    const res = await undiciFetch(request.url, init);
    return new Response(res.body as ReadableStream<Uint8Array> | null, {
      status: res.status,
      headers: [...res.headers],
    });
  };
}

export interface NodeEdge {
  url: string;
  close(): Promise<void>;
}

/** Starts the edge on Node; resolves once it listens. */
export function startNodeEdge(env: EnvSource): Promise<NodeEdge> {
  const config = selfHostConfigFromEnv(env);
  const app = createSelfHostedEdge(
    env,
    config.edge,
    createUndiciTransport(config.tls),
    (c) => getConnInfo(c).remote.address,
  );
  return new Promise((resolve) => {
    const server = serve({ fetch: app.fetch, port: config.port, hostname: config.host }, (info) => {
      const host = info.address.includes(":") ? `[${info.address}]` : info.address;
      resolve({
        url: `http://${host}:${info.port}`,
        close: () => new Promise((done) => server.close(() => done())),
      });
    });
  });
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  try {
    const edge = await startNodeEdge(process.env);
    console.log(JSON.stringify({ msg: "edge ready", runtime: "node", url: edge.url }));
  } catch (e) {
    exitOnConfigError(e);
  }
}
