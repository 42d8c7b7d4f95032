/**
 * Starts the signer (`bun signer/main.ts`) as a child process and waits for its `signer ready` line.
 * The one launcher behind the local stack, the benchmarks and the integration tests, so that how the
 * signer is started, watched and stopped is written once.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const BUN = resolve(REPO_ROOT, "node_modules/.bin/bun");

export interface LaunchSignerOptions {
  /** The child's whole environment (nothing is inherited unless the caller passes it). */
  env: Record<string, string>;
  timeoutMs?: number;
  /** Every chunk the process writes, as it comes. */
  onOutput?: (chunk: Buffer, stream: "stdout" | "stderr") => void;
  /** Keep a pipe on the signer's stdin and let it stop when this process goes away. */
  exitWithParent?: boolean;
}

export interface LaunchedSigner {
  child: ChildProcess;
  url: string;
  port: number;
  running(): boolean;
  /** Sends `signal` (default SIGKILL; a paused process is resumed first) and waits for the exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** SIGTERM, then SIGKILL after `graceMs` (default 3 s). */
  stop(graceMs?: number): Promise<void>;
}

/** Minimal environment for a signer started by a test: PATH and HOME, then the given variables. */
export function signerChildEnv(vars: Record<string, string>): Record<string, string> {
  return { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/tmp", ...vars };
}

export async function launchSigner(options: LaunchSignerOptions): Promise<LaunchedSigner> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  const env = options.exitWithParent
    ? { ...options.env, KEYHOLE_EXIT_WITH_PARENT: "1" }
    : options.env;
  const child = spawn(BUN, [resolve(REPO_ROOT, "signer/main.ts")], {
    cwd: REPO_ROOT,
    env,
    stdio: [options.exitWithParent ? "pipe" : "ignore", "pipe", "pipe"],
  });
  const running = () => child.exitCode === null && child.signalCode === null;
  const exited = new Promise<void>((done) => child.once("exit", () => done()));
  const kill = async (signal: NodeJS.Signals = "SIGKILL") => {
    if (!running()) return;
    child.kill("SIGCONT");
    child.kill(signal);
    await exited;
  };
  const stop = async (graceMs = 3_000) => {
    if (!running()) return;
    const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
    await kill("SIGTERM");
    clearTimeout(timer);
  };

  let tail = "";
  const ready = new Promise<string>((resolveReady, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`signer not ready in ${timeoutMs} ms:\n${tail}`)),
      timeoutMs,
    );
    let pending = "";
    const watch = (stream: "stdout" | "stderr") => (chunk: Buffer) => {
      options.onOutput?.(chunk, stream);
      const text = chunk.toString("utf8");
      tail = (tail + text).slice(-2000);
      pending += text;
      for (let nl = pending.indexOf("\n"); nl >= 0; nl = pending.indexOf("\n")) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        if (!line.startsWith("{")) continue;
        let parsed: { msg?: unknown; url?: unknown; error?: unknown };
        try {
          parsed = JSON.parse(line);
        } catch {
          continue;
        }
        if (parsed.msg === "signer ready") {
          clearTimeout(timer);
          resolveReady(String(parsed.url));
        } else if (parsed.msg === "signer failed to start") {
          clearTimeout(timer);
          reject(new Error(`signer failed to start: ${String(parsed.error)}`));
        }
      }
    };
    child.stdout?.on("data", watch("stdout"));
    child.stderr?.on("data", watch("stderr"));
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`signer exited (${code ?? signal}) before it was ready:\n${tail}`));
    });
  });
  let url: string;
  try {
    url = await ready;
  } catch (e) {
    await kill();
    throw e;
  }
  return { child, url, port: Number(new URL(url).port), running, kill, stop };
}
