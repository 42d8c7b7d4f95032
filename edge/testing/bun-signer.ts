/**
 * Test instrument: starts the real signer (`bun signer/main.ts`) as a child process with mutual TLS
 * from a dev relay PKI, local custody and a libSQL file, and waits for its "signer ready" line. Edge
 * integration tests run two of them as two regions over one database and kill them to fake outages.
 */
import { freePort } from "../../cli/dev/moto.ts";
import type { RelayPki } from "../../cli/dev/pki.ts";
import { launchSigner, signerChildEnv } from "../../cli/dev/signer-process.ts";

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

export { freePort };

export async function startBunSigner(options: BunSignerOptions): Promise<BunSigner> {
  const port = options.port ?? (await freePort());
  const output: string[] = [];
  let partial = "";
  const signer = await launchSigner({
    env: signerChildEnv({
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
    }),
    onOutput: (chunk) => {
      const lines = (partial + chunk.toString("utf8")).split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines) if (line.trim() !== "") output.push(line);
    },
  });
  return {
    region: options.region,
    url: signer.url,
    port: signer.port,
    output,
    kill: (signal = "SIGKILL") => signer.kill(signal),
  };
}
