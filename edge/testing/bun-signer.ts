/**
 * Test instrument: starts the real signer (`bun signer/main.ts`) as a child process with mutual TLS
 * from a dev relay PKI, local custody and a libSQL file, and waits for its "signer ready" line. Edge
 * integration tests run two of them as two regions over one database and kill them to fake outages.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createServer } from "node:net";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { RelayPki } from "../../cli/dev/pki.ts";

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

export interface BunSignerOptions {
  region: string;
  pki: RelayPki;
  /** `file:/tmp/.../keyhole.db`, shared by the regions of one test. */
  dbUrl: string;
  /** Local custody folder, shared by the regions of one test (same development master keys). */
  dataDir: string;
  oidcIssuers: string[];
  audience: string;
  port?: number;
  extraEnv?: Record<string, string>;
}

export interface BunSigner {
  region: string;
  url: string;
  port: number;
  /** Everything the process printed (JSON lines). */
  output: string[];
  kill(signal?: NodeJS.Signals): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const address = s.address();
      const port = typeof address === "object" && address ? address.port : 0;
      s.close(() => resolvePort(port));
    });
  });
}

export async function startBunSigner(options: BunSignerOptions): Promise<BunSigner> {
  const port = options.port ?? (await freePort());
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: process.env.HOME ?? "/tmp",
    KEYHOLE_REGION: options.region,
    KEYHOLE_DB_URL: options.dbUrl,
    KEYHOLE_KMS: "local",
    KEYHOLE_DATA_DIR: options.dataDir,
    KEYHOLE_SIGNER_HOST: "127.0.0.1",
    KEYHOLE_SIGNER_PORT: String(port),
    KEYHOLE_TLS_CERT: options.pki.serverCert,
    KEYHOLE_TLS_KEY: options.pki.serverKey,
    KEYHOLE_TLS_CLIENT_CA: options.pki.caCert,
    KEYHOLE_OIDC_ISSUERS: options.oidcIssuers.join(","),
    KEYHOLE_OIDC_AUDIENCE: options.audience,
    KEYHOLE_OIDC_JWKS_COOLDOWN_MS: "0",
    ...options.extraEnv,
  };
  const child: ChildProcess = spawn(
    resolve(REPO_ROOT, "node_modules/.bin/bun"),
    [resolve(REPO_ROOT, "signer/main.ts")],
    { cwd: REPO_ROOT, env, stdio: ["ignore", "pipe", "pipe"] },
  );
  const output: string[] = [];
  const exited = new Promise<void>((done) => child.once("exit", () => done()));
  const ready = new Promise<void>((ok, fail) => {
    const timer = setTimeout(
      () => fail(new Error(`signer ${options.region} not ready in 30 s:\n${output.join("\n")}`)),
      30_000,
    );
    const onLine = (chunk: Buffer) => {
      for (const line of chunk.toString("utf8").split("\n")) {
        if (line.trim() === "") continue;
        output.push(line);
        if (line.includes('"signer ready"')) {
          clearTimeout(timer);
          ok();
        }
      }
    };
    child.stdout?.on("data", onLine);
    child.stderr?.on("data", onLine);
    child.once("exit", (code) => {
      clearTimeout(timer);
      fail(
        new Error(`signer ${options.region} exited (${code}) before ready:\n${output.join("\n")}`),
      );
    });
  });
  await ready;
  return {
    region: options.region,
    url: `https://127.0.0.1:${port}`,
    port,
    output,
    async kill(signal = "SIGKILL") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}
