/**
 * The `keyhole` CLI against the real local stack (edge in workerd, Bun signer over mTLS, local
 * custody, libSQL, dev issuer), each command run as a subprocess the way a person types it:
 * dev token, network create/list/show/rotate-ca, host add/list/show/block, sign, enroll, audit
 * list/verify; errors exit non-zero with the code and what to do next.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../cli/dev/moto.ts";
import { configFromHints } from "../cli/nebula-config.ts";
import { type RunningStack, startStack } from "../cli/stack.ts";
import { stackPaths } from "../cli/stack-state.ts";
import {
  CaPool,
  generateHostKeyPair,
  parseCertificatesPem,
  publicKeyToPem,
} from "../core/cert/index.ts";
import type { HostView, NetworkView, RegisterHostResponse } from "../core/contract/index.ts";
import { IN_CI, nebula111, REPO_ROOT } from "./support/tools.ts";

const run = promisify(execFile);

interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

let dir = "";
let stack: RunningStack;
let env: Record<string, string> = {};

async function keyhole(args: string[], extra: Record<string, string> = {}): Promise<CliRun> {
  try {
    const r = await run("node", [join(REPO_ROOT, "bin/keyhole.mjs"), ...args], {
      cwd: REPO_ROOT,
      env: { ...process.env, ...env, ...extra },
      timeout: 60_000,
    });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    return {
      code: typeof err.code === "number" ? err.code : 1,
      stdout: err.stdout ?? "",
      stderr: err.stderr ?? "",
    };
  }
}

async function json<T>(args: string[], extra: Record<string, string> = {}): Promise<T> {
  const r = await keyhole([...args, "--json"], extra);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as T;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "keyhole-cli-"));
  const paths = stackPaths(join(dir, "data"));
  stack = await startStack({
    paths,
    edgePort: await freePort(),
    signerPort: await freePort(),
    issuerPort: await freePort(),
    env: {
      ...process.env,
      KEYHOLE_RATE_ADDRESS: "1000/60",
      KEYHOLE_RATE_SUBJECT: "1000/60",
      KEYHOLE_RATE_NETWORK: "1000/60",
    },
    echoSignerLogs: false,
    log: () => {},
  });
  env = { KEYHOLE_DATA_DIR: paths.dir, KEYHOLE_API: stack.api };
  const token = await keyhole(["dev", "token", "--mfa", "--org", "cli-org"]);
  expect(token.code, token.stderr).toBe(0);
  env.KEYHOLE_TOKEN = token.stdout.trim();
}, 180_000);

afterAll(async () => {
  await stack?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("keyhole CLI against the local stack", () => {
  let network: NetworkView;

  it("dev token mints a JWT of the running dev issuer with the asked claims", async () => {
    const payload = JSON.parse(
      Buffer.from(env.KEYHOLE_TOKEN?.split(".")[1] ?? "", "base64url").toString(),
    );
    expect(payload).toMatchObject({
      iss: stack.issuer.issuer,
      org: "cli-org",
      amr: ["pwd", "mfa"],
    });
    expect(payload.scope.split(" ")).toContain("networks:write");
  });

  it("creates, lists, shows and rotates a network", async () => {
    network = await json<NetworkView>([
      "network",
      "create",
      "--name",
      "lab",
      "--cidrs",
      "10.66.0.0/24,fd66::/64",
    ]);
    expect(network).toMatchObject({
      name: "lab",
      cidrs: ["10.66.0.0/24", "fd66::/64"],
      certVersion: 2,
      curve: "25519",
    });
    const human = await keyhole(["network", "list"]);
    expect(human.stdout).toMatch(
      new RegExp(`${network.id}\\s+lab\\s+10\\.66\\.0\\.0/24,fd66::/64`),
    );
    const shown = await keyhole(["network", "show", network.id]);
    expect(shown.stdout).toContain("BEGIN NEBULA CERTIFICATE V2");
    const rotated = await json<NetworkView>(["network", "rotate-ca", network.id]);
    expect(rotated.cas.map((c) => c.state).sort()).toEqual(["active", "previous"]);
    network = rotated;
  });

  it("adds hosts, enrolls one with `keyhole enroll` (key made locally), lists, shows and blocks", async () => {
    const lh = await json<RegisterHostResponse>([
      "host",
      "add",
      "--network",
      network.id,
      "--name",
      "lh",
      "--lighthouse",
      "--static-addrs",
      "192.0.2.7:4242",
    ]);
    const added = await json<RegisterHostResponse>([
      "host",
      "add",
      "--network",
      network.id,
      "--name",
      "laptop",
      "--groups",
      "dev",
    ]);
    expect(added.host.ips).toEqual(["10.66.0.2/24", "fd66::2/64"]);
    const hostDir = join(dir, "laptop");
    const enrolled = await keyhole(["enroll", "--dir", hostDir], {
      KEYHOLE_ENROLL_CODE: added.enrollmentCode,
    });
    expect(enrolled.code, enrolled.stderr).toBe(0);
    expect(enrolled.stdout).toMatch(/enrolled host host_\w+ in network lab/);
    expect(enrolled.stdout + enrolled.stderr).not.toContain(added.enrollmentCode);
    expect(statSync(join(hostDir, "host.key")).mode & 0o777).toBe(0o600);
    expect(statSync(join(hostDir, "host.token")).mode & 0o777).toBe(0o600);
    const [cert] = parseCertificatesPem(readFileSync(join(hostDir, "host.crt"), "utf8"));
    expect(cert?.networks).toEqual(["10.66.0.2/24", "fd66::2/64"]);
    const pool = CaPool.fromPem(readFileSync(join(hostDir, "ca.crt"), "utf8"));
    expect(pool.list()).toHaveLength(2);
    await pool.verify(cert as NonNullable<typeof cert>);
    const expected = configFromHints(
      {
        isLighthouse: false,
        listenPort: 4242,
        lighthouses: [{ ip: lh.host.ip, staticAddrs: ["192.0.2.7:4242"] }],
        staticHostMap: { [lh.host.ip.split("/")[0] as string]: ["192.0.2.7:4242"] },
        blocklist: [],
        network: { cidrs: network.cidrs },
      },
      {
        caPath: join(hostDir, "ca.crt"),
        certPath: join(hostDir, "host.crt"),
        keyPath: join(hostDir, "host.key"),
      },
    );
    expect(readFileSync(join(hostDir, "config.yml"), "utf8")).toBe(expected);
    if (nebula111.available || IN_CI) {
      const t = await run(nebula111.path, ["-test", "-config", join(hostDir, "config.yml")]).then(
        () => 0,
        (e: { code?: number }) => e.code ?? 1,
      );
      expect(t).toBe(0);
    }

    const again = await keyhole(["enroll", "--dir", join(dir, "again")], {
      KEYHOLE_ENROLL_CODE: added.enrollmentCode,
    });
    expect(again.code).not.toBe(0);
    expect(again.stderr).toMatch(
      /invalid_enrollment_code: .*\n\s+next: ask an admin for a new code/,
    );
    const twice = await keyhole(["enroll", "--dir", hostDir], {
      KEYHOLE_ENROLL_CODE: lh.enrollmentCode,
    });
    expect(twice.code).not.toBe(0);
    expect(twice.stderr).toMatch(/host\.key exists/);

    const listed = await json<{ hosts: HostView[] }>(["host", "list", "--network", network.id]);
    expect(listed.hosts.map((h) => [h.name, h.state])).toEqual([
      ["lh", "pending"],
      ["laptop", "enrolled"],
    ]);
    const shown = await keyhole(["host", "show", added.host.id]);
    expect(shown.stdout).toContain(`certificate ${cert?.fingerprint}`);
    const blocked = await json<HostView>(["host", "block", added.host.id]);
    expect(blocked.state).toBe("blocked");
    expect(blocked.certificates.every((c) => c.revoked)).toBe(true);
  });

  it("signs a public key directly, and refuses an address outside the network with its code", async () => {
    const keys = await generateHostKeyPair("CURVE25519");
    const pub = join(dir, "direct.pub");
    writeFileSync(pub, publicKeyToPem("CURVE25519", keys.publicKey));
    const r = await keyhole([
      "sign",
      "--network",
      network.id,
      "--in-pub",
      pub,
      "--name",
      "ci-runner",
      "--networks",
      "10.66.0.200/24",
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(parseCertificatesPem(r.stdout)[0]?.name).toBe("ci-runner");
    const outside = await keyhole([
      "sign",
      "--network",
      network.id,
      "--in-pub",
      pub,
      "--name",
      "x",
      "--networks",
      "10.99.0.1/24",
    ]);
    expect(outside.code).not.toBe(0);
    expect(outside.stderr).toMatch(/keyhole: ip_outside_network: .*\(trace [0-9a-f]{32}\)/);
  });

  it("lists the audit log and verifies its chain", async () => {
    const rows = await json<{ rows: { action: string }[] }>([
      "audit",
      "list",
      "--network",
      network.id,
    ]);
    const actions = new Set(rows.rows.map((r) => r.action));
    for (const a of ["ca.create", "host.register", "host.block"]) expect(actions).toContain(a);
    const verified = await keyhole(["audit", "verify"]);
    expect(verified.code, verified.stderr).toBe(0);
    expect(verified.stdout).toMatch(/audit chain intact: \d+ rows verified/);
  });

  it("says what to do next without a token, and when the API is unreachable", async () => {
    const noToken = await keyhole(["network", "list"], { KEYHOLE_TOKEN: "" });
    expect(noToken.code).not.toBe(0);
    expect(noToken.stderr).toMatch(/unauthenticated: .*\n\s+next: set KEYHOLE_TOKEN/);
    const down = await keyhole(["network", "list", "--api", "http://127.0.0.1:9"]);
    expect(down.code).toBe(3);
    expect(down.stderr).toMatch(
      /cannot reach the Keyhole API at http:\/\/127\.0\.0\.1:9 .*npm start/,
    );
    const usage = await keyhole(["host", "add"]);
    expect(usage.code).not.toBe(0);
    expect(usage.stderr).toMatch(/usage: keyhole host add --network/);
  });
});
