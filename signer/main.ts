/**
 * The signer process (Bun only): reads its configuration, opens the database and key custody, and
 * serves the app over mutual TLS. There is one listener, with one top-level `tls` object that demands
 * a client certificate from the relay CA (invariant 4); no plain HTTP port exists. Prints one JSON line
 * `{"msg":"signer ready",...}` when it accepts connections, for scripts to wait on. With
 * KEYHOLE_EXIT_WITH_PARENT=1 it also stops when its stdin closes (its supervisor went away).
 */
import { createOidcVerifier } from "../core/auth/oidc.ts";
import { createSignerApp } from "./app.ts";
import { signerConfigFromEnv } from "./config.ts";
import { createCustody } from "./custody/index.ts";
import { jsonLineLogger } from "./log.ts";
import { openSignerStore } from "./store/index.ts";

const logger = jsonLineLogger();

async function startSigner(): Promise<void> {
  const config = signerConfigFromEnv(process.env);
  const store = await openSignerStore({
    url: config.db.url,
    authToken: config.db.authToken,
    onWalEvent: (e) => logger.log("warn", "database checkpoint", { ...e }),
  });
  const custody = await createCustody(config.custody);
  const oidc = createOidcVerifier(config.oidc);
  const app = createSignerApp({
    store,
    custody,
    oidc,
    region: config.region,
    logger,
    nebulaListenPort: config.nebulaListenPort,
  });
  const server = Bun.serve({
    port: config.listen.port,
    hostname: config.listen.host,
    fetch: app.fetch,
    tls: {
      cert: Bun.file(config.tls.certFile),
      key: Bun.file(config.tls.keyFile),
      ca: Bun.file(config.tls.clientCaFile),
      requestCert: true,
      rejectUnauthorized: true,
    },
  });
  const host = config.listen.host.includes(":") ? `[${config.listen.host}]` : config.listen.host;
  logger.log("info", "signer ready", {
    region: config.region,
    url: `https://${host}:${server.port}`,
    custody: custody.label,
    regions: custody.regions,
  });
  const stop = async (signal: string) => {
    logger.log("info", "signer stopping", { signal });
    await server.stop();
    await store.close().catch(() => {});
    await custody.close().catch(() => {});
    process.exit(0);
  };
  process.once("SIGTERM", () => void stop("SIGTERM"));
  process.once("SIGINT", () => void stop("SIGINT"));
  // Started by a supervisor (the local stack) with a pipe on stdin: when the supervisor is gone, for
  // whatever reason, the pipe closes and the signer stops instead of lingering on its port.
  if (process.env.KEYHOLE_EXIT_WITH_PARENT === "1") {
    process.stdin.on("end", () => void stop("parent exited"));
    process.stdin.on("close", () => void stop("parent exited"));
    process.stdin.resume();
  }
}

startSigner().catch((e: unknown) => {
  logger.log("error", "signer failed to start", {
    error: e instanceof Error ? e.message : String(e),
  });
  process.exit(1);
});
