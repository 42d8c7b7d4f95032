/**
 * Fault injection for the hostile-client, secrets-scan and soak tests: a real Bun signer process
 * whose every output byte is kept (for the secrets scan) and which can be paused, killed and
 * restarted on the same port; an mTLS client for the relay PKI; and a database lock held from a
 * second connection. Every process started here is killed when the test process exits.
 */
import type { ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { createClient, type Transaction } from "@libsql/client";
import { Agent, request } from "undici";
import type { RelayPki } from "../../cli/dev/pki.ts";
import { type LaunchedSigner, launchSigner, signerChildEnv } from "../../cli/dev/signer-process.ts";
import { edgeConfigFromEnv } from "../../edge/config.ts";
import { createUndiciTransport } from "../../edge/node.ts";
import { createSelfHostedEdge } from "../../edge/selfhost.ts";

const live = new Set<ChildProcess>();
process.once("exit", () => {
  for (const c of live) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
});

export interface SignerEnvOptions {
  region: string;
  pki: RelayPki;
  dbPath: string;
  dataDir: string;
  issuer: string;
  audience: string;
  port?: number;
  /** Extra variables (KMS settings for the aws backend, timeouts). */
  extra?: Record<string, string>;
}

/** The environment of one signer region, as the deployment docs describe it. */
export function signerEnv(o: SignerEnvOptions): Record<string, string> {
  return {
    KEYHOLE_REGION: o.region,
    KEYHOLE_DB_URL: `file:${o.dbPath}`,
    KEYHOLE_KMS: "local",
    KEYHOLE_DATA_DIR: o.dataDir,
    KEYHOLE_SIGNER_HOST: "127.0.0.1",
    KEYHOLE_SIGNER_PORT: String(o.port ?? 0),
    KEYHOLE_TLS_CERT: o.pki.serverCert,
    KEYHOLE_TLS_KEY: o.pki.serverKey,
    KEYHOLE_TLS_CLIENT_CA: o.pki.caCert,
    KEYHOLE_OIDC_ISSUERS: o.issuer,
    KEYHOLE_OIDC_AUDIENCE: o.audience,
    ...o.extra,
  };
}

export interface SignerProcess {
  region: string;
  url: string;
  port: number;
  /** Every byte the process wrote to stdout and stderr, over all its restarts. */
  output(): Buffer;
  /** SIGSTOP: the kernel still accepts connections, nothing answers. */
  pause(): void;
  resume(): void;
  /** SIGKILL, no goodbye. */
  kill(): Promise<void>;
  /** Starts again on the same port with the same environment (after kill or stop). */
  restart(): Promise<void>;
  /** SIGTERM (SIGKILL after 3 s). */
  stop(): Promise<void>;
  running(): boolean;
}

/** Starts `bun signer/main.ts` and waits for its `signer ready` line. */
export async function startSignerProcess(
  env: Record<string, string>,
  timeoutMs = 30_000,
): Promise<SignerProcess> {
  const chunks: Buffer[] = [];
  let signer: LaunchedSigner;
  let port = Number(env.KEYHOLE_SIGNER_PORT ?? "0");

  const launch = async () => {
    signer = await launchSigner({
      env: signerChildEnv({ ...env, KEYHOLE_SIGNER_PORT: String(port) }),
      timeoutMs,
      onOutput: (chunk) => chunks.push(chunk),
    });
    const child = signer.child;
    live.add(child);
    child.once("exit", () => live.delete(child));
    port = signer.port;
  };
  await launch();

  const running = () => signer.running();
  const kill = () => signer.kill("SIGKILL");

  return {
    region: env.KEYHOLE_REGION ?? "",
    get url() {
      return `https://127.0.0.1:${port}`;
    },
    get port() {
      return port;
    },
    output: () => Buffer.concat(chunks),
    pause: () => {
      signer.child.kill("SIGSTOP");
    },
    resume: () => {
      signer.child.kill("SIGCONT");
    },
    kill,
    async restart() {
      if (running()) await kill();
      await launch();
    },
    stop: () => signer.stop(),
    running,
  };
}

/** An undici agent that presents the relay client certificate (what the edge does). */
export function relayAgent(pki: RelayPki, options: { connections?: number } = {}): Agent {
  return new Agent({
    connect: {
      ca: readFileSync(pki.caCert),
      cert: readFileSync(pki.clientCert),
      key: readFileSync(pki.clientKey),
      servername: "localhost",
    },
    ...(options.connections !== undefined ? { connections: options.connections } : {}),
  });
}

export interface SignerReply {
  status: number;
  // biome-ignore lint/suspicious/noExplicitAny: tests read JSON bodies freely
  body: any;
  text: string;
  headers: Record<string, string | string[] | undefined>;
}

/** One JSON call to a signer over mTLS. */
export async function callSigner(
  agent: Agent,
  base: string,
  method: "GET" | "POST",
  path: string,
  o: { token?: string; body?: unknown; headers?: Record<string, string>; timeoutMs?: number } = {},
): Promise<SignerReply> {
  const headers: Record<string, string> = { ...o.headers };
  if (o.token !== undefined) headers.authorization = `Bearer ${o.token}`;
  let body: string | undefined;
  if (o.body !== undefined) {
    body = JSON.stringify(o.body);
    headers["content-type"] = "application/json";
  }
  const res = await request(`${base}${path}`, {
    dispatcher: agent,
    method,
    headers,
    ...(body !== undefined ? { body } : {}),
    headersTimeout: o.timeoutMs ?? 10_000,
    bodyTimeout: o.timeoutMs ?? 10_000,
  });
  const text = await res.body.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {}
  return { status: res.statusCode, body: parsed, text, headers: res.headers };
}

/**
 * Holds the write lock of a libSQL file from a second connection for `ms` milliseconds:
 * writers that wait longer than their busy timeout fail (storage_unavailable), nothing else may.
 */
export async function holdDatabaseLock(dbPath: string, ms: number): Promise<void> {
  const client = createClient({ url: `file:${dbPath}` });
  try {
    // BEGIN IMMEDIATE takes the write lock now and holds it until the rollback. The signers may
    // hold it for a moment themselves, so the BEGIN is retried (without blocking the event loop).
    let tx: Transaction | undefined;
    for (const started = Date.now(); tx === undefined; ) {
      try {
        tx = await client.transaction("write");
      } catch (e) {
        if (!/SQLITE_BUSY|locked/.test(String(e)) || Date.now() - started > 10_000) throw e;
        await new Promise((r) => setTimeout(r, 10));
      }
    }
    try {
      await tx.execute("select count(*) from networks");
      await new Promise((r) => setTimeout(r, ms));
    } finally {
      await tx.rollback();
      tx.close();
    }
  } finally {
    client.close();
  }
}

/**
 * The self-hosted edge app in process (what edge/node.ts serves), relaying over real mTLS with the
 * relay PKI's client certificate. `env` holds the edge's variables; rate limits default to no limit.
 */
export function inProcessEdge(
  env: Record<string, string>,
  pki: RelayPki,
  clientAddress: string,
  log: (line: unknown) => void = () => {},
): ReturnType<typeof createSelfHostedEdge> {
  const unlimited = "1000000/60";
  const full = {
    KEYHOLE_RATE_ADDRESS: unlimited,
    KEYHOLE_RATE_SUBJECT: unlimited,
    KEYHOLE_RATE_NETWORK: unlimited,
    ...env,
  };
  const transport = createUndiciTransport({
    ca: readFileSync(pki.caCert, "utf8"),
    cert: readFileSync(pki.clientCert, "utf8"),
    key: readFileSync(pki.clientKey, "utf8"),
  });
  return createSelfHostedEdge(full, edgeConfigFromEnv(full), transport, () => clientAddress, log);
}
