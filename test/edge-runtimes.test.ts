/**
 * The same edge app on Bun and on Node: edge/testing/runtime-check.ts runs its `app.request()`
 * checks under `bun` and under Node (tsx), each with its own runtime's mTLS transport, against a REAL
 * Bun signer; then the self-host entries themselves (`bun edge/bun.ts`, `node bin/run-ts.mjs
 * edge/node.ts`) are started as processes and called over HTTP.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type DevIssuer, startDevIssuer } from "../cli/dev/issuer.ts";
import { makeRelayPki, type RelayPki } from "../cli/dev/pki.ts";
import { type BunSigner, freePort, startBunSigner } from "../edge/testing/bun-signer.ts";
import { ALL_SCOPES } from "../edge/testing/token-cases.ts";
import { REPO_ROOT } from "./support/tools.ts";

const AUDIENCE = "keyhole-runtimes-test";
const BUN = resolve(REPO_ROOT, "node_modules/.bin/bun");

let dir: string;
let pki: RelayPki;
let issuer: DevIssuer;
let signer: BunSigner;
const children: ChildProcess[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "keyhole-edge-runtimes-"));
  pki = await makeRelayPki(join(dir, "pki"));
  issuer = await startDevIssuer({ audience: AUDIENCE });
  signer = await startBunSigner({
    region: "a",
    pki,
    dbUrl: `file:${join(dir, "keyhole.db")}`,
    dataDir: join(dir, "custody"),
    oidcIssuers: [issuer.issuer],
    audience: AUDIENCE,
  });
}, 120_000);

afterAll(async () => {
  for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
  await signer?.kill();
  await issuer?.close();
  await rm(dir, { recursive: true, force: true });
});

function edgeEnv(extra: Record<string, string> = {}): Record<string, string> {
  return {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: process.env.HOME ?? "/tmp",
    KEYHOLE_SIGNERS: `a=${signer.url}`,
    KEYHOLE_OIDC_ISSUERS: issuer.issuer,
    KEYHOLE_OIDC_AUDIENCE: AUDIENCE,
    KEYHOLE_RELAY_CA: pki.caCert,
    KEYHOLE_RELAY_CLIENT_CERT: pki.clientCert,
    KEYHOLE_RELAY_CLIENT_KEY: pki.clientKey,
    ...extra,
  };
}

function run(
  command: string,
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number | null; out: string }> {
  return new Promise((done) => {
    const child = spawn(command, args, { cwd: REPO_ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
    children.push(child);
    let out = "";
    child.stdout.on("data", (c: Buffer) => (out += c.toString()));
    child.stderr.on("data", (c: Buffer) => (out += c.toString()));
    child.on("exit", (code) => done({ code, out }));
  });
}

async function checkTokens(): Promise<Record<string, string>> {
  const base = { sub: "rt", org: "acme" };
  return {
    CHECK_TOKEN_ADMIN: await issuer.mint({ ...base, scope: ALL_SCOPES, amr: ["mfa"] }),
    CHECK_TOKEN_READ: await issuer.mint({ ...base, scope: "hosts:read" }),
    CHECK_TOKEN_EXPIRED: await issuer.mint({ ...base, scope: ALL_SCOPES, expiresInSec: -600 }),
  };
}

interface CheckResult {
  runtime: string;
  checks: { name: string; ok: boolean; detail: string }[];
}

function resultOf(out: string): CheckResult {
  const line = out.split("\n").find((l) => l.startsWith("RESULT "));
  if (!line) throw new Error(`runtime-check printed no RESULT line:\n${out}`);
  return JSON.parse(line.slice("RESULT ".length)) as CheckResult;
}

describe("the edge app's request checks on each runtime", () => {
  for (const runtime of ["bun", "node"] as const) {
    it(`passes under ${runtime}`, async () => {
      const script = "edge/testing/runtime-check.ts";
      const { code, out } =
        runtime === "bun"
          ? await run(BUN, [script], edgeEnv(await checkTokens()))
          : await run(process.execPath, ["bin/run-ts.mjs", script], edgeEnv(await checkTokens()));
      expect(code, out).toBe(0);
      const result = resultOf(out);
      expect(result.runtime).toBe(runtime);
      expect(result.checks.length).toBeGreaterThanOrEqual(9);
      for (const c of result.checks) expect(c.ok, `${c.name}: ${c.detail}`).toBe(true);
    });
  }
});

describe("the self-host entries", () => {
  async function startEntry(runtime: "bun" | "node"): Promise<string> {
    const port = await freePort();
    const env = edgeEnv({ KEYHOLE_EDGE_PORT: String(port) });
    const child =
      runtime === "bun"
        ? spawn(BUN, ["edge/bun.ts"], { cwd: REPO_ROOT, env, stdio: ["ignore", "pipe", "pipe"] })
        : spawn(process.execPath, ["bin/run-ts.mjs", "edge/node.ts"], {
            cwd: REPO_ROOT,
            env,
            stdio: ["ignore", "pipe", "pipe"],
          });
    children.push(child);
    let out = "";
    await new Promise<void>((ok, fail) => {
      const timer = setTimeout(
        () => fail(new Error(`edge (${runtime}) not ready:\n${out}`)),
        20_000,
      );
      const onData = (c: Buffer) => {
        out += c.toString();
        if (out.includes('"edge ready"')) {
          clearTimeout(timer);
          ok();
        }
      };
      child.stdout?.on("data", onData);
      child.stderr?.on("data", onData);
      child.once("exit", (code) => fail(new Error(`edge (${runtime}) exited ${code}:\n${out}`)));
    });
    return `http://127.0.0.1:${port}`;
  }

  for (const runtime of ["bun", "node"] as const) {
    it(`edge/${runtime}.ts serves over HTTP and relays over mTLS`, async () => {
      const url = await startEntry(runtime);
      const health = await fetch(`${url}/v1/health`);
      const body = (await health.json()) as { status: string; role: string };
      expect(health.status).toBe(200);
      expect(body).toMatchObject({ status: "ok", role: "edge" });
      const read = await issuer.mint({ sub: "rt", org: "acme", scope: "hosts:read" });
      const list = await fetch(`${url}/v1/networks`, {
        headers: { authorization: `Bearer ${read}` },
      });
      expect(list.status).toBe(200);
      expect(list.headers.get("x-request-id")).toMatch(/^[0-9a-f]{32}$/);
      const refused = await fetch(`${url}/v1/networks`);
      expect(refused.status).toBe(401);
    });
  }

  it("refuses a wrong configuration at start with a message naming the variable", async () => {
    const { code, out } = await run(
      BUN,
      ["edge/bun.ts"],
      edgeEnv({ KEYHOLE_SIGNERS: "a=http://127.0.0.1:1" }),
    );
    expect(code).toBe(2);
    expect(out).toContain("KEYHOLE_SIGNERS");
    expect(out).toContain("https://");
    const missing = await run(process.execPath, ["bin/run-ts.mjs", "edge/node.ts"], {
      ...edgeEnv(),
      KEYHOLE_RELAY_CLIENT_KEY: join(dir, "nope.key"),
    });
    expect(missing.code).toBe(2);
    expect(missing.out).toContain("KEYHOLE_RELAY_CLIENT_KEY");
  });
});
