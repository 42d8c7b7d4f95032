/**
 * `keyhole stack` (what `npm start` runs): the whole service on loopback with no account anywhere.
 * First run sets up the data folder (relay PKI, local KMS master keys, libSQL file, dev issuer keys);
 * then it starts the dev OIDC issuer, the signer under Bun with mutual TLS, and the edge in workerd,
 * prints what runs where, and stops everything cleanly on Ctrl-C. The signer's KMS variables are
 * passed through, so `KEYHOLE_KMS=aws` runs the same stack against KMS-compatible servers.
 */
import type { ChildProcess } from "node:child_process";
import { mkdir, rm } from "node:fs/promises";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { type DevIssuer, startDevIssuer } from "./dev/issuer.ts";
import { makeRelayPki, type RelayPki } from "./dev/pki.ts";
import { launchSigner } from "./dev/signer-process.ts";
import { type StackPaths, stackPaths, writeStackState } from "./stack-state.ts";

export const REPO_ROOT = resolve(fileURLToPath(new URL("..", import.meta.url)));

export interface StackOptions {
  paths: StackPaths;
  edgePort: number;
  signerPort: number;
  issuerPort: number;
  /** Extra environment for the signer (KMS settings and the like); defaults to process.env. */
  env?: Record<string, string | undefined>;
  /** Where to write progress lines (default stderr). */
  log?: (line: string) => void;
  /** Pass signer log lines through (default true for the CLI, false in tests). */
  echoSignerLogs?: boolean;
  /** Aborting stops whatever has started so far and makes startStack reject. */
  signal?: AbortSignal;
}

export interface SignerProcess {
  region: string;
  url: string;
  child: ChildProcess;
  stop(): Promise<void>;
}

export interface RunningStack {
  api: string;
  issuer: DevIssuer;
  pki: RelayPki;
  signers: SignerProcess[];
  paths: StackPaths;
  stop(): Promise<void>;
}

/** Starts one signer region under Bun and waits for its "signer ready" line. */
export async function startSigner(options: {
  region: string;
  port: number;
  pki: RelayPki;
  dbUrl: string;
  dataDir: string;
  oidc: { issuer: string; audience: string; orgClaim: string };
  env?: Record<string, string | undefined>;
  onLog?: (line: string) => void;
  timeoutMs?: number;
}): Promise<SignerProcess> {
  const base = options.env ?? process.env;
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(base)) if (v !== undefined) env[k] = v;
  Object.assign(env, {
    KEYHOLE_REGION: options.region,
    KEYHOLE_DB_URL: base.KEYHOLE_DB_URL ?? options.dbUrl,
    KEYHOLE_KMS: base.KEYHOLE_KMS ?? "local",
    KEYHOLE_DATA_DIR: options.dataDir,
    KEYHOLE_SIGNER_HOST: "127.0.0.1",
    KEYHOLE_SIGNER_PORT: String(options.port),
    KEYHOLE_TLS_CERT: options.pki.serverCert,
    KEYHOLE_TLS_KEY: options.pki.serverKey,
    KEYHOLE_TLS_CLIENT_CA: options.pki.caCert,
    KEYHOLE_OIDC_ISSUERS: options.oidc.issuer,
    KEYHOLE_OIDC_AUDIENCE: options.oidc.audience,
    KEYHOLE_ORG_CLAIM: options.oidc.orgClaim,
  });
  let partial = "";
  const onLog = options.onLog;
  const launched = await launchSigner({
    env,
    exitWithParent: true,
    ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
    ...(onLog
      ? {
          onOutput: (chunk: Buffer) => {
            const lines = (partial + chunk.toString("utf8")).split("\n");
            partial = lines.pop() ?? "";
            for (const line of lines) onLog(line);
          },
        }
      : {}),
  });
  return {
    region: options.region,
    url: launched.url,
    child: launched.child,
    stop: () => launched.stop(5_000),
  };
}

/** Brings the local stack up. The caller owns the result and must `stop()` it. */
export async function startStack(options: StackOptions): Promise<RunningStack> {
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const { paths } = options;
  await mkdir(paths.dir, { recursive: true, mode: 0o700 });
  log(`keyhole: data folder ${paths.dir}`);
  const pki = await makeRelayPki(paths.pki);
  log(
    "keyhole: relay PKI ready (development CA, signer server certificate, edge client certificate)",
  );
  const issuer = await startDevIssuer({ port: options.issuerPort, keyFile: paths.issuerKeys });
  log(`keyhole: dev OIDC issuer on ${issuer.issuer}`);
  const stops: (() => Promise<void>)[] = [() => issuer.close()];
  const stop = async () => {
    for (const s of stops.reverse()) await s().catch(() => undefined);
    stops.length = 0;
  };
  const checkAbort = () => {
    if (options.signal?.aborted) throw new Error("stopped while starting");
  };
  try {
    checkAbort();
    const signer = await startSigner({
      region: "local",
      port: options.signerPort,
      pki,
      dbUrl: `file:${paths.database}`,
      dataDir: paths.kms,
      oidc: issuer,
      ...(options.env ? { env: options.env } : {}),
      ...(options.echoSignerLogs === false
        ? {}
        : { onLog: (line: string) => log(`signer | ${line}`) }),
    });
    stops.push(signer.stop);
    log(`keyhole: signer (Bun, mutual TLS) on ${signer.url}`);
    checkAbort();
    const env = options.env ?? process.env;
    const { DEFAULT_RATES, parseRate } = await import("../edge/config.ts");
    const { startEdgeInMiniflare } = await import("../edge/local.ts");
    const edge = await startEdgeInMiniflare({
      vars: {
        KEYHOLE_SIGNERS: `${signer.region}=${signer.url}`,
        KEYHOLE_OIDC_ISSUERS: issuer.issuer,
        KEYHOLE_OIDC_AUDIENCE: issuer.audience,
        KEYHOLE_ORG_CLAIM: issuer.orgClaim,
      },
      tls: { caFile: pki.caCert, certFile: pki.clientCert, keyFile: pki.clientKey },
      rates: {
        address: parseRate("KEYHOLE_RATE_ADDRESS", env.KEYHOLE_RATE_ADDRESS, DEFAULT_RATES.address),
        subject: parseRate("KEYHOLE_RATE_SUBJECT", env.KEYHOLE_RATE_SUBJECT, DEFAULT_RATES.subject),
        network: parseRate("KEYHOLE_RATE_NETWORK", env.KEYHOLE_RATE_NETWORK, DEFAULT_RATES.network),
      },
      port: options.edgePort,
    });
    stops.push(edge.dispose);
    log(`keyhole: edge (workerd via Miniflare) on ${edge.url}`);
    checkAbort();
    const api = edge.url.replace(/\/+$/, "");
    await writeStackState(paths, {
      api,
      oidc: { issuer: issuer.issuer, audience: issuer.audience, orgClaim: issuer.orgClaim },
      signers: { [signer.region]: signer.url },
      pid: process.pid,
      startedAt: new Date().toISOString(),
    });
    stops.push(() => rm(paths.state, { force: true }));
    return { api, issuer, pki, signers: [signer], paths, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

function nextSteps(api: string): string {
  return `
Keyhole is running (development backends: local KMS master keys, dev OIDC issuer).
  API        ${api}   (OpenAPI: ${api}/openapi.json, docs: ${api}/docs)

Try, in another terminal:
  export KEYHOLE_TOKEN=$(npx keyhole dev token --mfa)
  npx keyhole network create --name lab --cidrs 10.77.0.0/16,fd77::/64
  npx keyhole host add --network <network id> --name laptop
  sh scripts/keyhole-enroll.sh --api ${api} --code <code> --dir ./laptop

Ctrl-C stops everything.
`;
}

const STOP_SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP"] as const;

const PORT_HINT =
  "keyhole: the stack's ports are --port (edge, 8787), --signer-port (8443) and --issuer-port (8788), or KEYHOLE_EDGE_PORT, KEYHOLE_SIGNER_PORT and KEYHOLE_DEV_ISSUER_PORT\n";

/**
 * Miniflare answers SIGINT and SIGTERM by killing workerd and exiting on the spot, which would cut
 * the ordered stop short (the signer drained and its database closed, then the edge, then the
 * issuer). Once the stack runs these signals are the command's alone; Miniflare's exit hook stays,
 * so workerd still ends with this process however it ends.
 */
function keepOnly(handler: () => void): void {
  for (const signal of STOP_SIGNALS) {
    for (const listener of process.listeners(signal)) {
      if (listener !== handler) process.removeListener(signal, listener);
    }
  }
}

export async function stackCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      port: { type: "string", default: process.env.KEYHOLE_EDGE_PORT ?? "8787" },
      "signer-port": { type: "string", default: process.env.KEYHOLE_SIGNER_PORT ?? "8443" },
      "issuer-port": { type: "string", default: process.env.KEYHOLE_DEV_ISSUER_PORT ?? "8788" },
      quiet: { type: "boolean", default: false },
    },
    strict: true,
  });
  const port = (name: string, text: string) => {
    const n = Number(text);
    if (!Number.isInteger(n) || n < 1 || n > 65_535)
      throw new Error(`${name} must be a TCP port, got ${JSON.stringify(text)}`);
    return n;
  };
  // Signals are handled from the first moment: a Ctrl-C while starting stops what already runs. A
  // second one while stopping exits at once (the exit hook Miniflare keeps still ends workerd).
  const abort = new AbortController();
  let resolveStopped = () => {};
  const stopped = new Promise<void>((res) => {
    resolveStopped = res;
  });
  const onSignal = () => {
    if (abort.signal.aborted) {
      process.stderr.write("keyhole: stopping at once\n");
      process.exit(130);
    }
    abort.abort();
    resolveStopped();
  };
  for (const signal of STOP_SIGNALS) process.on(signal, onSignal);
  let stack: RunningStack;
  try {
    stack = await startStack({
      paths: stackPaths(),
      edgePort: port("--port", values.port),
      signerPort: port("--signer-port", values["signer-port"]),
      issuerPort: port("--issuer-port", values["issuer-port"]),
      echoSignerLogs: !values.quiet,
      signal: abort.signal,
    });
  } catch (e) {
    const message = (e as Error).message;
    process.stderr.write(`keyhole: the stack did not start: ${message}\n`);
    if (/in use/i.test(message)) process.stderr.write(PORT_HINT);
    return abort.signal.aborted ? 130 : 1;
  }
  keepOnly(onSignal);
  process.stdout.write(nextSteps(stack.api));
  await stopped;
  process.stderr.write("\nkeyhole: stopping...\n");
  await stack.stop();
  process.stderr.write("keyhole: stopped\n");
  return 0;
}
