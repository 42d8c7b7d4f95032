/**
 * moto_server as a stand-in KMS region for integration tests: one process per region, on a free
 * loopback port, with fake static credentials. Regions can be killed, paused (SIGSTOP) and resumed
 * to fake outages. Used by tests, by the benchmarks and by a developer who runs the stack with
 * KEYHOLE_KMS=aws. Every process started here is killed at process exit (tests also after each file).
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import {
  CreateKeyCommand,
  DisableKeyCommand,
  EnableKeyCommand,
  KMSClient,
} from "@aws-sdk/client-kms";

export const MOTO_CREDENTIALS = { accessKeyId: "testing", secretAccessKey: "testing" } as const;

/** The real script behind pyenv's shim, so that signals reach the server itself. */
function findMoto(): string | null {
  if (process.env.KEYHOLE_MOTO_SERVER) return process.env.KEYHOLE_MOTO_SERVER;
  for (const ask of [
    ["pyenv", "which", "moto_server"],
    ["sh", "-c", "command -v moto_server"],
  ] as const) {
    try {
      const out = execFileSync(ask[0], ask.slice(1), {
        encoding: "utf8",
        stdio: ["ignore", "pipe", "ignore"],
      }).trim();
      if (out !== "" && existsSync(out)) return out;
    } catch {
      // try the next way
    }
  }
  return null;
}

const motoPath = findMoto();
/** For describeWith: moto_server (python moto 5, `pip install 'moto[server]'`). */
export const motoServer = {
  name: "moto_server",
  path: motoPath ?? "moto_server",
  available: motoPath !== null,
  missing: "moto_server not found on PATH. Install it with `pip install 'moto[server]'` (moto 5).",
};

export interface MotoRegion {
  url: string;
  port: number;
  /** Creates a symmetric KMS key through the SDK and returns its key id. */
  createKey(region: string): Promise<string>;
  disableKey(region: string, keyId: string): Promise<void>;
  enableKey(region: string, keyId: string): Promise<void>;
  kill(): Promise<void>;
  /** SIGSTOP: connections are accepted by the kernel but nothing answers. */
  pause(): void;
  resume(): void;
  /** Kill and start again on the same port (moto keeps its keys in memory: they are gone). */
  restart(): Promise<void>;
}

const live = new Set<ChildProcess>();

/** Kills every moto_server this process started. Runs by itself after each test file and at exit. */
export function stopAllMoto(): void {
  for (const child of live) killHard(child);
}
process.once("exit", stopAllMoto);

function killHard(child: ChildProcess): void {
  if (child.exitCode !== null || child.signalCode !== null) return;
  try {
    child.kill("SIGCONT");
    child.kill("SIGKILL");
  } catch {
    // already gone
  }
}

/**
 * A loopback port free right now, for a server about to start on it. Chosen at random below the
 * kernel's ephemeral range: a port from bind(0) comes from the range that outgoing connections take
 * their source ports from, and on a busy machine (a test suite, a benchmark) one of them can take it
 * before the server binds it. Falls back to bind(0) where no such range is left.
 */
export async function freePort(): Promise<number> {
  const top = ephemeralRangeStart();
  if (top - LOWEST_CHOSEN_PORT >= 1000) {
    for (let attempt = 0; attempt < 50; attempt++) {
      const port = LOWEST_CHOSEN_PORT + Math.floor(Math.random() * (top - LOWEST_CHOSEN_PORT));
      if ((await listenOnce(port)) !== null) return port;
    }
  }
  const any = await listenOnce(0);
  if (any === null) throw new Error("no free loopback port");
  return any;
}

const LOWEST_CHOSEN_PORT = 10_000;

/** First port of the ephemeral range (Linux: ip_local_port_range; 32768 where it cannot be read). */
export function ephemeralRangeStart(): number {
  try {
    const low = Number(
      readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").split(/\s+/)[0],
    );
    if (Number.isInteger(low) && low > 0) return low;
  } catch {
    // not Linux
  }
  return 32_768;
}

/** Listens on 127.0.0.1:port and closes again; the port bound, or null when it was taken. */
function listenOnce(port: number): Promise<number | null> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(null));
    server.listen(port, "127.0.0.1", () => {
      const address = server.address();
      server.close(() =>
        resolve(typeof address === "object" && address !== null ? address.port : null),
      );
    });
  });
}

async function waitReady(url: string, child: ChildProcess, log: () => string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null)
      throw new Error(`moto_server exited with ${child.exitCode}: ${log()}`);
    try {
      const res = await fetch(`${url}/moto-api/`, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      if (res.status < 500) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`moto_server at ${url} not ready after 20s: ${log()}`);
}

export async function startMoto(): Promise<MotoRegion> {
  if (motoPath === null) throw new Error(motoServer.missing);
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  let child: ChildProcess;
  let output = "";

  const launch = async () => {
    output = "";
    child = spawn(motoPath, ["-H", "127.0.0.1", "-p", String(port)], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, ...fakeAwsEnv() },
    });
    live.add(child);
    const keep = (chunk: Buffer) => {
      output = (output + chunk.toString()).slice(-2000);
    };
    child.stdout?.on("data", keep);
    child.stderr?.on("data", keep);
    const started = child;
    child.once("exit", () => live.delete(started));
    await waitReady(url, child, () => output);
  };
  const kill = async () => {
    const c = child;
    if (c.exitCode !== null || c.signalCode !== null) return;
    const gone = new Promise((r) => c.once("exit", r));
    killHard(c);
    await gone;
  };
  await launch();

  const client = (region: string) =>
    new KMSClient({ region, endpoint: url, credentials: MOTO_CREDENTIALS, maxAttempts: 1 });
  const withClient = async <T>(region: string, f: (c: KMSClient) => Promise<T>): Promise<T> => {
    const c = client(region);
    try {
      return await f(c);
    } finally {
      c.destroy();
    }
  };

  return {
    url,
    port,
    createKey: (region) =>
      withClient(region, async (c) => {
        const out = await c.send(
          new CreateKeyCommand({ Description: "keyhole test CA sealing key" }),
        );
        const id = out.KeyMetadata?.KeyId;
        if (id === undefined) throw new Error("moto CreateKey returned no key id");
        return id;
      }),
    disableKey: (region, keyId) =>
      withClient(region, (c) => c.send(new DisableKeyCommand({ KeyId: keyId })).then(() => {})),
    enableKey: (region, keyId) =>
      withClient(region, (c) => c.send(new EnableKeyCommand({ KeyId: keyId })).then(() => {})),
    kill,
    pause: () => child.kill("SIGSTOP"),
    resume: () => child.kill("SIGCONT"),
    restart: async () => {
      await kill();
      await launch();
    },
  };
}

/** Fake static credentials, so that nothing ever reaches for real ones. */
export function fakeAwsEnv(): Record<string, string> {
  return {
    AWS_ACCESS_KEY_ID: MOTO_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: MOTO_CREDENTIALS.secretAccessKey,
    AWS_SECURITY_TOKEN: "testing",
    AWS_SESSION_TOKEN: "testing",
    AWS_EC2_METADATA_DISABLED: "true",
  };
}
