/**
 * The online-CA alternative: Debian's `cfssl serve` (golang-cfssl) signing P-256 CSRs over HTTP on
 * loopback, driven by the same load generator as Keyhole's end-to-end runs.
 */
import { execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { freePort } from "../cli/dev/moto.ts";
import { type LoadResult, runLoad } from "./load.ts";

const run = promisify(execFile);

export const CFSSL = process.env.KEYHOLE_CFSSL ?? "/usr/bin/cfssl";

async function waitForHttp(url: string, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    try {
      await fetch(url);
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error(`${url} did not answer within ${timeoutMs} ms`);
}

/** A running `cfssl serve` with a fresh P-256 CA, and one CSR to sign over and over. */
export interface CfsslServer {
  /** One load run of sign requests (after a short warm-up on the first call). */
  run(load: { concurrency: number; total: number; maxMs: number }): Promise<LoadResult>;
  stop(): Promise<void>;
}

export async function startCfssl(): Promise<CfsslServer | { skipped: string }> {
  if (!existsSync(CFSSL))
    return { skipped: `cfssl not found at ${CFSSL} (apt-get install golang-cfssl)` };
  const dir = await mkdtemp(join(tmpdir(), "keyhole-cfssl-"));
  const removeDir = () => rm(dir, { recursive: true, force: true });
  try {
    const port = await freePort();
    const openssl = (...args: string[]) => run("openssl", args);
    const key = (name: string) =>
      openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", join(dir, name));
    await key("ca.key");
    await openssl(
      "req",
      "-x509",
      "-new",
      "-key",
      join(dir, "ca.key"),
      "-out",
      join(dir, "ca.pem"),
      "-days",
      "30",
      "-subj",
      "/CN=bench CA",
    );
    await key("host.key");
    await openssl(
      "req",
      "-new",
      "-key",
      join(dir, "host.key"),
      "-out",
      join(dir, "host.csr"),
      "-subj",
      "/CN=host",
    );
    await writeFile(
      join(dir, "config.json"),
      JSON.stringify({
        signing: {
          default: { expiry: "720h", usages: ["digital signature", "client auth", "server auth"] },
        },
      }),
    );
    const child = spawn(
      CFSSL,
      [
        "serve",
        "-address",
        "127.0.0.1",
        "-port",
        String(port),
        "-ca",
        join(dir, "ca.pem"),
        "-ca-key",
        join(dir, "ca.key"),
        "-config",
        join(dir, "config.json"),
        "-loglevel",
        "5",
      ],
      { stdio: "ignore" },
    );
    const stop = async () => {
      child.kill("SIGKILL");
      await removeDir();
    };
    try {
      const base = `http://127.0.0.1:${port}`;
      await waitForHttp(`${base}/api/v1/cfssl/info`, 15_000);
      const body = JSON.stringify({
        certificate_request: await readFile(join(dir, "host.csr"), "utf8"),
      });
      const sign = async () => {
        const res = await fetch(`${base}/api/v1/cfssl/sign`, {
          method: "POST",
          body,
          headers: { "content-type": "application/json" },
        });
        const json = (await res.json()) as { success?: boolean };
        if (!res.ok || !json.success) throw new Error(`cfssl answered ${res.status}`);
      };
      await runLoad({ concurrency: 4, total: 50, maxMs: 5_000, request: sign }); // warm-up
      return { run: (load) => runLoad({ ...load, request: sign }), stop };
    } catch (e) {
      await stop();
      throw e;
    }
  } catch (e) {
    await removeDir();
    throw e;
  }
}
