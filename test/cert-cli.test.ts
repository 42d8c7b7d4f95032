/**
 * `keyhole cert` as users run it: `node bin/keyhole.mjs cert ...` in a subprocess, in a fresh folder.
 * Proves each mode's files, defaults, file modes and exit codes, the flag forms nebula-cert scripts
 * use, refusals (overwrite, bad flags, CA constraints, wrong keys), encrypted CA keys, and stdio "-".
 * Agreement with the real nebula-cert is in test/crosscheck.test.ts.
 */
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { certCommand } from "../cli/cert/index.ts";
import type { CertIo } from "../cli/cert/io.ts";
import { REPO_ROOT } from "./support/tools.ts";

const KEYHOLE = resolve(REPO_ROOT, "bin/keyhole.mjs");
const PASSPHRASE = "correct-horse";
/** Small Argon2id parameters: the default (2 GiB) is for real CAs, not for tests. */
const ARGON = ["-argon-memory", "1024", "-argon-iterations", "2", "-argon-parallelism", "1"];

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function keyhole(
  cwd: string,
  args: string[],
  options: { input?: string; env?: Record<string, string> } = {},
): Promise<Run> {
  return new Promise((done) => {
    const env: Record<string, string | undefined> = { ...process.env, ...options.env };
    if (!options.env?.KEYHOLE_CA_PASSPHRASE) delete env.KEYHOLE_CA_PASSPHRASE;
    delete env.NEBULA_CA_PASSPHRASE;
    const child = execFile(
      process.execPath,
      [KEYHOLE, "cert", ...args],
      { cwd, env, encoding: "utf8", timeout: 30_000 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === "number" ? error.code : -1) : 0;
        done({ code, stdout, stderr });
      },
    );
    // A tool that exits without reading stdin closes the pipe; that is not a failure.
    child.stdin?.on("error", () => {});
    child.stdin?.end(options.input ?? "");
  });
}

/**
 * The same dispatcher bin/keyhole.mjs calls, run in this process: used only for the long tables of
 * refusals (every path absolute), where a Node start per row would dominate the run time.
 */
async function keyholeInProcess(args: string[], input = ""): Promise<Run> {
  let stdout = "";
  let stderr = "";
  const io: CertIo = {
    stdout: (d) => {
      stdout += typeof d === "string" ? d : new TextDecoder().decode(d);
    },
    stderr: (t) => {
      stderr += t;
    },
    readStdin: async () => new TextEncoder().encode(input),
    readHiddenLine: undefined,
    env: {},
  };
  const code = await certCommand(args, io);
  return { code, stdout, stderr };
}

async function printJson(cwd: string, path: string): Promise<Record<string, unknown>[]> {
  const r = await keyhole(cwd, ["print", "-json", "-path", path]);
  expect(r.stderr).toBe("");
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout) as Record<string, unknown>[];
}

async function mode(path: string): Promise<number> {
  return (await stat(path)).mode & 0o777;
}

function details(json: Record<string, unknown>): Record<string, unknown> {
  return json.details as Record<string, unknown>;
}

function seconds(iso: unknown): number {
  return Date.parse(iso as string) / 1000;
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "keyhole-cert-cli-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function folder(name: string): Promise<string> {
  const path = join(dir, name);
  await rm(path, { recursive: true, force: true });
  await import("node:fs/promises").then((fs) => fs.mkdir(path));
  return path;
}

describe("keyhole cert ca", { timeout: 180_000 }, () => {
  it("makes ca.crt and ca.key in the current folder with nebula-cert's defaults, mode 0600", async () => {
    const cwd = await folder("ca-defaults");
    const r = await keyhole(cwd, ["ca", "-name", "Defaults CA"]);
    expect(r).toEqual({ code: 0, stdout: "", stderr: "" });
    expect(await mode(join(cwd, "ca.key"))).toBe(0o600);
    expect(await mode(join(cwd, "ca.crt"))).toBe(0o600);
    expect(await readFile(join(cwd, "ca.key"), "utf8")).toMatch(
      /^-----BEGIN NEBULA ED25519 PRIVATE KEY-----\n/,
    );
    expect(await readFile(join(cwd, "ca.crt"), "utf8")).toMatch(
      /^-----BEGIN NEBULA CERTIFICATE V2-----\n/,
    );
    const [ca] = await printJson(cwd, "ca.crt");
    expect(ca?.version).toBe(2);
    expect(ca?.curve).toBe("CURVE25519");
    const d = details(ca as Record<string, unknown>);
    expect(d.isCa).toBe(true);
    expect(d.name).toBe("Defaults CA");
    expect(d.issuer).toBe("");
    expect(seconds(d.notAfter) - seconds(d.notBefore)).toBe(8760 * 3600);
    expect(Math.abs(seconds(d.notBefore) - Date.now() / 1000)).toBeLessThan(60);
  });

  it("takes -flag=value, --flag value, P256, v1 and constraints", async () => {
    const cwd = await folder("ca-forms");
    const r = await keyhole(cwd, [
      "ca",
      "-name=Forms CA",
      "--curve",
      "P256",
      "-version=1",
      "-duration",
      "1h30m",
      "-groups",
      " servers, ops ,,",
      "-networks",
      "10.9.0.0/16",
      "-unsafe-networks=192.0.2.0/24",
      "-out-crt",
      "forms.crt",
      "-out-key",
      "forms.key",
    ]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(await readFile(join(cwd, "forms.key"), "utf8")).toMatch(
      /^-----BEGIN NEBULA ECDSA P256 PRIVATE KEY-----\n/,
    );
    const [ca] = await printJson(cwd, "forms.crt");
    expect(ca?.version).toBe(1);
    const d = details(ca as Record<string, unknown>);
    expect(d.curve).toBe("P256");
    expect(d.groups).toEqual(["servers", "ops"]);
    expect(d.networks).toEqual(["10.9.0.0/16"]);
    expect(d.unsafeNetworks).toEqual(["192.0.2.0/24"]);
    expect(seconds(d.notAfter) - seconds(d.notBefore)).toBe(5400);
  });

  it("refuses to overwrite an existing CA key or cert and leaves them as they were", async () => {
    const cwd = await folder("ca-overwrite");
    expect((await keyhole(cwd, ["ca", "-name", "First"])).code).toBe(0);
    const key = await readFile(join(cwd, "ca.key"), "utf8");
    const crt = await readFile(join(cwd, "ca.crt"), "utf8");
    const again = await keyhole(cwd, ["ca", "-name", "Second"]);
    expect(again.code).toBe(1);
    expect(again.stderr).toBe("Error: refusing to overwrite existing CA key: ca.key\n");
    await rm(join(cwd, "ca.key"));
    const crtOnly = await keyhole(cwd, ["ca", "-name", "Third"]);
    expect(crtOnly.code).toBe(1);
    expect(crtOnly.stderr).toBe("Error: refusing to overwrite existing CA cert: ca.crt\n");
    expect(await readFile(join(cwd, "ca.crt"), "utf8")).toBe(crt);
    expect(key).not.toBe("");
  });

  it("refuses bad flags with the mode's usage and status 1", async () => {
    const cwd = await folder("ca-flags");
    const cases: [string[], string][] = [
      [["ca"], "Error: -name is required\n"],
      [["ca", "-name", "x", "-bogus"], "Error: flag provided but not defined: -bogus\n"],
      [["ca", "-name", "x", "-version", "3"], "Error: -version must be either 1 or 2\n"],
      [["ca", "-name", "x", "-version", "two"], 'Error: invalid value "two" for flag -version'],
      [["ca", "-name", "x", "-duration", "0s"], "Error: -duration must be greater than 0\n"],
      [["ca", "-name", "x", "-duration", "10 days"], "Error: invalid value for flag -duration"],
      [
        ["ca", "-name", "x", "-networks", "10.0.0.300/8"],
        "Error: invalid -networks definition: 10.0.0.300/8\n",
      ],
      [
        ["ca", "-name", "x", "-version", "1", "-networks", "fd00::/64"],
        "Error: invalid -networks definition: v1 certificates can only be ipv4, have fd00::/64\n",
      ],
      [["ca", "-name", "x", "stray"], 'Error: unexpected argument "stray"'],
      [["ca", "-name"], "Error: flag needs an argument: -name\n"],
    ];
    const runs = await Promise.all(cases.map(([args]) => keyholeInProcess(args)));
    runs.forEach((r, i) => {
      const [args, message] = cases[i] as [string[], string];
      expect(r.code, args.join(" ")).toBe(1);
      expect(r.stderr.startsWith(message), `${args.join(" ")}: ${r.stderr}`).toBe(true);
      expect(r.stderr).toContain("Usage of keyhole cert ca <flags>");
    });
    const curve = await keyhole(cwd, ["ca", "-name", "x", "-curve", "P384"]);
    await expect(stat(join(cwd, "ca.key"))).rejects.toThrow();
    expect(curve.code).toBe(1);
    expect(curve.stderr).toBe("Error: invalid curve: P384 (use 25519 or P256)\n");
  });

  it("prints help with -h on stderr and exits 0; unknown modes exit 1", async () => {
    const cwd = await folder("help");
    const help = await keyhole(cwd, ["ca", "-h"]);
    expect(help.code).toBe(0);
    expect(help.stderr).toContain(
      "Usage of keyhole cert ca <flags>: create a self signed certificate authority",
    );
    expect(help.stderr).toContain(
      '  -out-key string\n    \tOptional: path to write the private key to (default "ca.key")',
    );
    expect(help.stderr).toContain("  -duration duration\n");
    expect(help.stderr).toContain("(default 8760h0m0s)");
    const unknown = await keyhole(cwd, ["frobnicate"]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/^Error: unknown mode: frobnicate\n/);
    const none = await keyhole(cwd, []);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/^Error: No mode was provided\n/);
  });
});

describe("keyhole cert keygen", { timeout: 180_000 }, () => {
  it("writes a host key pair mode 0600 for both curves", async () => {
    const cwd = await folder("keygen");
    const [x, p] = await Promise.all([
      keyhole(cwd, ["keygen", "-out-key", "x.key", "-out-pub", "x.pub"]),
      keyhole(cwd, ["keygen", "-curve", "P256", "-out-key", "p.key", "-out-pub", "p.pub"]),
    ]);
    expect(x).toEqual({ code: 0, stdout: "", stderr: "" });
    expect(p).toEqual({ code: 0, stdout: "", stderr: "" });
    for (const f of ["x.key", "x.pub", "p.key", "p.pub"])
      expect(await mode(join(cwd, f))).toBe(0o600);
    expect(await readFile(join(cwd, "x.key"), "utf8")).toMatch(
      /^-----BEGIN NEBULA X25519 PRIVATE KEY-----\n/,
    );
    expect(await readFile(join(cwd, "x.pub"), "utf8")).toMatch(
      /^-----BEGIN NEBULA X25519 PUBLIC KEY-----\n/,
    );
    expect(await readFile(join(cwd, "p.key"), "utf8")).toMatch(
      /^-----BEGIN NEBULA P256 PRIVATE KEY-----\n/,
    );
    expect(await readFile(join(cwd, "p.pub"), "utf8")).toMatch(
      /^-----BEGIN NEBULA P256 PUBLIC KEY-----\n/,
    );
  });

  it("needs both outputs, and only one of them on stdout", async () => {
    const cwd = await folder("keygen-flags");
    const [noPub, noKey, both, pubOut] = await Promise.all([
      keyhole(cwd, ["keygen", "-out-key", "k"]),
      keyhole(cwd, ["keygen", "-out-pub", "p"]),
      keyhole(cwd, ["keygen", "-out-key", "-", "-out-pub", "-"]),
      keyhole(cwd, ["keygen", "-out-key", "k2", "-out-pub", "-"]),
    ]);
    expect(noPub.code).toBe(1);
    expect(noPub.stderr).toMatch(/^Error: -out-pub is required\n/);
    expect(noKey.code).toBe(1);
    expect(noKey.stderr).toMatch(/^Error: -out-key is required\n/);
    expect(both.code).toBe(1);
    expect(both.stderr).toBe(
      'Error: -out-key and -out-pub both set to "-", only one output may write to stdout\n',
    );
    expect(pubOut.code).toBe(0);
    expect(pubOut.stdout).toMatch(
      /^-----BEGIN NEBULA X25519 PUBLIC KEY-----\n[A-Za-z0-9+/=]+\n-----END NEBULA X25519 PUBLIC KEY-----\n$/,
    );
  });
});

describe("keyhole cert sign, print, verify", { timeout: 180_000 }, () => {
  let cwd: string;
  beforeAll(async () => {
    cwd = await folder("sign");
    const ca = await keyhole(cwd, [
      "ca",
      "-name",
      "Sign CA",
      "-groups",
      "servers,db",
      "-networks",
      "10.50.0.0/16,fd00:50::/64",
      "-duration",
      "2h",
    ]);
    expect(ca.code).toBe(0);
    const keys = await keyhole(cwd, ["keygen", "-out-key", "host.key", "-out-pub", "host.pub"]);
    expect(keys.code).toBe(0);
  });

  it("signs -in-pub with the CA's version, out files named after -name, expiry 1s before the CA", async () => {
    const r = await keyhole(cwd, [
      "sign",
      "-name",
      "web1",
      "-networks",
      "fd00:50::7/64, 10.50.1.7/16",
      "-groups",
      "servers",
      "-in-pub",
      "host.pub",
    ]);
    expect(r).toEqual({ code: 0, stdout: "", stderr: "" });
    expect(await mode(join(cwd, "web1.crt"))).toBe(0o600);
    const [ca] = await printJson(cwd, "ca.crt");
    const [host] = await printJson(cwd, "web1.crt");
    expect(host?.version).toBe(2);
    const d = details(host as Record<string, unknown>);
    expect(d.name).toBe("web1");
    expect(d.isCa).toBe(false);
    expect(d.networks).toEqual(["10.50.1.7/16", "fd00:50::7/64"]);
    expect(d.groups).toEqual(["servers"]);
    expect(d.issuer).toBe(ca?.fingerprint);
    const caDetails = details(ca as Record<string, unknown>);
    expect(seconds(d.notAfter)).toBe(seconds(caDetails.notAfter) - 1);

    const verify = await keyhole(cwd, ["verify", "-ca", "ca.crt", "-crt", "web1.crt"]);
    expect(verify).toEqual({ code: 0, stdout: "", stderr: "" });
  });

  it("makes the host key itself without -in-pub (mode 0600), and refuses to overwrite either file", async () => {
    const r = await keyhole(cwd, [
      "sign",
      "-name",
      "db1",
      "-networks",
      "10.50.2.1/16",
      "-groups",
      "db",
      "-duration",
      "30m",
    ]);
    expect(r).toEqual({ code: 0, stdout: "", stderr: "" });
    expect(await mode(join(cwd, "db1.key"))).toBe(0o600);
    expect(await readFile(join(cwd, "db1.key"), "utf8")).toMatch(
      /^-----BEGIN NEBULA X25519 PRIVATE KEY-----\n/,
    );
    const [host] = await printJson(cwd, "db1.crt");
    const d = details(host as Record<string, unknown>);
    expect(seconds(d.notAfter) - seconds(d.notBefore)).toBe(1800);

    const crtBefore = await readFile(join(cwd, "db1.crt"), "utf8");
    const again = await keyhole(cwd, ["sign", "-name", "db1", "-networks", "10.50.2.1/16"]);
    expect(again.code).toBe(1);
    expect(again.stderr).toBe("Error: refusing to overwrite existing cert: db1.crt\n");
    await rm(join(cwd, "db1.crt"));
    const keyOnly = await keyhole(cwd, ["sign", "-name", "db1", "-networks", "10.50.2.1/16"]);
    expect(keyOnly.code).toBe(1);
    expect(keyOnly.stderr).toBe("Error: refusing to overwrite existing key: db1.key\n");
    await expect(stat(join(cwd, "db1.crt"))).rejects.toThrow();
    expect(crtBefore).not.toBe("");
  });

  it("refuses what nebula-cert refuses, saying why, and writes nothing", async () => {
    const otherCa = await folder("sign-other-ca");
    const [otherMade, p256Made] = await Promise.all([
      keyhole(otherCa, ["ca", "-name", "Other"]),
      keyhole(otherCa, ["keygen", "-curve", "P256", "-out-key", "p.key", "-out-pub", "p.pub"]),
    ]);
    expect(otherMade.code).toBe(0);
    expect(p256Made.code).toBe(0);
    const at = (f: string) => join(cwd, f);
    // Every path absolute: these rows run in-process (see keyholeInProcess).
    const sign = (...extra: string[]) => [
      "sign",
      "-ca-crt",
      at("ca.crt"),
      "-ca-key",
      at("ca.key"),
      "-out-crt",
      at("refused.crt"),
      ...extra,
    ];
    const pub = ["-in-pub", at("host.pub")];
    const cases: [string[], RegExp][] = [
      [sign("-name", "a"), /^Error: -networks is required\n/],
      [sign("-networks", "10.50.0.9/16"), /^Error: -name is required\n/],
      [
        sign("-name", "a", "-networks", "10.50.0.9/16", ...pub, "-out-key", at("k")),
        /^Error: cannot set both -in-pub and -out-key\n/,
      ],
      [
        sign("-name", "a", "-networks", "10.50.0.9", ...pub),
        /^Error: invalid -networks definition: 10.50.0.9\n/,
      ],
      [
        sign("-name", "a", "-networks", "10.50.0.9/16,10.50.0.10/16", "-version", "1", ...pub),
        /^Error: invalid -networks definition: v1 certificates can only have a single ipv4 address\n/,
      ],
      [
        sign("-name", "a", "-networks", "10.50.0.9/16,fd00:50::9/64", "-version", "1", ...pub),
        /^Error: invalid -networks definition: v1 certificates can only contain ipv4 addresses\n/,
      ],
      [
        sign("-name", "a", "-networks", "10.51.0.9/16", ...pub),
        /^Error: error while signing: .*10\.51\.0\.9\/16/,
      ],
      [
        sign("-name", "a", "-networks", "10.50.0.9/16", "-groups", "ops", ...pub),
        /^Error: error while signing: .*ops/,
      ],
      [
        sign("-name", "a", "-networks", "10.50.0.9/16", "-duration", "3h", ...pub),
        /^Error: error while signing: /,
      ],
      [
        sign("-name", "a", "-networks", "10.50.0.9/16", "-in-pub", join(otherCa, "p.pub")),
        /^Error: curve of in-pub does not match ca\n/,
      ],
      [
        [
          ...sign("-name", "a", "-networks", "10.50.0.9/16", ...pub),
          "-ca-key",
          join(otherCa, "ca.key"),
        ],
        /^Error: refusing to sign, root certificate does not match private key\n/,
      ],
      [
        [...sign("-name", "a", "-networks", "10.50.0.9/16", ...pub), "-ca-key", at("host.key")],
        /^Error: error while parsing ca-key: /,
      ],
      [
        sign("-name", "a", "-networks", "10.50.0.9/16", "-in-pub", at("missing.pub")),
        /^Error: error while reading in-pub \(-in-pub .*missing.pub\): no such file\n/,
      ],
      [
        sign("-name", "a", "-networks", "10.50.0.9/16", "-in-pub", at("ca.crt")),
        /^Error: error while parsing in-pub: /,
      ],
    ];
    const runs = await Promise.all(cases.map(([args]) => keyholeInProcess(args)));
    runs.forEach((r, i) => {
      const [args, pattern] = cases[i] as [string[], RegExp];
      expect(r.code, args.join(" ")).toBe(1);
      expect(r.stderr, args.join(" ")).toMatch(pattern);
    });
    await expect(stat(at("refused.crt"))).rejects.toThrow();
    // And the bin turns a refusal into status 1 with the message on stderr.
    const viaBin = await keyhole(cwd, [
      "sign",
      "-name",
      "a",
      "-networks",
      "10.51.0.9/16",
      "-in-pub",
      "host.pub",
    ]);
    expect(viaBin.code).toBe(1);
    expect(viaBin.stdout).toBe("");
    expect(viaBin.stderr).toMatch(/^Error: error while signing: .*10\.51\.0\.9\/16/);
    await expect(stat(at("a.crt"))).rejects.toThrow();
  });

  it("prints every cert of a bundle, as JSON or tab-indented, and reads stdin with -path -", async () => {
    const bundle =
      (await readFile(join(cwd, "ca.crt"), "utf8")) +
      (await readFile(join(cwd, "web1.crt"), "utf8"));
    await writeFile(join(cwd, "bundle.crt"), bundle);
    const json = await printJson(cwd, "bundle.crt");
    expect(json.map((c) => details(c).name)).toEqual(["Sign CA", "web1"]);
    const text = await keyhole(cwd, ["print", "-path", "bundle.crt"]);
    expect(text.code).toBe(0);
    expect(text.stdout).toBe(json.map((c) => `${JSON.stringify(c, null, "\t")}\n`).join(""));
    const piped = await keyhole(cwd, ["print", "-json", "-path", "-"], { input: bundle });
    expect(piped.code).toBe(0);
    expect(JSON.parse(piped.stdout)).toEqual(json);
    const garbage = await keyhole(cwd, ["print", "-path", "-"], { input: "not a certificate\n" });
    expect(garbage.code).toBe(1);
    expect(garbage.stderr).toMatch(/^Error: error while unmarshaling cert: /);
  });

  it("verify refuses a cert from another CA, an expired cert, and a tampered signature", async () => {
    const other = await folder("verify-other");
    expect((await keyhole(other, ["ca", "-name", "Stranger"])).code).toBe(0);
    const stranger = await keyhole(cwd, [
      "verify",
      "-ca",
      join(other, "ca.crt"),
      "-crt",
      "web1.crt",
    ]);
    expect(stranger.code).toBe(1);
    expect(stranger.stderr).toMatch(
      /^Error: error while verifying certificate v2 web1 with issuer [0-9a-f]{64}: /,
    );

    const short = await keyhole(cwd, [
      "sign",
      "-name",
      "brief",
      "-networks",
      "10.50.3.3/16",
      "-in-pub",
      "host.pub",
      "-duration",
      "1s",
    ]);
    expect(short.code).toBe(0);
    await new Promise((r) => setTimeout(r, 2100));
    const expired = await keyhole(cwd, ["verify", "-ca", "ca.crt", "-crt", "brief.crt"]);
    expect(expired.code).toBe(1);
    expect(expired.stderr).toMatch(/^Error: error while verifying certificate v2 brief .*expired/);

    const pem = await readFile(join(cwd, "web1.crt"), "utf8");
    const lines = pem.trim().split("\n");
    const body = Buffer.from(lines.slice(1, -1).join(""), "base64");
    body[body.length - 1] = (body[body.length - 1] as number) ^ 0x01; // the signature ends the cert
    const tampered = `${lines[0]}\n${body
      .toString("base64")
      .replace(/(.{64})/g, "$1\n")
      .trim()}\n${lines.at(-1)}\n`;
    await writeFile(join(cwd, "tampered.crt"), tampered);
    const bad = await keyhole(cwd, ["verify", "-ca", "ca.crt", "-crt", "tampered.crt"]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/signature/i);
  });
});

describe("encrypted CA keys", { timeout: 180_000 }, () => {
  it("ca -encrypt reads the passphrase from stdin; sign opens the key from the environment or stdin", async () => {
    const cwd = await folder("encrypted");
    const ca = await keyhole(
      cwd,
      ["ca", "-name", "Sealed CA", "-encrypt", ...ARGON, "-networks", "10.60.0.0/16"],
      {
        input: `${PASSPHRASE}\n`,
      },
    );
    expect(ca).toEqual({ code: 0, stdout: "", stderr: "" });
    const keyPem = await readFile(join(cwd, "ca.key"), "utf8");
    expect(keyPem).toMatch(/^-----BEGIN NEBULA ED25519 ENCRYPTED PRIVATE KEY-----\n/);
    expect(await mode(join(cwd, "ca.key"))).toBe(0o600);

    const viaEnv = await keyhole(cwd, ["sign", "-name", "a", "-networks", "10.60.0.1/16"], {
      env: { KEYHOLE_CA_PASSPHRASE: PASSPHRASE },
    });
    expect(viaEnv).toEqual({ code: 0, stdout: "", stderr: "" });
    const viaStdin = await keyhole(cwd, ["sign", "-name", "b", "-networks", "10.60.0.2/16"], {
      input: `${PASSPHRASE}\n`,
    });
    expect(viaStdin).toEqual({ code: 0, stdout: "", stderr: "" });
    const verify = await keyhole(cwd, ["verify", "-ca", "ca.crt", "-crt", "b.crt"]);
    expect(verify.code).toBe(0);

    const wrong = await keyhole(cwd, ["sign", "-name", "c", "-networks", "10.60.0.3/16"], {
      input: "battery-staple\n",
    });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/^Error: error while parsing encrypted ca-key: /);
    expect(wrong.stderr).not.toContain("battery-staple");
    await expect(stat(join(cwd, "c.crt"))).rejects.toThrow();

    const none = await keyhole(cwd, ["sign", "-name", "d", "-networks", "10.60.0.4/16"], {
      input: "",
    });
    expect(none.code).toBe(1);
    expect(none.stderr).toBe("Error: cannot open encrypted ca-key without passphrase\n");

    const sharedStdin = await keyhole(
      cwd,
      ["sign", "-name", "e", "-networks", "10.60.0.5/16", "-ca-key", "-"],
      {
        input: keyPem,
      },
    );
    expect(sharedStdin.code).toBe(1);
    expect(sharedStdin.stderr).toMatch(
      /^Error: -ca-key reads stdin, so the passphrase .* set KEYHOLE_CA_PASSPHRASE\n/,
    );
  });

  it("ca -encrypt without a passphrase refuses and writes nothing", async () => {
    const cwd = await folder("encrypted-empty");
    const r = await keyhole(cwd, ["ca", "-name", "x", "-encrypt", ...ARGON], { input: "\n" });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      "Error: no passphrase specified, remove -encrypt flag to write out-key in plaintext\n",
    );
    await expect(stat(join(cwd, "ca.key"))).rejects.toThrow();
    await expect(stat(join(cwd, "ca.crt"))).rejects.toThrow();
  });
});
