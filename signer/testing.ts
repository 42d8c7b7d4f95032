/**
 * A whole signer for tests, in process: the real app over a real libSQL file, real local custody
 * (two development regions in a temp folder) or any custody passed in, and a real OIDC issuer on
 * loopback. Tests drive it with `app.request()`; `snapshot()` counts rows so a test can prove that a
 * refused request wrote nothing. Not imported by production code.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type DevClaims, type DevIssuer, startDevIssuer } from "../cli/dev/issuer.ts";
import { launchSigner, signerChildEnv } from "../cli/dev/signer-process.ts";
import { createOidcVerifier } from "../core/auth/oidc.ts";
import { generateHostKeyPair, publicKeyToPem } from "../core/cert/index.ts";
import { createSignerApp } from "./app.ts";
import { createCustody } from "./custody/index.ts";
import type { KeyCustody } from "./custody/types.ts";
import { memoryLogger } from "./log.ts";
import { openSignerStore, type SignerStoreHandle } from "./store/index.ts";
import { STORE_TABLES } from "./store/testing.ts";

export const ALL_SCOPES = "networks:write hosts:write hosts:read certs:sign audit:read";

export interface Reply {
  status: number;
  // biome-ignore lint/suspicious/noExplicitAny: tests read JSON bodies freely
  body: any;
  headers: Headers;
}

export interface CallOptions {
  token?: string | undefined;
  body?: unknown;
  /** Sent as is (not JSON-encoded). */
  rawBody?: string;
  headers?: Record<string, string>;
}

export interface TestSigner {
  app: ReturnType<typeof createSignerApp>;
  store: SignerStoreHandle;
  custody: KeyCustody;
  issuer: DevIssuer;
  dir: string;
  dbPath: string;
  logs: ReturnType<typeof memoryLogger>;
  clock: { now: Date; advance(seconds: number): void };
  /** A token of org-x with every scope and MFA, changed by `claims`. */
  token(claims?: DevClaims): Promise<string>;
  call(method: string, path: string, options?: CallOptions): Promise<Reply>;
  /** Row counts of every table, plus used codes and host states. */
  snapshot(): Promise<Record<string, number>>;
  close(): Promise<void>;
}

export interface TestSignerOptions {
  custody?: (dir: string) => Promise<KeyCustody>;
  region?: string;
}

export async function startTestSigner(options: TestSignerOptions = {}): Promise<TestSigner> {
  const dir = mkdtempSync(join(tmpdir(), "keyhole-signer-"));
  const dbPath = join(dir, "signer.db");
  const clock = {
    now: new Date(),
    advance(seconds: number) {
      this.now = new Date(this.now.getTime() + seconds * 1000);
    },
  };
  // The clock follows real time unless a test moves it.
  let offsetMs = 0;
  const now = () => new Date(Date.now() + offsetMs);
  clock.advance = (seconds: number) => {
    offsetMs += seconds * 1000;
  };
  Object.defineProperty(clock, "now", { get: now });
  const store = await openSignerStore({ url: `file:${dbPath}`, busyTimeoutMs: 300, clock: now });
  const custody = options.custody
    ? await options.custody(dir)
    : await createCustody({
        backend: "local",
        dataDir: join(dir, "custody"),
        attemptTimeoutMs: 1000,
      });
  const issuer = await startDevIssuer({ audience: "keyhole-test" });
  const logs = memoryLogger();
  const oidc = createOidcVerifier({ issuers: [issuer.issuer], audience: "keyhole-test" });
  const app = createSignerApp({
    store,
    custody,
    oidc,
    region: options.region ?? "test-a",
    logger: logs,
    clock: now,
  });

  return {
    app,
    store,
    custody,
    issuer,
    dir,
    dbPath,
    logs,
    clock,
    token: (claims = {}) =>
      issuer.mint({
        sub: "alice",
        org: "org-x",
        scope: ALL_SCOPES,
        amr: ["pwd", "otp"],
        ...claims,
      }),
    async call(method, path, o = {}) {
      const headers: Record<string, string> = { ...o.headers };
      if (o.token !== undefined) headers.authorization = `Bearer ${o.token}`;
      let body: string | undefined;
      if (o.rawBody !== undefined) body = o.rawBody;
      else if (o.body !== undefined) {
        body = JSON.stringify(o.body);
        headers["content-type"] ??= "application/json";
      }
      const res = await app.request(path, {
        method,
        headers,
        ...(body !== undefined ? { body } : {}),
      });
      const text = await res.text();
      let parsed: unknown = text;
      try {
        parsed = JSON.parse(text);
      } catch {}
      return { status: res.status, body: parsed, headers: res.headers };
    },
    async snapshot() {
      const client = store.database.readClient;
      const out: Record<string, number> = {};
      for (const t of STORE_TABLES) {
        const r = await client.execute(`select count(*) as n from ${t}`);
        out[t] = Number(r.rows[0]?.n ?? 0);
      }
      const used = await client.execute(
        "select count(*) as n from enrollment_codes where used_at is not null",
      );
      out.usedCodes = Number(used.rows[0]?.n ?? 0);
      const states = await client.execute("select state, count(*) as n from hosts group by state");
      for (const row of states.rows) out[`hosts.${String(row.state)}`] = Number(row.n);
      return out;
    },
    async close() {
      await store.close().catch(() => {});
      await custody.close().catch(() => {});
      await issuer.close().catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function hostPublicKeyPem(curve: "25519" | "P256" = "25519"): Promise<string> {
  const pair = await generateHostKeyPair(curve === "25519" ? "CURVE25519" : "P256");
  return publicKeyToPem(pair.curve, pair.publicKey);
}

export interface BunSigner {
  url: string;
  port: number;
  /** Every stdout line the signer printed, parsed. */
  lines: Record<string, unknown>[];
  stderr: () => string;
  stop(): Promise<void>;
}

/**
 * Starts the real signer process (`bun signer/main.ts`) with the given environment and waits for its
 * `signer ready` line. Killed on stop and when the test process exits.
 */
export async function startBunSigner(
  env: Record<string, string>,
  timeoutMs = 30_000,
): Promise<BunSigner> {
  const lines: Record<string, unknown>[] = [];
  let err = "";
  let partial = "";
  const signer = await launchSigner({
    env: signerChildEnv(env),
    timeoutMs,
    onOutput: (chunk, stream) => {
      if (stream === "stderr") {
        err += chunk.toString("utf8");
        return;
      }
      const text = (partial + chunk.toString("utf8")).split("\n");
      partial = text.pop() ?? "";
      for (const line of text) {
        try {
          lines.push(JSON.parse(line) as Record<string, unknown>);
        } catch {
          // not a JSON line (Bun's own output)
        }
      }
    },
  });
  const killAtExit = () => signer.child.kill("SIGKILL");
  process.once("exit", killAtExit);
  return {
    url: signer.url,
    port: signer.port,
    lines,
    stderr: () => err,
    async stop() {
      await signer.stop();
      process.removeListener("exit", killAtExit);
    },
  };
}
