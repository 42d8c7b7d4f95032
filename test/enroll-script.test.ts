/**
 * scripts/keyhole-enroll.sh under dash and sh, against an issuer that signs with the real
 * nebula-cert 1.11 (`nebula-cert sign -in-pub`) behind node:http on 127.0.0.1: it speaks the
 * /v1/enroll, /v1/renew and /v1/networks/{id}/blocklist routes with Keyhole's wire shapes
 * (core/contract), so the script's key generation (nebula-cert and the openssl fallback, both curves),
 * JSON reading, file writing and config.yml are proven with real certificates, and real nebula
 * (1.11 and 1.6.1) judges the result with `nebula -test`. The end-to-end test against the real stack
 * lives elsewhere; this one does not need it.
 */
import { execFile, execFileSync, spawn } from "node:child_process";
import { createECDH, createPrivateKey, createPublicKey, randomBytes } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, expect, it, onTestFinished } from "vitest";
import type {
  BlocklistResponse,
  IssuedCertificate,
  NebulaConfigHints,
} from "../core/contract/api.ts";
import { type ErrorCode, errorBody, statusOf } from "../core/contract/errors.ts";
import { nebulaConfigYaml } from "./support/nebula-config.ts";
import {
  createUnderlay,
  type NebulaProcess,
  type NetnsHost,
  netnsCapability,
  ping,
  startNebula,
  type Underlay,
  uniquePrefix,
  waitForPing,
} from "./support/netns.ts";
import {
  describeWith,
  nebula16,
  nebula111,
  nebulaCert111,
  REPO_ROOT,
  type Tool,
} from "./support/tools.ts";

const SCRIPT = resolve(REPO_ROOT, "scripts/keyhole-enroll.sh");

// ---- the issuer: real nebula-cert 1.11 behind node:http ----

interface IssuerNetwork {
  id: string;
  name: string;
  cidrs: string[];
  version: 1 | 2;
  curve: "25519" | "P256";
  caCrt: string;
  caKey: string;
  blocklist: string[];
  lighthouses: NebulaConfigHints["lighthouses"];
  staticHostMap: Record<string, string[]>;
}

interface IssuerHost {
  id: string;
  network: IssuerNetwork;
  name: string;
  networks: string[];
  lighthouse: boolean;
  publicKey: string;
  token: string;
  spentTokens: Set<string>;
  fingerprints: string[];
}

interface SeenRequest {
  method: string;
  url: string;
  headers: IncomingMessage["headers"];
  body: string;
  /** What the issuer answered. */
  response?: string;
}

interface Reply {
  status: number;
  value: unknown;
}

const ok = (value: unknown): Reply => ({ status: 200, value });

/**
 * Valid JSON that a careless reader gets wrong: unknown nested fields of every type before the real
 * ones, indentation and newlines, "\/" escapes inside the PEM, and \u escapes (with a surrogate pair).
 */
function hostileJson(value: unknown): string {
  const noise = {
    'x-"noise"\\': [
      1,
      -2.5e3,
      0.25,
      true,
      false,
      null,
      { nested: [[], {}], "ünïcode ✓ 🚀": "tab\there" },
    ],
  };
  const text = JSON.stringify(
    typeof value === "object" && value !== null ? { ...noise, ...value } : value,
    null,
    2,
  );
  return text
    .replace(/\//g, "\\/")
    .replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

class NebulaCertIssuer {
  readonly dir: string;
  readonly networks = new Map<string, IssuerNetwork>();
  readonly codes = new Map<
    string,
    { network: IssuerNetwork; name: string; networks: string[]; lighthouse: boolean }
  >();
  /** "hostile": pretty-printed, every "/" and non-ASCII character escaped, unknown fields first. */
  encoding: "compact" | "hostile" = "compact";
  /** Answer the next successful request with a truncated body (a broken proxy, say). */
  truncateNext = false;
  /** Refuse blocklist reads with 503 storage_unavailable. */
  blocklistDown = false;
  readonly hosts: IssuerHost[] = [];
  readonly seen: SeenRequest[] = [];
  readonly nebulaCert: string;
  private issued = 0;
  private server: Server | undefined;
  url = "";

  constructor(nebulaCert: string, dir: string) {
    this.nebulaCert = nebulaCert;
    this.dir = dir;
  }

  addNetwork(n: Omit<IssuerNetwork, "caCrt" | "caKey" | "blocklist">): IssuerNetwork {
    const caCrt = join(this.dir, `${n.id}.ca.crt`);
    const caKey = join(this.dir, `${n.id}.ca.key`);
    const args = [
      "ca",
      "-name",
      n.name,
      "-version",
      String(n.version),
      "-out-crt",
      caCrt,
      "-out-key",
      caKey,
    ];
    if (n.curve === "P256") args.push("-curve", "P256");
    execFileSync(this.nebulaCert, args);
    const network = { ...n, caCrt, caKey, blocklist: [] };
    this.networks.set(n.id, network);
    return network;
  }

  /** Register a host; returns its one-time enrollment code. */
  addCode(network: IssuerNetwork, name: string, networks: string[], lighthouse = false): string {
    const code = randomBytes(18).toString("base64url");
    this.codes.set(code, { network, name, networks, lighthouse });
    return code;
  }

  /** Listen on 127.0.0.1, over TLS when given a key and certificate (PEM). */
  async start(tls?: { key: string; cert: string }): Promise<void> {
    const handler = (req: IncomingMessage, res: ServerResponse) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const body = Buffer.concat(chunks).toString("utf8");
        this.seen.push({
          method: req.method ?? "",
          url: req.url ?? "",
          headers: req.headers,
          body,
        });
        const traceId = randomBytes(16).toString("hex");
        res.setHeader("x-request-id", traceId);
        let reply: Reply;
        try {
          reply = this.route(req, body, traceId);
        } catch (e) {
          reply = this.fail(traceId, "internal", (e as Error).message.split("\n")[0] ?? "error");
        }
        let json =
          this.encoding === "hostile" ? hostileJson(reply.value) : JSON.stringify(reply.value);
        if (this.truncateNext && reply.status === 200) {
          this.truncateNext = false;
          json = json.slice(0, Math.floor(json.length / 2));
        }
        const seen = this.seen.at(-1);
        if (seen) seen.response = json;
        res.writeHead(reply.status, { "content-type": "application/json" });
        res.end(json);
      });
    };
    const server = tls ? createHttpsServer(tls, handler) : createServer(handler);
    this.server = server;
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as AddressInfo).port;
    this.url = `${tls ? "https" : "http"}://127.0.0.1:${port}`;
  }

  async stop(): Promise<void> {
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }

  /** The wire shape of an error, produced by core/contract like the real edge and signer do. */
  private fail(traceId: string, code: ErrorCode, message: string): Reply {
    return { status: statusOf(code), value: errorBody(code, message, traceId) };
  }

  private hostByToken(req: IncomingMessage): IssuerHost | { error: ErrorCode } {
    const m = /^Bearer (\S+)$/.exec(req.headers.authorization ?? "");
    if (!m) return { error: "unauthenticated" };
    const token = m[1] as string;
    const current = this.hosts.find((h) => h.token === token);
    if (current) return current;
    if (this.hosts.some((h) => h.spentTokens.has(token))) return { error: "host_token_reused" };
    return { error: "invalid_host_token" };
  }

  private route(req: IncomingMessage, body: string, traceId: string): Reply {
    const url = req.url ?? "";
    if (req.method === "POST" && url === "/v1/enroll") {
      let parsed: { code?: unknown; publicKey?: unknown };
      try {
        parsed = JSON.parse(body);
      } catch {
        return this.fail(traceId, "invalid_json", "body is not JSON");
      }
      const entry = typeof parsed.code === "string" ? this.codes.get(parsed.code) : undefined;
      if (!entry)
        return this.fail(
          traceId,
          "invalid_enrollment_code",
          "enrollment code unknown, used or expired",
        );
      if (typeof parsed.publicKey !== "string")
        return this.fail(traceId, "invalid_public_key", "no publicKey");
      this.codes.delete(parsed.code as string);
      const host: IssuerHost = {
        id: `host-${this.hosts.length + 1}`,
        network: entry.network,
        name: entry.name,
        networks: entry.networks,
        lighthouse: entry.lighthouse,
        publicKey: parsed.publicKey,
        token: "",
        spentTokens: new Set(),
        fingerprints: [],
      };
      const issued = this.issue(host);
      if ("error" in issued) return this.fail(traceId, "invalid_public_key", issued.error);
      this.hosts.push(host);
      return ok(issued);
    }
    if (req.method === "POST" && url === "/v1/renew") {
      const host = this.hostByToken(req);
      if ("error" in host) return this.fail(traceId, host.error, "host token refused");
      const parsed = JSON.parse(body) as { publicKey?: string };
      if (parsed.publicKey !== undefined) host.publicKey = parsed.publicKey;
      host.spentTokens.add(host.token);
      const issued = this.issue(host);
      if ("error" in issued) return this.fail(traceId, "invalid_public_key", issued.error);
      return ok(issued);
    }
    const bl = /^\/v1\/networks\/([^/]+)\/blocklist$/.exec(url);
    if (req.method === "GET" && bl) {
      const host = this.hostByToken(req);
      if ("error" in host) return this.fail(traceId, host.error, "host token refused");
      if (host.network.id !== bl[1]) return this.fail(traceId, "forbidden", "another network");
      if (this.blocklistDown)
        return this.fail(traceId, "storage_unavailable", "database unreachable");
      const out: BlocklistResponse = {
        networkId: host.network.id,
        fingerprints: host.network.blocklist,
        caBundle: readFileSync(host.network.caCrt, "utf8"),
      };
      return ok(out);
    }
    return this.fail(traceId, "not_found", `no route ${req.method} ${url}`);
  }

  /** Sign the host's public key with the real nebula-cert; a new host token every time. */
  private issue(host: IssuerHost): IssuedCertificate | { error: string } {
    const work = mkdtempSync(join(this.dir, "sign-"));
    try {
      writeFileSync(join(work, "host.pub"), host.publicKey);
      const n = host.network;
      const flags =
        n.version === 2 ? ["-networks", host.networks.join(",")] : ["-ip", host.networks.join(",")];
      try {
        // A lifetime distinct per issuance: two renewals in one second still get different certificates.
        const duration = `${3600 + this.issued++}s`;
        const args = [
          "sign",
          "-version",
          String(n.version),
          "-name",
          host.name,
          ...flags,
          "-duration",
          duration,
        ];
        args.push("-ca-crt", n.caCrt, "-ca-key", n.caKey, "-in-pub", join(work, "host.pub"));
        execFileSync(this.nebulaCert, [...args, "-out-crt", join(work, "host.crt")], {
          stdio: "pipe",
        });
      } catch (e) {
        return {
          error: `nebula-cert refused the public key: ${String((e as { stderr?: Buffer }).stderr ?? "")}`,
        };
      }
      const certificate = readFileSync(join(work, "host.crt"), "utf8");
      const printed = JSON.parse(
        execFileSync(this.nebulaCert, ["print", "-json", "-path", join(work, "host.crt")], {
          encoding: "utf8",
        }),
      );
      const details = (Array.isArray(printed) ? printed[0] : printed) as {
        fingerprint: string;
        details: { notAfter: string };
      };
      host.token = randomBytes(24).toString("base64url");
      host.fingerprints.push(details.fingerprint);
      return {
        hostId: host.id,
        certificate,
        fingerprint: details.fingerprint,
        notAfter: details.details.notAfter,
        caBundle: readFileSync(n.caCrt, "utf8"),
        hostToken: host.token,
        config: {
          network: { id: n.id, name: n.name, cidrs: n.cidrs },
          isLighthouse: host.lighthouse,
          listenPort: 4242,
          lighthouses: n.lighthouses,
          staticHostMap: n.staticHostMap,
          blocklist: n.blocklist,
        },
      };
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  }
}

// ---- running the script ----

interface ScriptRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** The only commands the script may need besides the shell's builtins (nebula-cert excluded). */
const BARE_HOST_TOOLS = [
  "awk",
  "cat",
  "chmod",
  "cp",
  "curl",
  "cut",
  "dd",
  "grep",
  "head",
  "mkdir",
  "mv",
  "od",
  "openssl",
  "rm",
  "sed",
  "tail",
  "tr",
  "wc",
];

function runScript(
  shell: "dash" | "sh",
  args: string[],
  opts: { env?: Record<string, string>; path?: string } = {},
): Promise<ScriptRun> {
  const env: Record<string, string> = {
    PATH: opts.path ?? (process.env.PATH as string),
    HOME: tmpdir(),
    ...opts.env,
  };
  return new Promise((resolveRun) => {
    execFile(
      `/bin/${shell}`,
      [SCRIPT, ...args],
      { env, encoding: "utf8", timeout: 60_000 },
      (err, stdout, stderr) => {
        resolveRun({
          code: err ? (typeof err.code === "number" ? err.code : -1) : 0,
          stdout,
          stderr,
        });
      },
    );
  });
}

function mode(path: string): number {
  return statSync(path).mode & 0o777;
}

/** The raw key bytes inside a Nebula PEM file. */
function pemBytes(pem: string, banner: string): Buffer {
  const m = new RegExp(
    `-----BEGIN ${banner}-----\\n([A-Za-z0-9+/=\\n]+)-----END ${banner}-----`,
  ).exec(pem);
  if (!m) throw new Error(`no ${banner} block`);
  return Buffer.from((m[1] as string).replace(/\n/g, ""), "base64");
}

/** Public key derived from a private key by node:crypto, independently of the script and nebula-cert. */
function publicFromPrivate(curve: "25519" | "P256", priv: Buffer): Buffer {
  if (curve === "P256") {
    const ecdh = createECDH("prime256v1");
    ecdh.setPrivateKey(priv);
    return ecdh.getPublicKey();
  }
  const pkcs8 = Buffer.concat([Buffer.from("302e020100300506032b656e04220420", "hex"), priv]);
  const pub = createPublicKey(createPrivateKey({ key: pkcs8, format: "der", type: "pkcs8" }));
  return pub.export({ format: "der", type: "spki" }).subarray(-32);
}

function nebulaTest(binary: string, configPath: string): { code: number; output: string } {
  try {
    const out = execFileSync(binary, ["-test", "-config", configPath], {
      encoding: "utf8",
      stdio: "pipe",
    });
    return { code: 0, output: out };
  } catch (e) {
    const err = e as { status?: number; stdout?: string; stderr?: string };
    return { code: err.status ?? -1, output: `${err.stdout ?? ""}${err.stderr ?? ""}` };
  }
}

describeWith(
  [nebulaCert111, nebula111, nebula16],
  "keyhole-enroll.sh against a real nebula-cert issuer",
  () => {
    let dir = "";
    let bareBin = "";
    let issuer: NebulaCertIssuer;
    let x25519v2: IssuerNetwork;
    let p256v2: IssuerNetwork;
    let x25519v1: IssuerNetwork;
    const secretsSeen: string[] = [];
    const outputs: ScriptRun[] = [];

    const run = async (
      shell: "dash" | "sh",
      args: string[],
      opts: { env?: Record<string, string>; path?: string } = {},
    ) => {
      const r = await runScript(shell, args, opts);
      outputs.push(r);
      return r;
    };

    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), "keyhole-enroll-"));
      // A PATH with the usual tools of a bare host and no nebula-cert: the openssl fallback runs.
      bareBin = join(dir, "bare-bin");
      mkdirSync(bareBin);
      for (const tool of BARE_HOST_TOOLS) {
        symlinkSync(
          execFileSync("/bin/sh", ["-c", `command -v ${tool}`], { encoding: "utf8" }).trim(),
          join(bareBin, tool),
        );
      }
      issuer = new NebulaCertIssuer(nebulaCert111.path, mkdtempSync(join(dir, "issuer-")));
      const lighthouses = [
        { ip: "10.50.0.1/16", staticAddrs: ["10.200.9.1:4242"] },
        { ip: "10.50.0.2/16", staticAddrs: ["10.200.9.2:4242", "[fd00:200::2]:4242"] },
      ];
      x25519v2 = issuer.addNetwork({
        id: "net-x25519-v2",
        name: "x25519 v2",
        cidrs: ["10.50.0.0/16", "fd50::/64"],
        version: 2,
        curve: "25519",
        lighthouses,
        staticHostMap: { "10.50.0.1": ["10.200.9.1:4242"] },
      });
      p256v2 = issuer.addNetwork({
        id: "net-p256-v2",
        name: "p256 v2",
        cidrs: ["10.51.0.0/16"],
        version: 2,
        curve: "P256",
        lighthouses: [{ ip: "10.51.0.1/16", staticAddrs: ["10.200.9.3:4242"] }],
        staticHostMap: {},
      });
      x25519v1 = issuer.addNetwork({
        id: "net-x25519-v1",
        name: "x25519 v1",
        cidrs: ["10.52.0.0/16"],
        version: 1,
        curve: "25519",
        lighthouses: [{ ip: "10.52.0.1/16", staticAddrs: ["10.200.9.4:4242"] }],
        staticHostMap: { "10.52.0.1": ["10.200.9.4:4242"] },
      });
      await issuer.start();
    });

    afterAll(async () => {
      await issuer?.stop();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    /** Enroll, then check every file, the key, what the issuer saw, and `nebula -test`. */
    async function enrollAndCheck(o: {
      shell: "dash" | "sh";
      network: IssuerNetwork;
      networks: string[];
      withNebulaCert: boolean;
      nebulaBinaries: string[];
    }) {
      const hostDir = join(dir, `host-${randomBytes(4).toString("hex")}`);
      const code = issuer.addCode(o.network, `h${randomBytes(3).toString("hex")}`, o.networks);
      secretsSeen.push(code);
      const before = issuer.seen.length;
      const r = await run(
        o.shell,
        [
          "--api",
          `${issuer.url}/`,
          "--code",
          code,
          "--dir",
          hostDir,
          "--curve",
          o.network.curve,
          "--tun-dev",
          "kh0",
        ],
        o.withNebulaCert ? { env: { NEBULA_CERT: nebulaCert111.path } } : { path: bareBin },
      );
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/enrolled: host host-\d+ in network/);
      if (!o.withNebulaCert) expect(existsSync(join(bareBin, "nebula-cert"))).toBe(false);

      // Files and modes.
      expect(mode(hostDir)).toBe(0o700);
      expect(mode(join(hostDir, "host.key"))).toBe(0o600);
      expect(mode(join(hostDir, "host.token"))).toBe(0o600);
      expect(mode(join(hostDir, "hints.flat"))).toBe(0o600);
      expect(readFileSync(join(hostDir, "hints.flat"), "utf8")).not.toContain(".hostToken");
      for (const f of ["host.crt", "ca.crt", "config.yml", "blocklist", "keyhole.conf"]) {
        expect(existsSync(join(hostDir, f)), f).toBe(true);
      }
      expect(
        execFileSync("/bin/sh", ["-c", `ls -A '${hostDir}'`], { encoding: "utf8" })
          .split("\n")
          .sort(),
      ).toEqual(
        [
          "",
          "blocklist",
          "ca.crt",
          "config.yml",
          "host.crt",
          "host.key",
          "host.token",
          "hints.flat",
          "keyhole.conf",
        ].sort(),
      );
      const host = issuer.hosts.at(-1) as IssuerHost;
      expect(readFileSync(join(hostDir, "host.token"), "utf8")).toBe(host.token);
      expect(readFileSync(join(hostDir, "ca.crt"), "utf8")).toBe(
        readFileSync(o.network.caCrt, "utf8"),
      );
      secretsSeen.push(host.token);

      // The key pair: a Nebula PEM of the right size whose public half is what the issuer signed.
      const banner = o.network.curve === "P256" ? "P256" : "X25519";
      const keyPem = readFileSync(join(hostDir, "host.key"), "utf8");
      const priv = pemBytes(keyPem, `NEBULA ${banner} PRIVATE KEY`);
      expect(priv.length).toBe(32);
      const sentPub = pemBytes(host.publicKey, `NEBULA ${banner} PUBLIC KEY`);
      expect(sentPub.length).toBe(o.network.curve === "P256" ? 65 : 32);
      expect(publicFromPrivate(o.network.curve, priv).equals(sentPub)).toBe(true);
      secretsSeen.push(priv.toString("base64"));

      // The private key never left: the issuer saw exactly {code, publicKey}, and no trace of the key.
      const requests = issuer.seen.slice(before);
      expect(requests.map((q) => `${q.method} ${q.url}`)).toEqual(["POST /v1/enroll"]);
      const enrollBody = JSON.parse((requests[0] as SeenRequest).body);
      expect(Object.keys(enrollBody).sort()).toEqual(["code", "publicKey"]);
      expect(enrollBody.code).toBe(code);
      for (const q of requests) {
        const all = `${q.body}${JSON.stringify(q.headers)}`;
        expect(all).not.toContain(priv.toString("base64"));
        expect(all).not.toContain(priv.toString("hex"));
        expect(all).not.toContain("PRIVATE KEY");
      }

      // config.yml is exactly what test/support/nebula-config.ts writes for the same hints.
      const hints = JSON.parse((requests[0] as SeenRequest).response ?? "") as IssuedCertificate;
      const staticHostMap: Record<string, string[]> = { ...hints.config.staticHostMap };
      for (const lh of hints.config.lighthouses) {
        const ip = lh.ip.split("/")[0] as string;
        if (!(ip in staticHostMap) && lh.staticAddrs.length > 0) staticHostMap[ip] = lh.staticAddrs;
      }
      const expected = nebulaConfigYaml({
        caPath: join(hostDir, "ca.crt"),
        certPath: join(hostDir, "host.crt"),
        keyPath: join(hostDir, "host.key"),
        isLighthouse: hints.config.isLighthouse,
        lighthouses: hints.config.lighthouses.map((l) => l.ip),
        staticHostMap,
        listenPort: hints.config.listenPort,
        tunDev: "kh0",
        blocklist: hints.config.blocklist,
        overlayCidrs: hints.config.network.cidrs,
      });
      expect(readFileSync(join(hostDir, "config.yml"), "utf8")).toBe(expected);

      for (const binary of o.nebulaBinaries) {
        const t = nebulaTest(binary, join(hostDir, "config.yml"));
        expect(t.code, `${binary} -test: ${t.output}`).toBe(0);
      }
      return { hostDir, host, code };
    }

    it("passes sh -n and dash -n", () => {
      execFileSync("/bin/sh", ["-n", SCRIPT]);
      execFileSync("/bin/dash", ["-n", SCRIPT]);
    });

    it("enrolls a Curve25519 host (dash, nebula-cert keygen): v2 IPv4+IPv6 config accepted by nebula 1.11", async () => {
      await enrollAndCheck({
        shell: "dash",
        network: x25519v2,
        networks: ["10.50.0.10/16", "fd50::10/64"],
        withNebulaCert: true,
        nebulaBinaries: [nebula111.path],
      });
    });

    it("enrolls a Curve25519 host with only openssl (sh): v1 config accepted by nebula 1.6.1 and 1.11", async () => {
      issuer.encoding = "hostile";
      onTestFinished(() => {
        issuer.encoding = "compact";
      });
      await enrollAndCheck({
        shell: "sh",
        network: x25519v1,
        networks: ["10.52.0.11/16"],
        withNebulaCert: false,
        nebulaBinaries: [nebula16.path, nebula111.path],
      });
    });

    it("enrolls a P256 host with only openssl (dash) and with nebula-cert (sh): nebula 1.11 accepts both", async () => {
      await enrollAndCheck({
        shell: "dash",
        network: p256v2,
        networks: ["10.51.0.12/16"],
        withNebulaCert: false,
        nebulaBinaries: [nebula111.path],
      });
      await enrollAndCheck({
        shell: "sh",
        network: p256v2,
        networks: ["10.51.0.13/16"],
        withNebulaCert: true,
        nebulaBinaries: [nebula111.path],
      });
    });

    it("renews with the same key, then with --rekey: token and certificate rotate, blocklist refreshed, nebula gets SIGHUP", async () => {
      const { hostDir, host } = await enrollAndCheck({
        shell: "dash",
        network: x25519v2,
        networks: ["10.50.0.14/16", "fd50::14/64"],
        withNebulaCert: false,
        nebulaBinaries: [],
      });
      issuer.encoding = "hostile";
      onTestFinished(() => {
        issuer.encoding = "compact";
      });
      const token0 = readFileSync(join(hostDir, "host.token"), "utf8");
      const crt0 = readFileSync(join(hostDir, "host.crt"), "utf8");
      const key0 = readFileSync(join(hostDir, "host.key"), "utf8");

      // A stand-in for the running nebula: a process that records the SIGHUP it receives.
      const hupFile = join(hostDir, "hup-received");
      const daemon = spawn(
        "/bin/sh",
        ["-c", `trap 'echo hup >> "${hupFile}"' HUP; while :; do sleep 0.1; done`],
        {
          stdio: "ignore",
        },
      );
      writeFileSync(join(hostDir, "nebula.pid"), `${daemon.pid}\n`);
      try {
        // Another host of the network is revoked; the renewal must pull the fresh blocklist.
        const revoked = "ab".repeat(32);
        x25519v2.blocklist.push(revoked);
        const before = issuer.seen.length;
        const r1 = await run("dash", ["--renew", "--dir", hostDir], { path: bareBin });
        expect(r1.code, r1.stderr).toBe(0);
        const token1 = readFileSync(join(hostDir, "host.token"), "utf8");
        secretsSeen.push(token1);
        expect(token1).not.toBe(token0);
        expect(token1).toBe(host.token);
        expect(readFileSync(join(hostDir, "host.crt"), "utf8")).not.toBe(crt0);
        expect(readFileSync(join(hostDir, "host.key"), "utf8")).toBe(key0);
        expect(readFileSync(join(hostDir, "blocklist"), "utf8")).toBe(`${revoked}\n`);
        expect(readFileSync(join(hostDir, "config.yml"), "utf8")).toContain(
          `  blocklist:\n    - "${revoked}"\n`,
        );
        const reqs = issuer.seen.slice(before);
        expect(reqs.map((q) => `${q.method} ${q.url}`)).toEqual([
          "POST /v1/renew",
          `GET /v1/networks/${x25519v2.id}/blocklist`,
        ]);
        expect(reqs[0]?.headers.authorization).toBe(`Bearer ${token0}`);
        expect(reqs[0]?.body).toBe("{}");
        expect(reqs[1]?.headers.authorization).toBe(`Bearer ${token1}`);
        expect(nebulaTest(nebula111.path, join(hostDir, "config.yml")).code).toBe(0);
        await expect
          .poll(() => existsSync(hupFile) && readFileSync(hupFile, "utf8"), { timeout: 5000 })
          .toBe("hup\n");

        // --rekey: a new key pair made locally; only its public half goes out.
        const r2 = await run("sh", ["--renew", "--rekey", "--dir", hostDir], {
          env: { NEBULA_CERT: nebulaCert111.path },
        });
        expect(r2.code, r2.stderr).toBe(0);
        const key2 = readFileSync(join(hostDir, "host.key"), "utf8");
        expect(key2).not.toBe(key0);
        expect(mode(join(hostDir, "host.key"))).toBe(0o600);
        const priv2 = pemBytes(key2, "NEBULA X25519 PRIVATE KEY");
        secretsSeen.push(priv2.toString("base64"), host.token);
        const renewBody = JSON.parse(issuer.seen.at(-2)?.body ?? "");
        expect(Object.keys(renewBody)).toEqual(["publicKey"]);
        expect(
          publicFromPrivate("25519", priv2).equals(
            pemBytes(renewBody.publicKey, "NEBULA X25519 PUBLIC KEY"),
          ),
        ).toBe(true);
        expect(nebulaTest(nebula111.path, join(hostDir, "config.yml")).code).toBe(0);
        await expect
          .poll(() => readFileSync(hupFile, "utf8"), { timeout: 5000 })
          .toBe("hup\nhup\n");

        // The blocklist read fails after a renewal: the new certificate is kept, with the blocklist
        // that came with the renewal, and the failure is reported.
        const crtBefore = readFileSync(join(hostDir, "host.crt"), "utf8");
        issuer.blocklistDown = true;
        const rDown = await run("dash", ["--renew", "--dir", hostDir]).finally(() => {
          issuer.blocklistDown = false;
        });
        expect(rDown.code, rDown.stderr).toBe(0);
        expect(rDown.stderr).toMatch(
          /blocklist failed: HTTP 503 storage_unavailable: database unreachable \(trace id [0-9a-f]{32}\)/,
        );
        expect(rDown.stderr).toMatch(/warning: using the blocklist sent with the renewal/);
        expect(readFileSync(join(hostDir, "host.crt"), "utf8")).not.toBe(crtBefore);
        expect(readFileSync(join(hostDir, "host.token"), "utf8")).toBe(host.token);
        expect(readFileSync(join(hostDir, "blocklist"), "utf8")).toBe(`${revoked}\n`);
        secretsSeen.push(host.token);

        // Reusing a spent token is refused with the server's code; the saved files stay as they were.
        const crt2 = readFileSync(join(hostDir, "host.crt"), "utf8");
        writeFileSync(join(hostDir, "host.token"), token0);
        const r3 = await run("dash", ["--renew", "--dir", hostDir]);
        expect(r3.code).toBe(3);
        expect(r3.stderr).toMatch(
          /HTTP 401 host_token_reused: host token refused \(trace id [0-9a-f]{32}\)/,
        );
        expect(readFileSync(join(hostDir, "host.crt"), "utf8")).toBe(crt2);
      } finally {
        daemon.kill("SIGKILL");
      }
    });

    it("enrolls over HTTPS with --cacert, and refuses an untrusted API certificate (exit 3)", async () => {
      const tlsDir = mkdtempSync(join(dir, "tls-"));
      execFileSync(
        "openssl",
        [
          "req",
          "-x509",
          "-newkey",
          "ec",
          "-pkeyopt",
          "ec_paramgen_curve:P-256",
          "-nodes",
          "-days",
          "1",
          "-subj",
          "/CN=127.0.0.1",
          "-addext",
          "subjectAltName=IP:127.0.0.1",
          "-keyout",
          join(tlsDir, "key.pem"),
          "-out",
          join(tlsDir, "cert.pem"),
        ],
        { stdio: "ignore" },
      );
      const tlsIssuer = new NebulaCertIssuer(
        nebulaCert111.path,
        mkdtempSync(join(dir, "issuer-tls-")),
      );
      const net = tlsIssuer.addNetwork({
        id: "net-tls",
        name: "tls",
        cidrs: ["10.53.0.0/16"],
        version: 2,
        curve: "25519",
        lighthouses: [],
        staticHostMap: {},
      });
      await tlsIssuer.start({
        key: readFileSync(join(tlsDir, "key.pem"), "utf8"),
        cert: readFileSync(join(tlsDir, "cert.pem"), "utf8"),
      });
      onTestFinished(() => tlsIssuer.stop());
      const env = { NEBULA_CERT: nebulaCert111.path };

      const code1 = tlsIssuer.addCode(net, "tls1", ["10.53.0.1/16"]);
      secretsSeen.push(code1);
      const untrusted = await run(
        "dash",
        ["--api", tlsIssuer.url, "--code", code1, "--dir", join(tlsDir, "h1")],
        { env },
      );
      expect(untrusted.code).toBe(3);
      expect(untrusted.stderr).toMatch(/could not reach https:\/\/127\.0\.0\.1:\d+: curl: \(60\)/);
      expect(tlsIssuer.seen).toHaveLength(0);

      const hostDir = join(tlsDir, "h2");
      const args = [
        "--api",
        tlsIssuer.url,
        "--code",
        code1,
        "--dir",
        hostDir,
        "--cacert",
        join(tlsDir, "cert.pem"),
      ];
      const trusted = await run("sh", args, { env });
      expect(trusted.code, trusted.stderr).toBe(0);
      secretsSeen.push(readFileSync(join(hostDir, "host.token"), "utf8"));
      expect(nebulaTest(nebula111.path, join(hostDir, "config.yml")).code).toBe(0);
      // The CA file is remembered for renewals.
      const renewed = await run("dash", ["--renew", "--dir", hostDir], { env });
      expect(renewed.code, renewed.stderr).toBe(0);
      secretsSeen.push(readFileSync(join(hostDir, "host.token"), "utf8"));
      expect(tlsIssuer.seen.map((q) => `${q.method} ${q.url}`)).toEqual([
        "POST /v1/enroll",
        "POST /v1/renew",
        "GET /v1/networks/net-tls/blocklist",
      ]);
    });

    it("a wrong code exits 3 with the server's error code and trace id, and installs nothing", async () => {
      const hostDir = join(dir, "wrong-code");
      const r = await run(
        "dash",
        ["--api", issuer.url, "--code", "not-a-real-code-123", "--dir", hostDir],
        {
          env: { NEBULA_CERT: nebulaCert111.path },
        },
      );
      expect(r.code).toBe(3);
      expect(r.stderr).toMatch(
        /POST \/v1\/enroll failed: HTTP 401 invalid_enrollment_code: enrollment code unknown/,
      );
      // The trace id printed is the one the server put in its error body.
      const traceId = /trace id ([0-9a-f]{32})/.exec(r.stderr)?.[1];
      expect(JSON.parse(issuer.seen.at(-1)?.response ?? "{}").error?.traceId).toBe(traceId);
      expect(r.stderr).not.toContain("not-a-real-code-123");
      expect(execFileSync("/bin/sh", ["-c", `ls -A '${hostDir}'`], { encoding: "utf8" })).toBe("");
    });

    it("a 200 whose body is not whole JSON exits 3 and installs nothing", async () => {
      const hostDir = join(dir, "truncated");
      const code = issuer.addCode(x25519v2, "truncated", ["10.50.0.30/16"]);
      secretsSeen.push(code);
      issuer.truncateNext = true;
      const r = await run("dash", ["--api", issuer.url, "--code", code, "--dir", hostDir], {
        env: { NEBULA_CERT: nebulaCert111.path },
      });
      expect(r.code).toBe(3);
      expect(r.stderr).toMatch(
        /POST \/v1\/enroll: HTTP 200 but the body is not JSON \(trace id [0-9a-f]{32}\)/,
      );
      expect(execFileSync("/bin/sh", ["-c", `ls -A '${hostDir}'`], { encoding: "utf8" })).toBe("");
    });

    it("an unreachable API exits 3; a missing key tool or unwritable folder exits 4", async () => {
      const unreachable = await run(
        "dash",
        ["--api", "http://127.0.0.1:9", "--code", "abcdefgh12", "--dir", join(dir, "u")],
        {
          env: { NEBULA_CERT: nebulaCert111.path },
        },
      );
      expect(unreachable.code).toBe(3);
      expect(unreachable.stderr).toMatch(/could not reach http:\/\/127\.0\.0\.1:9/);

      const noTools = join(dir, "no-tools-bin");
      mkdirSync(noTools);
      for (const tool of BARE_HOST_TOOLS.filter((t) => t !== "openssl")) {
        symlinkSync(join(bareBin, tool), join(noTools, tool));
      }
      const noKeygen = await run(
        "dash",
        ["--api", issuer.url, "--code", "abcdefgh12", "--dir", join(dir, "k")],
        { path: noTools },
      );
      expect(noKeygen.code).toBe(4);
      expect(noKeygen.stderr).toMatch(/neither nebula-cert nor openssl/);

      const file = join(dir, "a-file");
      writeFileSync(file, "");
      const badDir = await run("dash", [
        "--api",
        issuer.url,
        "--code",
        "abcdefgh12",
        "--dir",
        join(file, "sub"),
      ]);
      expect(badDir.code).toBe(4);
    });

    it("bad arguments exit 2 with a message that says what to do", async () => {
      const never = join(dir, "never-created");
      const cases: [string[], RegExp][] = [
        [[], /--dir is required/],
        [["--dir", never, "--code", "abcdefgh12"], /--api is required/],
        [["--dir", never, "--api", issuer.url], /--code .* is required/],
        [
          ["--dir", never, "--api", "ftp://x", "--code", "abcdefgh12"],
          /--api must start with https:\/\//,
        ],
        [
          ["--dir", never, "--api", issuer.url, "--code", "abcdefgh12", "--curve", "ed448"],
          /--curve must be 25519 or P256/,
        ],
        [
          ["--dir", never, "--api", issuer.url, "--code", "abcdefgh12", "--listen-port", "70000"],
          /--listen-port must be/,
        ],
        [
          ["--dir", never, "--api", issuer.url, "--code", "abcdefgh12", "--tun-dev", "a b"],
          /--tun-dev may use/,
        ],
        [["--dir", never, "--api", issuer.url, "--code", "bad code!"], /unexpected characters/],
        [["--dir", never, "--api", issuer.url, "--code"], /--code needs a value/],
        [["--dir", never, "--frobnicate"], /unknown argument: --frobnicate/],
        [
          ["--dir", never, "--api", issuer.url, "--code", "abcdefgh12", "--rekey"],
          /--rekey goes with --renew/,
        ],
      ];
      for (const [args, message] of cases) {
        const r = await run("dash", args);
        expect(r.code, `${args.join(" ")}: ${r.stderr}`).toBe(2);
        expect(r.stderr).toMatch(message);
        expect(r.stderr).toMatch(/usage: keyhole-enroll\.sh/);
      }
      expect(existsSync(never)).toBe(false);
    });

    it("never printed a code, a host token or a private key", () => {
      expect(outputs.length).toBeGreaterThan(10);
      expect(secretsSeen.length).toBeGreaterThan(8);
      for (const r of outputs) {
        for (const secret of secretsSeen) {
          expect(r.stdout + r.stderr).not.toContain(secret);
        }
      }
    });
  },
);

/**
 * The whole host path: the script enrolls a lighthouse and two hosts (in the root namespace, where
 * the API is reachable on loopback), real nebula runs each config.yml as written inside its own
 * namespace, and the hosts ping each other. Revoking a host and renewing another with the script
 * (which fetches the blocklist and sends SIGHUP through nebula.pid) cuts the revoked host off.
 */
function enrolledTunnelSuite(o: {
  title: string;
  nebula: Tool;
  version: 1 | 2;
  octet: number;
  cidrs: string[];
  addrs: Record<"lighthouse" | "a" | "b", string[]>;
  revoke: boolean;
}): void {
  describeWith([netnsCapability, o.nebula, nebulaCert111], o.title, () => {
    const names = ["lighthouse", "a", "b"] as const;
    type Name = (typeof names)[number];
    let dir = "";
    let issuer: NebulaCertIssuer | undefined;
    let underlay: Underlay | undefined;
    let network: IssuerNetwork;
    const hosts = {} as Record<Name, NetnsHost>;
    const daemons = {} as Record<Name, NebulaProcess>;
    const v4 = (name: Name) => (o.addrs[name][0] as string).split("/")[0] as string;

    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), "keyhole-enroll-tunnel-"));
      issuer = new NebulaCertIssuer(nebulaCert111.path, mkdtempSync(join(dir, "issuer-")));
      await issuer.start();
      underlay = await createUnderlay(uniquePrefix("e"), { octet: o.octet });
      for (const name of names) hosts[name] = await underlay.addHost(name);
      network = issuer.addNetwork({
        id: `net-tunnel-v${o.version}`,
        name: "tunnel",
        cidrs: o.cidrs,
        version: o.version,
        curve: "25519",
        lighthouses: [
          {
            ip: o.addrs.lighthouse[0] as string,
            staticAddrs: [`${hosts.lighthouse.underlayIp}:4242`],
          },
        ],
        staticHostMap: {},
      });
      for (const name of names) {
        const code = issuer.addCode(network, name, o.addrs[name], name === "lighthouse");
        const hostDir = join(dir, name);
        const r = await runScript(
          "dash",
          ["--api", issuer.url, "--code", code, "--dir", hostDir, "--tun-dev", "kh1"],
          {
            env: { NEBULA_CERT: nebulaCert111.path },
          },
        );
        expect(r.code, r.stderr).toBe(0);
        daemons[name] = startNebula(hosts[name], {
          binary: o.nebula.path,
          configPath: join(hostDir, "config.yml"),
        });
        writeFileSync(join(hostDir, "nebula.pid"), `${daemons[name].pid}\n`);
      }
      await Promise.all(names.map((n) => daemons[n].waitForTun()));
    });

    afterAll(async () => {
      await underlay?.destroy();
      await issuer?.stop();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    it("hosts enrolled by the script reach each other over the overlay", async () => {
      expect(readFileSync(join(dir, "lighthouse", "config.yml"), "utf8")).toContain(
        "am_lighthouse: true",
      );
      for (const [from, to] of [
        ["a", "b"],
        ["b", "a"],
      ] as const) {
        for (const ip of o.addrs[to].map((a) => a.split("/")[0] as string)) {
          const r = await waitForPing(hosts[from], ip, 15_000);
          expect(r.received, `${from} -> ${to} ${ip}`).toBeGreaterThanOrEqual(1);
        }
      }
    });

    if (o.revoke) {
      it("revoking b and renewing a with the script (blocklist + SIGHUP) cuts b off", async () => {
        await waitForPing(hosts.b, v4("a"), 15_000);
        const b = issuer?.hosts.find((h) => h.name === "b") as IssuerHost;
        network.blocklist.push(b.fingerprints.at(-1) as string);
        const r = await runScript("dash", ["--renew", "--dir", join(dir, "a")], {
          env: { NEBULA_CERT: nebulaCert111.path },
        });
        expect(r.code, r.stderr).toBe(0);
        expect(r.stderr).toMatch(
          new RegExp(`nebula \\(pid ${daemons.a.pid}\\) reloaded its config`),
        );
        const deadline = Date.now() + 30_000;
        let failuresInARow = 0;
        while (failuresInARow < 2) {
          const p = await ping(hosts.b, v4("a"), { count: 1, timeoutSec: 1 });
          failuresInARow = p.received === 0 ? failuresInARow + 1 : 0;
          if (Date.now() > deadline)
            throw new Error(`b still reaches a:\n${daemons.a.logs().slice(-3000)}`);
        }
        expect((await ping(hosts.a, v4("b"), { count: 2, timeoutSec: 1 })).received).toBe(0);
        // a renewed its own certificate and still reaches the lighthouse with it.
        await waitForPing(hosts.a, v4("lighthouse"), 15_000);
      });
    }
  });
}

enrolledTunnelSuite({
  title: "keyhole-enroll.sh + nebula 1.11 in namespaces (v2, IPv4 and IPv6)",
  nebula: nebula111,
  version: 2,
  octet: 3,
  cidrs: ["10.61.0.0/24", "fd61::/64"],
  addrs: {
    lighthouse: ["10.61.0.1/24", "fd61::1/64"],
    a: ["10.61.0.2/24", "fd61::2/64"],
    b: ["10.61.0.3/24", "fd61::3/64"],
  },
  revoke: true,
});

enrolledTunnelSuite({
  title: "keyhole-enroll.sh + nebula 1.6.1 in namespaces (v1, IPv4)",
  nebula: nebula16,
  version: 1,
  octet: 4,
  cidrs: ["10.62.0.0/24"],
  addrs: { lighthouse: ["10.62.0.1/24"], a: ["10.62.0.2/24"], b: ["10.62.0.3/24"] },
  revoke: false,
});
