/**
 * `keyhole stack` (what `npm start` runs) as a person runs it: a process that prints what runs where,
 * serves the API, and on Ctrl-C stops everything in order and exits 0, with its data kept for the
 * next start.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { freePort } from "../cli/dev/moto.ts";
import { REPO_ROOT } from "./support/tools.ts";

const dir = mkdtempSync(join(tmpdir(), "keyhole-stack-cmd-"));

interface Started {
  child: ChildProcess;
  api: string;
  signerPort: number;
  output: () => { stdout: string; stderr: string };
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function spawnStackCommand(edgePort: number, signerPort: number, issuerPort: number) {
  return spawn(
    process.execPath,
    [
      join(REPO_ROOT, "bin/keyhole.mjs"),
      "stack",
      "--port",
      String(edgePort),
      "--signer-port",
      String(signerPort),
      "--issuer-port",
      String(issuerPort),
    ],
    { cwd: REPO_ROOT, env: { ...process.env, KEYHOLE_DATA_DIR: dir } },
  );
}

async function startStackCommand(): Promise<Started> {
  const edgePort = await freePort();
  const signerPort = await freePort();
  const issuerPort = await freePort();
  const child = spawnStackCommand(edgePort, signerPort, issuerPort);
  let stdout = "";
  let stderr = "";
  child.stdout?.on("data", (b: Buffer) => {
    stdout += b.toString();
  });
  child.stderr?.on("data", (b: Buffer) => {
    stderr += b.toString();
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((done) =>
    child.once("exit", (code, signal) => done({ code, signal })),
  );
  const deadline = Date.now() + 90_000;
  while (!stdout.includes("Ctrl-C stops everything")) {
    if (child.exitCode !== null) throw new Error(`keyhole stack exited early:\n${stderr}`);
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`keyhole stack not ready in 90 s:\n${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    child,
    api: `http://127.0.0.1:${edgePort}`,
    signerPort,
    output: () => ({ stdout, stderr }),
    exited,
  };
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((done) => {
    const s = connect({ host: "127.0.0.1", port }, () => {
      s.destroy();
      done(true);
    });
    s.once("error", () => done(false));
  });
}

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe("keyhole stack", () => {
  it("stops everything in order on SIGINT, exits 0, and starts again on the same data", async () => {
    const first = await startStackCommand();
    try {
      const health = await fetch(`${first.api}/v1/health`);
      expect(health.status).toBe(200);
      expect(await health.json()).toMatchObject({ status: "ok", role: "edge" });
      expect(await portOpen(first.signerPort)).toBe(true);
    } finally {
      first.child.kill("SIGINT");
    }
    const { code, signal } = await first.exited;
    const { stderr } = first.output();
    expect({ code, signal }, stderr).toEqual({ code: 0, signal: null });
    expect(stderr).toContain("keyhole: stopping...");
    expect(stderr).toContain("keyhole: stopped");
    expect(stderr).toMatch(/"msg":"signer stopping","signal":"SIGTERM"/);
    expect(await portOpen(first.signerPort)).toBe(false);
    expect(await portOpen(Number(new URL(first.api).port))).toBe(false);

    // The same data directory: the dev PKI, master keys and database are reused.
    const second = await startStackCommand();
    try {
      expect((await fetch(`${second.api}/v1/health`)).status).toBe(200);
    } finally {
      second.child.kill("SIGTERM");
    }
    expect((await second.exited).code, second.output().stderr).toBe(0);
    expect(second.output().stderr).toContain("keyhole: stopped");
  }, 240_000);

  it("says which port is taken, stops what it started and exits 1", async () => {
    const busy = createServer();
    await new Promise<void>((done) => busy.listen(0, "127.0.0.1", done));
    const edgePort = (busy.address() as { port: number }).port;
    const signerPort = await freePort();
    try {
      const child = spawnStackCommand(edgePort, signerPort, await freePort());
      let stderr = "";
      child.stderr?.on("data", (b: Buffer) => {
        stderr += b.toString();
      });
      const timer = setTimeout(() => child.kill("SIGKILL"), 90_000);
      const code = await new Promise<number | null>((done) => child.once("exit", done));
      clearTimeout(timer);
      expect(code, stderr).toBe(1);
      expect(stderr).toContain(
        `keyhole: the stack did not start: the edge cannot listen on 127.0.0.1:${edgePort}: the address is in use; stop what runs there or choose another port`,
      );
      expect(stderr).toContain("--port (edge, 8787)");
      expect(await portOpen(signerPort)).toBe(false);
    } finally {
      busy.close();
    }
  }, 120_000);
});
