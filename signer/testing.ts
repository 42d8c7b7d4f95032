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
import { createOidcVerifier } from "../core/auth/oidc.ts";
import { generateHostKeyPair, publicKeyToPem } from "../core/cert/index.ts";
import { createSignerApp } from "./app.ts";
import { createCustody } from "./custody/index.ts";
import type { KeyCustody } from "./custody/types.ts";
import { memoryLogger } from "./log.ts";
import { openSignerStore, type SignerStoreHandle } from "./store/index.ts";

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

const TABLES = [
  "networks",
  "cas",
  "ca_sealed_keys",
  "hosts",
  "host_addresses",
  "address_pools",
  "enrollment_codes",
  "host_tokens",
  "certificates",
  "idempotency",
  "audit_events",
];

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
      for (const t of TABLES) {
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
  const { spawn } = await import("node:child_process");
  const { resolve } = await import("node:path");
  const root = resolve(import.meta.dirname, "..");
  const child = spawn(resolve(root, "node_modules/.bin/bun"), ["signer/main.ts"], {
    cwd: root,
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const kill = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  };
  process.once("exit", kill);
  const lines: Record<string, unknown>[] = [];
  let err = "";
  child.stderr.on("data", (d: Buffer) => {
    err += d.toString();
  });
  let buffered = "";
  const ready = new Promise<string>((resolveReady, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`signer not ready in ${timeoutMs} ms: ${err.slice(-500)}`)),
      timeoutMs,
    );
    child.stdout.on("data", (d: Buffer) => {
      buffered += d.toString();
      let nl = buffered.indexOf("\n");
      while (nl >= 0) {
        const text = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        nl = buffered.indexOf("\n");
        try {
          const line = JSON.parse(text) as Record<string, unknown>;
          lines.push(line);
          if (line.msg === "signer ready") {
            clearTimeout(timer);
            resolveReady(String(line.url));
          }
          if (line.msg === "signer failed to start") {
            clearTimeout(timer);
            reject(new Error(`signer failed to start: ${String(line.error)}`));
          }
        } catch {
          // not a JSON line (Bun's own output)
        }
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`signer exited with ${code}: ${err.slice(-500)}`));
    });
  });
  let url: string;
  try {
    url = await ready;
  } catch (e) {
    kill();
    throw e;
  }
  return {
    url,
    port: Number(new URL(url).port),
    lines,
    stderr: () => err,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((r) => child.once("exit", () => r()));
      child.kill("SIGTERM");
      const timer = setTimeout(kill, 3000);
      await exited;
      clearTimeout(timer);
      process.removeListener("exit", kill);
    },
  };
}
