/**
 * `keyhole enroll --code CODE --dir DIR`: the TypeScript twin of scripts/keyhole-enroll.sh for hosts
 * that have Node. The key pair is made here and only the public key is sent; the private key and the
 * host token are written 0600; config.yml is the same file the script writes.
 */
import { existsSync } from "node:fs";
import { chmod, mkdir, rename, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import {
  type Curve,
  generateHostKeyPair,
  privateKeyToPem,
  publicKeyToPem,
} from "../../core/cert/index.ts";
import type { IssuedCertificate } from "../../core/contract/index.ts";
import { KeyholeClient, reportError } from "../client.ts";
import { configFromHints } from "../nebula-config.ts";

const CURVES: Record<string, Curve> = { "25519": "CURVE25519", P256: "P256" };

/** Writes a file atomically (temporary file, then rename) with the given mode. */
async function install(dir: string, name: string, content: string, mode: number): Promise<void> {
  const tmp = join(dir, `.${name}.tmp-${process.pid}`);
  await writeFile(tmp, content, { mode });
  await chmod(tmp, mode);
  await rename(tmp, join(dir, name));
}

export async function enrollCommand(argv: string[]): Promise<number> {
  try {
    const { values } = parseArgs({
      args: argv,
      options: {
        code: { type: "string" },
        dir: { type: "string" },
        curve: { type: "string", default: "25519" },
        api: { type: "string" },
        "tun-dev": { type: "string" },
        "listen-port": { type: "string" },
        json: { type: "boolean", default: false },
      },
      strict: true,
    });
    const code = values.code ?? process.env.KEYHOLE_ENROLL_CODE;
    if (!code || !values.dir) {
      throw new Error(
        "usage: keyhole enroll --code CODE --dir DIR [--curve 25519|P256] [--api URL] [--tun-dev NAME] [--listen-port N]\n  (the code may come from KEYHOLE_ENROLL_CODE instead of --code)",
      );
    }
    const curve = CURVES[values.curve];
    if (!curve)
      throw new Error(`--curve must be 25519 or P256, not ${JSON.stringify(values.curve)}`);
    const listenPort =
      values["listen-port"] === undefined ? undefined : Number(values["listen-port"]);
    if (
      listenPort !== undefined &&
      (!Number.isInteger(listenPort) || listenPort < 0 || listenPort > 65_535)
    ) {
      throw new Error("--listen-port must be a number from 0 to 65535");
    }
    const dir = resolve(values.dir);
    if (existsSync(join(dir, "host.key"))) {
      throw new Error(
        `${join(dir, "host.key")} exists: this folder already holds an enrolled host (renew it with keyhole-enroll.sh --renew)`,
      );
    }
    await mkdir(dir, { recursive: true, mode: 0o700 });

    const keys = await generateHostKeyPair(curve);
    const privatePem = privateKeyToPem(curve, keys.privateKey, false);
    keys.privateKey.fill(0);
    const client = new KeyholeClient(values.api ? { api: values.api } : {});
    const issued = await client.request<IssuedCertificate>("POST", "/v1/enroll", {
      code,
      publicKey: publicKeyToPem(curve, keys.publicKey),
    });

    const files = {
      caPath: join(dir, "ca.crt"),
      certPath: join(dir, "host.crt"),
      keyPath: join(dir, "host.key"),
    };
    await install(dir, "host.key", privatePem, 0o600);
    await install(dir, "host.token", `${issued.hostToken}\n`, 0o600);
    await install(dir, "host.crt", issued.certificate, 0o644);
    await install(dir, "ca.crt", issued.caBundle, 0o644);
    await install(dir, "blocklist", issued.config.blocklist.map((f) => `${f}\n`).join(""), 0o644);
    const options = {
      ...(values["tun-dev"] ? { tunDev: values["tun-dev"] } : {}),
      ...(listenPort === undefined ? {} : { listenPort }),
    };
    await install(dir, "config.yml", configFromHints(issued.config, files, options), 0o644);

    const summary = {
      hostId: issued.hostId,
      networkId: issued.config.network.id,
      fingerprint: issued.fingerprint,
      notAfter: issued.notAfter,
      dir,
    };
    process.stdout.write(
      values.json
        ? `${JSON.stringify(summary, null, 2)}\n`
        : `enrolled host ${issued.hostId} in network ${issued.config.network.name}: certificate ${issued.fingerprint} until ${issued.notAfter}\nstart nebula with: nebula -config ${join(dir, "config.yml")}\n`,
    );
    return 0;
  } catch (e) {
    return reportError(e);
  }
}
