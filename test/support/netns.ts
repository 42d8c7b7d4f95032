/**
 * Real Nebula tunnels in a test: network namespaces joined by a bridge (the "underlay"), nebula
 * daemons started inside them, and ping across the overlay. Needs root, iproute2 and /dev/net/tun;
 * `netnsCapability` probes for them and follows the rule of test/support/tools.ts (skip loudly
 * locally, fail under CI).
 *
 * Everything a run creates carries one unique prefix and lives in namespaces it created: the bridge
 * sits in its own "switch" namespace, so the root namespace's interfaces are never touched. Underlay
 * addresses come from 10.200.0.0/16 only. `destroy()` (call it from afterAll) kills every process and
 * deletes every namespace; an exit hook does the same if a run dies before afterAll.
 */
import {
  type ChildProcess,
  execFile,
  execFileSync,
  spawn as spawnProcess,
} from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import type { Tool } from "./tools.ts";

const IP = "/usr/sbin/ip";

function probeNetns(): Tool {
  const name = "root + network namespaces";
  const hint =
    "Run the tests as root on Linux with iproute2 and /dev/net/tun (the CI image has them).";
  const fail = (why: string): Tool => ({
    name,
    path: IP,
    available: false,
    missing: `${why}. ${hint}`,
  });
  if (process.platform !== "linux") return fail("not Linux");
  if (process.getuid?.() !== 0) return fail("not running as root");
  if (!existsSync(IP)) return fail(`${IP} not found`);
  if (!existsSync("/dev/net/tun")) return fail("/dev/net/tun does not exist");
  const probe = `khprobe-${process.pid}-${randomBytes(3).toString("hex")}`;
  try {
    execFileSync(IP, ["netns", "add", probe], { stdio: "pipe" });
    execFileSync(IP, ["netns", "del", probe], { stdio: "pipe" });
  } catch (e) {
    return fail(`\`ip netns add\` failed: ${(e as Error).message.split("\n")[0]}`);
  }
  return { name, path: IP, available: true, missing: "" };
}

/** Pass to `describeWith` for tests that create namespaces. */
export const netnsCapability: Tool = probeNetns();

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface NetnsHost {
  /** Short name given to addHost ("lighthouse", "a"). */
  name: string;
  /** Network namespace name (`ip netns exec <ns>`). */
  ns: string;
  /** The host's address on the underlay bridge, without prefix. */
  underlayIp: string;
  /** Run a command inside the namespace to completion; never throws for a non-zero exit. */
  exec(cmd: string, args: string[], opts?: { timeoutMs?: number }): Promise<ExecResult>;
  /** Start a long-running command inside the namespace; killed by `Underlay.destroy()`. */
  spawn(cmd: string, args: string[]): ChildProcess;
}

export interface Underlay {
  prefix: string;
  /** e.g. "10.200.0.0/24". */
  subnet: string;
  hosts: NetnsHost[];
  addHost(name: string): Promise<NetnsHost>;
  /** Kill every process started in the namespaces and delete them. Safe to call twice. */
  destroy(): Promise<void>;
}

function run(cmd: string, args: string[], timeoutMs = 15_000): Promise<ExecResult> {
  return new Promise((resolve) => {
    execFile(
      cmd,
      args,
      { timeout: timeoutMs, encoding: "utf8", maxBuffer: 8 << 20 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
        resolve({ code, stdout, stderr: err && !stderr ? err.message : stderr });
      },
    );
  });
}

async function must(args: string[]): Promise<string> {
  const r = await run(IP, args);
  if (r.code !== 0) throw new Error(`ip ${args.join(" ")} failed (${r.code}): ${r.stderr.trim()}`);
  return r.stdout;
}

/** A prefix no other run uses: "kh<tag><6 hex>". Namespace names are "<prefix>-<host>". */
export function uniquePrefix(tag = ""): string {
  return `kh${tag}${randomBytes(3).toString("hex")}`;
}

const live = new Set<{ namespaces: string[]; processes: Set<ChildProcess> }>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const state of live) {
      for (const p of state.processes) if (p.exitCode === null) p.kill("SIGKILL");
      for (const ns of state.namespaces) {
        try {
          execFileSync(IP, ["netns", "del", ns], { stdio: "ignore" });
        } catch {
          // already gone
        }
      }
    }
  });
}

/**
 * Make an underlay: a switch namespace holding a bridge; each `addHost` adds a namespace with a veth
 * into the bridge and the next address of `10.200.<octet>.0/24` (octet 0 unless given, 0..255).
 */
export async function createUnderlay(
  prefix: string,
  opts: { octet?: number } = {},
): Promise<Underlay> {
  if (!/^[a-z0-9]{2,16}$/.test(prefix))
    throw new Error(`underlay prefix must be 2-16 of [a-z0-9], got ${prefix}`);
  const octet = opts.octet ?? 0;
  if (!Number.isInteger(octet) || octet < 0 || octet > 255) throw new Error("octet must be 0..255");
  installExitHook();
  const state = { namespaces: [] as string[], processes: new Set<ChildProcess>() };
  live.add(state);

  const sw = `${prefix}-sw`;
  await must(["netns", "add", sw]);
  state.namespaces.push(sw);
  await must(["-n", sw, "link", "add", "br0", "type", "bridge"]);
  await must(["-n", sw, "link", "set", "br0", "up"]);

  const hosts: NetnsHost[] = [];
  let destroyed = false;

  const addHost = async (name: string): Promise<NetnsHost> => {
    if (!/^[a-z0-9]{1,12}$/.test(name))
      throw new Error(`host name must be 1-12 of [a-z0-9], got ${name}`);
    if (hosts.length >= 200) throw new Error("an underlay holds at most 200 hosts");
    const ns = `${prefix}-${name}`;
    const index = hosts.length + 1;
    const underlayIp = `10.200.${octet}.${index + 10}`;
    await must(["netns", "add", ns]);
    state.namespaces.push(ns);
    const port = `p${index}`;
    await must([
      "-n",
      sw,
      "link",
      "add",
      port,
      "type",
      "veth",
      "peer",
      "name",
      "eth0",
      "netns",
      ns,
    ]);
    await must(["-n", sw, "link", "set", port, "master", "br0", "up"]);
    await must(["-n", ns, "addr", "add", `${underlayIp}/24`, "dev", "eth0"]);
    await must(["-n", ns, "link", "set", "eth0", "up"]);
    await must(["-n", ns, "link", "set", "lo", "up"]);
    // The tun device gets an IPv6 overlay address only when IPv6 is on in the namespace.
    await run(IP, ["netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=0"]);
    const host: NetnsHost = {
      name,
      ns,
      underlayIp,
      exec: (cmd, args, o) => run(IP, ["netns", "exec", ns, cmd, ...args], o?.timeoutMs),
      spawn: (cmd, args) => {
        const child = spawnProcess(IP, ["netns", "exec", ns, cmd, ...args], {
          stdio: ["ignore", "pipe", "pipe"],
        });
        state.processes.add(child);
        child.on("exit", () => state.processes.delete(child));
        return child;
      },
    };
    hosts.push(host);
    return host;
  };

  const destroy = async (): Promise<void> => {
    if (destroyed) return;
    destroyed = true;
    await Promise.all([...state.processes].map((p) => stopProcess(p)));
    for (const ns of state.namespaces.reverse()) await run(IP, ["netns", "del", ns]);
    state.namespaces.length = 0;
    live.delete(state);
  };

  return { prefix, subnet: `10.200.${octet}.0/24`, hosts, addHost, destroy };
}

function stopProcess(p: ChildProcess, graceMs = 3000): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => p.kill("SIGKILL"), graceMs);
    p.once("exit", () => {
      clearTimeout(timer);
      resolve();
    });
    p.kill("SIGTERM");
  });
}

export interface NebulaProcess {
  host: NetnsHost;
  pid: number;
  tunDev: string;
  /** Everything nebula printed so far (it logs on stderr). */
  logs(): string;
  /** Resolves once the tun device is up with an address; rejects (with the logs) if nebula exits. */
  waitForTun(timeoutMs?: number): Promise<void>;
  /** Resolves when the log matches; rejects on timeout or exit. */
  waitForLog(pattern: RegExp, timeoutMs?: number): Promise<void>;
  /** Ask nebula to reload its config (what the enrollment script does after a renewal). */
  sighup(): void;
  stop(): Promise<void>;
}

/** Start `binary -config configPath` inside the host's namespace. */
export function startNebula(
  host: NetnsHost,
  opts: { binary: string; configPath: string; tunDev?: string },
): NebulaProcess {
  const tunDev = opts.tunDev ?? tunDevOf(opts.configPath);
  const child = host.spawn(opts.binary, ["-config", opts.configPath]);
  let output = "";
  child.stdout?.on("data", (d: Buffer) => {
    output += d.toString("utf8");
  });
  child.stderr?.on("data", (d: Buffer) => {
    output += d.toString("utf8");
  });
  const exited = () => child.exitCode !== null || child.signalCode !== null;
  const died = () =>
    new Error(
      `nebula in ${host.ns} exited (${child.exitCode ?? child.signalCode}); its log:\n${output.slice(-4000)}`,
    );

  const poll = async (ready: () => Promise<boolean>, what: string, timeoutMs: number) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (await ready()) return;
      if (exited()) throw died();
      if (Date.now() > deadline)
        throw new Error(
          `${what} in ${host.ns} after ${timeoutMs} ms; log:\n${output.slice(-4000)}`,
        );
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  return {
    host,
    pid: child.pid ?? -1,
    tunDev,
    logs: () => output,
    waitForTun: (timeoutMs = 10_000) =>
      poll(
        async () => {
          const r = await run(IP, ["-n", host.ns, "-o", "addr", "show", "dev", tunDev]);
          return (
            r.code === 0 &&
            / inet /.test(r.stdout) &&
            / state (UP|UNKNOWN) /.test((await linkState()).stdout)
          );
        },
        `no tun ${tunDev}`,
        timeoutMs,
      ),
    waitForLog: (pattern, timeoutMs = 10_000) =>
      poll(async () => pattern.test(output), `no log line matching ${pattern}`, timeoutMs),
    sighup: () => {
      if (!exited()) child.kill("SIGHUP");
    },
    stop: () => stopProcess(child),
  };

  function linkState() {
    return run(IP, ["-n", host.ns, "-o", "link", "show", "dev", tunDev]);
  }
}

function tunDevOf(configPath: string): string {
  const m = /^tun:\s*\n(?:[ \t]+.*\n)*?[ \t]+dev:\s*"?([A-Za-z0-9_.-]+)"?/m.exec(
    readFileSync(configPath, "utf8"),
  );
  return m?.[1] ?? "nebula1";
}

export interface PingResult {
  transmitted: number;
  received: number;
  output: string;
}

/** `ping` (or `ping -6` for an IPv6 address) from inside a host's namespace. */
export async function ping(
  from: NetnsHost,
  overlayIp: string,
  opts: { count?: number; timeoutSec?: number } = {},
): Promise<PingResult> {
  const count = opts.count ?? 1;
  const timeoutSec = opts.timeoutSec ?? 1;
  const args = [
    ...(overlayIp.includes(":") ? ["-6"] : []),
    "-n",
    "-c",
    String(count),
    "-W",
    String(timeoutSec),
  ];
  args.push("-w", String(count * timeoutSec + 1), overlayIp);
  const r = await from.exec("ping", args, { timeoutMs: (count * timeoutSec + 5) * 1000 });
  const m = /(\d+) packets transmitted, (\d+) received/.exec(r.stdout);
  return {
    transmitted: Number(m?.[1] ?? 0),
    received: Number(m?.[2] ?? 0),
    output: r.stdout + r.stderr,
  };
}

/** Ping once a time until a reply comes back (the first packets wait for the handshake). */
export async function waitForPing(
  from: NetnsHost,
  overlayIp: string,
  timeoutMs = 10_000,
): Promise<PingResult> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await ping(from, overlayIp, { count: 1, timeoutSec: 1 });
    if (r.received > 0) return r;
    if (Date.now() > deadline) {
      throw new Error(
        `no ping reply from ${overlayIp} in ${from.ns} within ${timeoutMs} ms:\n${r.output}`,
      );
    }
  }
}

/**
 * `count` pings `intervalSec` apart (root may go below 0.2 s), each waiting at most `timeoutSec`:
 * a steady stream that shows whether a tunnel kept carrying traffic while something changed under it.
 */
export async function pingSteadily(
  from: NetnsHost,
  overlayIp: string,
  opts: { count: number; intervalSec: number; timeoutSec?: number },
): Promise<PingResult> {
  const timeoutSec = opts.timeoutSec ?? 1;
  const deadlineSec = Math.ceil(opts.count * opts.intervalSec + timeoutSec + 1);
  const args = [
    ...(overlayIp.includes(":") ? ["-6"] : []),
    "-n",
    "-c",
    String(opts.count),
    "-i",
    String(opts.intervalSec),
    "-W",
    String(timeoutSec),
    "-w",
    String(deadlineSec),
    overlayIp,
  ];
  const r = await from.exec("ping", args, { timeoutMs: (deadlineSec + 5) * 1000 });
  const m = /(\d+) packets transmitted, (\d+) received/.exec(r.stdout);
  return {
    transmitted: Number(m?.[1] ?? 0),
    received: Number(m?.[2] ?? 0),
    output: r.stdout + r.stderr,
  };
}
