/**
 * `keyhole cert` judged by the real nebula-cert (1.11, and Debian 12's 1.6.1 for v1 Curve25519), both
 * ways, over the matrix v1/v2 x Curve25519/P256 x with/without CA constraints x IPv4/IPv4+IPv6 (v2):
 *   - nebula-cert verifies every certificate keyhole makes, and prints it byte for byte as keyhole does;
 *   - keyhole verifies every certificate nebula-cert makes, and prints it byte for byte as nebula-cert;
 *   - both refuse tampered signatures and certificates outside their CA's constraints.
 * Starts real processes only: `node bin/keyhole.mjs cert ...` and the nebula-cert binaries. CAs are
 * shared across cases and processes run a few at a time (the machines have two cores).
 */
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import {
  type CertificateDetails,
  certificateToPem,
  type NebulaCertificate,
  parseCertificatesPem,
  parsePrivateKeyPem,
  signCertificate,
  signerFromPrivateKey,
} from "../core/cert/index.ts";
import { describeWith, nebulaCert16, nebulaCert111, REPO_ROOT } from "./support/tools.ts";

const KEYHOLE = resolve(REPO_ROOT, "bin/keyhole.mjs");
const FIXTURES = resolve(REPO_ROOT, "test/fixtures/nebula");
const PASSPHRASE = "correct-horse";
const POOL = 3;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(
  file: string,
  args: string[],
  cwd: string,
  env: Record<string, string> = {},
  input = "",
): Promise<Run> {
  return new Promise((done) => {
    const child = execFile(
      file,
      args,
      {
        cwd,
        env: { ...process.env, ...env },
        encoding: "utf8",
        timeout: 60_000,
        maxBuffer: 16 << 20,
      },
      (error, stdout, stderr) => {
        done({
          code: error ? (typeof error.code === "number" ? error.code : -1) : 0,
          stdout,
          stderr,
        });
      },
    );
    // A tool that exits without reading stdin closes the pipe; that is not a failure.
    child.stdin?.on("error", () => {});
    child.stdin?.end(input);
  });
}

const keyhole = (cwd: string, args: string[], env?: Record<string, string>) =>
  run(process.execPath, [KEYHOLE, "cert", ...args], cwd, env);
const nebula111 = (cwd: string, args: string[], env?: Record<string, string>) =>
  run(nebulaCert111.path, args, cwd, env);
const nebula16 = (cwd: string, args: string[]) => run(nebulaCert16.path, args, cwd);

/** Runs tasks at most `limit` at a time, keeping their order in the result. */
async function pooled<T>(tasks: (() => Promise<T>)[], limit = POOL): Promise<T[]> {
  const results: T[] = new Array(tasks.length);
  let next = 0;
  const worker = async () => {
    while (next < tasks.length) {
      const i = next++;
      results[i] = await (tasks[i] as () => Promise<T>)();
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker));
  return results;
}

function ok(r: Run, what: string): Run {
  expect(r.code, `${what}\n${r.stderr}`).toBe(0);
  return r;
}

type Maker = "keyhole" | "nebula";
type Version = 1 | 2;
type CurveFlag = "25519" | "P256";

interface CaCase {
  id: string;
  maker: Maker;
  version: Version;
  curve: CurveFlag;
  constrained: boolean;
  dir: string;
}

interface HostCase {
  id: string;
  ca: CaCase;
  ipv6: boolean;
  dir: string;
}

const VERSIONS: Version[] = [1, 2];
const CURVES: CurveFlag[] = ["25519", "P256"];

function caFlags(c: CaCase): string[] {
  const flags = [
    "-name",
    // <, > and & because Go's JSON escapes them: print must match byte for byte.
    `CA ${c.id} <ops&dev>`,
    "-version",
    String(c.version),
    "-curve",
    c.curve,
    "-duration",
    "24h",
  ];
  if (c.constrained) {
    flags.push("-groups", "servers,ops");
    flags.push("-networks", c.version === 2 ? "10.70.0.0/16,fd00:70::/56" : "10.70.0.0/16");
    flags.push(
      "-unsafe-networks",
      c.version === 2 ? "192.0.2.0/24,2001:db8:70::/48" : "192.0.2.0/24",
    );
  }
  return flags;
}

function hostFlags(h: HostCase, n: number): string[] {
  const networks = h.ipv6 ? `10.70.1.${n}/16,fd00:70::${n.toString(16)}/64` : `10.70.1.${n}/16`;
  const unsafe = h.ipv6 ? "192.0.2.128/25,2001:db8:70:1::/64" : "192.0.2.128/25";
  return [
    "-name",
    `host-${h.id}`,
    "-networks",
    networks,
    "-groups",
    "servers",
    "-unsafe-networks",
    unsafe,
    "-duration",
    "1h",
    "-ca-crt",
    join(h.ca.dir, "ca.crt"),
    "-ca-key",
    join(h.ca.dir, "ca.key"),
    "-out-crt",
    "host.crt",
  ];
}

describeWith([nebulaCert111, nebulaCert16], "keyhole cert and the real nebula-cert agree", () => {
  let root: string;
  const cas: CaCase[] = [];
  const hosts: HostCase[] = [];
  const byMaker = (m: Maker) => hosts.filter((h) => h.ca.maker === m);

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), "keyhole-crosscheck-"));
    for (const maker of ["keyhole", "nebula"] as Maker[]) {
      for (const version of VERSIONS) {
        for (const curve of CURVES) {
          for (const constrained of [false, true]) {
            const id = `${maker}-v${version}-${curve}${constrained ? "-constrained" : ""}`;
            const ca: CaCase = { id, maker, version, curve, constrained, dir: join(root, id) };
            cas.push(ca);
            for (const ipv6 of version === 2 ? [false, true] : [false]) {
              const hid = `${id}${ipv6 ? "-ipv6" : ""}`;
              hosts.push({ id: hid, ca, ipv6, dir: join(root, "hosts", hid) });
            }
          }
        }
      }
    }
    for (const d of [...cas.map((c) => c.dir), ...hosts.map((h) => h.dir)])
      await mkdir(d, { recursive: true });

    // Host public keys: keyhole's for nebula-cert to sign, nebula-cert's for keyhole to sign.
    const keys = join(root, "keys");
    await mkdir(keys);
    await pooled(
      CURVES.flatMap((curve) => [
        async () =>
          ok(
            await keyhole(keys, [
              "keygen",
              "-curve",
              curve,
              "-out-key",
              `kh-${curve}.key`,
              "-out-pub",
              `kh-${curve}.pub`,
            ]),
            "keyhole keygen",
          ),
        async () =>
          ok(
            await nebula111(keys, [
              "keygen",
              "-curve",
              curve,
              "-out-key",
              `nb-${curve}.key`,
              "-out-pub",
              `nb-${curve}.pub`,
            ]),
            "nebula keygen",
          ),
      ]),
    );

    await pooled(
      cas.map((ca) => async () => {
        const tool = ca.maker === "keyhole" ? keyhole : nebula111;
        ok(await tool(ca.dir, ["ca", ...caFlags(ca)]), `${ca.maker} ca ${ca.id}`);
      }),
    );
    await pooled(
      hosts.map((h, i) => async () => {
        const pub = join(keys, `${h.ca.maker === "keyhole" ? "nb" : "kh"}-${h.ca.curve}.pub`);
        const tool = h.ca.maker === "keyhole" ? keyhole : nebula111;
        ok(
          await tool(h.dir, ["sign", ...hostFlags(h, i + 1), "-in-pub", pub]),
          `${h.ca.maker} sign ${h.id}`,
        );
      }),
    );
  }, 240_000);

  afterAll(async () => {
    if (root) await rm(root, { recursive: true, force: true });
  });

  const bundle = async (paths: string[]) =>
    (await Promise.all(paths.map((p) => readFile(p, "utf8")))).join("");

  it("nebula-cert 1.11 verifies every host cert keyhole makes (and loads every keyhole CA)", async () => {
    const runs = await pooled(
      byMaker("keyhole").map(
        (h) => () =>
          nebula111(h.dir, ["verify", "-ca", join(h.ca.dir, "ca.crt"), "-crt", "host.crt"]),
      ),
    );
    runs.forEach((r, i) => {
      expect({ host: byMaker("keyhole")[i]?.id, ...r }).toEqual({
        host: byMaker("keyhole")[i]?.id,
        code: 0,
        stdout: "",
        stderr: "",
      });
    });
    expect(runs.length).toBe(12);
  }, 240_000);

  it("nebula-cert 1.6.1 verifies keyhole's v1 Curve25519 certs", async () => {
    const v1x = byMaker("keyhole").filter((h) => h.ca.version === 1 && h.ca.curve === "25519");
    expect(v1x.length).toBe(2);
    for (const h of v1x) {
      const r = await nebula16(h.dir, [
        "verify",
        "-ca",
        join(h.ca.dir, "ca.crt"),
        "-crt",
        "host.crt",
      ]);
      expect({ host: h.id, ...r }).toEqual({ host: h.id, code: 0, stdout: "", stderr: "" });
    }
  }, 240_000);

  it("nebula-cert prints keyhole's certs exactly as keyhole cert print does (JSON and text)", async () => {
    const mine = byMaker("keyhole");
    const path = join(root, "keyhole-made.crt");
    await writeFile(
      path,
      await bundle([
        ...cas.filter((c) => c.maker === "keyhole").map((c) => join(c.dir, "ca.crt")),
        ...mine.map((h) => join(h.dir, "host.crt")),
      ]),
    );
    const [theirs, ours, theirsText, oursText] = await Promise.all([
      nebula111(root, ["print", "-json", "-path", path]),
      keyhole(root, ["print", "-json", "-path", path]),
      nebula111(root, ["print", "-path", path]),
      keyhole(root, ["print", "-path", path]),
    ]);
    ok(theirs, "nebula print");
    ok(ours, "keyhole print");
    expect((JSON.parse(theirs.stdout) as unknown[]).length).toBe(8 + 12);
    expect(ours.stdout).toBe(theirs.stdout);
    expect(oursText.stdout).toBe(theirsText.stdout);
  }, 240_000);

  it("keyhole cert verify accepts every host cert nebula-cert 1.11 makes", async () => {
    // One process: -ca holds every nebula-made CA, -crt every nebula-made host cert; keyhole names
    // each cert it refuses, so a failure still says which case it was.
    const theirs = byMaker("nebula");
    expect(theirs.length).toBe(12);
    const caBundle = join(root, "nebula-cas.crt");
    const hostBundle = join(root, "nebula-hosts.crt");
    await writeFile(
      caBundle,
      await bundle(cas.filter((c) => c.maker === "nebula").map((c) => join(c.dir, "ca.crt"))),
    );
    await writeFile(hostBundle, await bundle(theirs.map((h) => join(h.dir, "host.crt"))));
    expect(await keyhole(root, ["verify", "-ca", caBundle, "-crt", hostBundle])).toEqual({
      code: 0,
      stdout: "",
      stderr: "",
    });
    // The pool is not what makes them pass: against one unrelated CA, every one is refused by name.
    const stranger = cas.find((c) => c.maker === "keyhole") as CaCase;
    const refused = await keyhole(root, [
      "verify",
      "-ca",
      join(stranger.dir, "ca.crt"),
      "-crt",
      hostBundle,
    ]);
    expect(refused.code).toBe(1);
    for (const h of theirs) expect(refused.stderr).toContain(`host-${h.id} with issuer`);
  }, 240_000);

  it("keyhole cert verify and print accept nebula-cert 1.6.1's certs and the committed fixtures", async () => {
    const old = join(root, "nebula-1.6");
    await mkdir(old);
    ok(
      await nebula16(old, [
        "ca",
        "-name",
        "Old CA",
        "-duration",
        "24h",
        "-groups",
        "servers",
        "-ips",
        "10.71.0.0/16",
        "-subnets",
        "192.0.2.0/24",
      ]),
      "1.6.1 ca",
    );
    ok(
      await nebula16(old, [
        "sign",
        "-name",
        "old-host",
        "-ip",
        "10.71.0.5/16",
        "-groups",
        "servers",
        "-subnets",
        "192.0.2.0/25",
        "-duration",
        "1h",
      ]),
      "1.6.1 sign",
    );
    const fixtureCases = [
      "v1-25519",
      "v1-p256",
      "v2-25519",
      "v2-p256",
      "v1-25519-nebula-1.6",
      "encrypted-ca-25519",
    ];
    // One process for all of them (see above): 1.6.1's pair and every committed fixture.
    const caBundle = join(root, "old-and-fixture-cas.crt");
    const hostBundle = join(root, "old-and-fixture-hosts.crt");
    await writeFile(
      caBundle,
      await bundle([join(old, "ca.crt"), ...fixtureCases.map((c) => join(FIXTURES, c, "ca.crt"))]),
    );
    await writeFile(
      hostBundle,
      await bundle([
        join(old, "old-host.crt"),
        ...fixtureCases.map((c) => join(FIXTURES, c, "host.crt")),
      ]),
    );
    expect(await keyhole(root, ["verify", "-ca", caBundle, "-crt", hostBundle])).toEqual({
      code: 0,
      stdout: "",
      stderr: "",
    });

    const path = join(root, "nebula-made.crt");
    await writeFile(
      path,
      await bundle([
        ...cas.filter((c) => c.maker === "nebula").map((c) => join(c.dir, "ca.crt")),
        ...byMaker("nebula").map((h) => join(h.dir, "host.crt")),
        join(old, "ca.crt"),
        join(old, "old-host.crt"),
        ...fixtureCases.flatMap((c) => [
          join(FIXTURES, c, "ca.crt"),
          join(FIXTURES, c, "host.crt"),
        ]),
      ]),
    );
    const [theirs, ours, theirsText, oursText] = await Promise.all([
      nebula111(root, ["print", "-json", "-path", path]),
      keyhole(root, ["print", "-json", "-path", path]),
      nebula111(root, ["print", "-path", path]),
      keyhole(root, ["print", "-path", path]),
    ]);
    ok(theirs, "nebula print");
    ok(ours, "keyhole print");
    expect((JSON.parse(theirs.stdout) as unknown[]).length).toBe(8 + 12 + 2 + 12);
    expect(ours.stdout).toBe(theirs.stdout);
    expect(oursText.stdout).toBe(theirsText.stdout);
    for (const c of fixtureCases) {
      const one = await readFile(join(FIXTURES, c, "host.print.json"), "utf8");
      expect(ours.stdout).toContain(
        (JSON.parse(one) as unknown[]).map((x) => JSON.stringify(x))[0],
      );
    }
  }, 240_000);

  it("encrypted CA keys cross over: each tool signs with the other's encrypted key", async () => {
    const dir = join(root, "encrypted");
    await mkdir(dir);
    const made = await run(
      process.execPath,
      [
        KEYHOLE,
        "cert",
        "ca",
        "-name",
        "Sealed",
        "-encrypt",
        "-argon-memory",
        "1024",
        "-argon-iterations",
        "2",
        "-argon-parallelism",
        "1",
      ],
      dir,
      {},
      `${PASSPHRASE}\n`,
    );
    ok(made, "keyhole ca -encrypt");
    ok(
      await nebula111(dir, ["sign", "-name", "by-nebula", "-networks", "10.72.0.1/16"], {
        NEBULA_CA_PASSPHRASE: PASSPHRASE,
      }),
      "nebula-cert sign with keyhole's encrypted key",
    );
    ok(await nebula111(dir, ["verify", "-ca", "ca.crt", "-crt", "by-nebula.crt"]), "nebula verify");

    const fixture = join(FIXTURES, "encrypted-ca-25519");
    const signed = await keyhole(
      dir,
      [
        "sign",
        "-name",
        "by-keyhole",
        "-networks",
        "10.47.0.9/16",
        "-ca-crt",
        join(fixture, "ca.crt"),
        "-ca-key",
        join(fixture, "ca.key"),
      ],
      { KEYHOLE_CA_PASSPHRASE: PASSPHRASE },
    );
    ok(signed, "keyhole sign with nebula-cert's encrypted key");
    ok(
      await nebula111(dir, ["verify", "-ca", join(fixture, "ca.crt"), "-crt", "by-keyhole.crt"]),
      "nebula verify",
    );
    const wrong = await nebula111(dir, ["sign", "-name", "nope", "-networks", "10.72.0.2/16"], {
      NEBULA_CA_PASSPHRASE: "wrong",
    });
    expect(wrong.code).toBe(1);
  }, 240_000);

  it("both refuse a tampered signature, on certs made by either tool", async () => {
    const tamperedDir = join(root, "tampered");
    await mkdir(tamperedDir);
    const picks = hosts.filter((h) => !h.ca.constrained && !h.ipv6);
    expect(picks.length).toBe(8);
    const files: { path: string; ca: string; id: string }[] = [];
    for (const h of picks) {
      const pem = await readFile(join(h.dir, "host.crt"), "utf8");
      const [cert] = parseCertificatesPem(pem);
      if (!cert) throw new Error(`no cert in ${h.id}`);
      const raw = cert.raw.slice();
      // The signature is the last field of both encodings; flip a bit of its last byte.
      raw[raw.length - 1] = (raw[raw.length - 1] as number) ^ 0x01;
      const path = join(tamperedDir, `${h.id}.crt`);
      await writeFile(path, pemOf(cert.version, raw));
      files.push({ path, ca: join(h.ca.dir, "ca.crt"), id: h.id });
    }
    const theirs = await pooled(
      files.map((f) => () => nebula111(root, ["verify", "-ca", f.ca, "-crt", f.path])),
    );
    theirs.forEach((r, i) => {
      expect(r.code, `nebula-cert accepted tampered ${files[i]?.id}`).toBe(1);
      expect(r.stderr).toMatch(/signature/i);
    });
    // keyhole: one process, every CA in -ca and every tampered cert in -crt; one refusal line each.
    const caBundle = join(tamperedDir, "cas.crt");
    const crtBundle = join(tamperedDir, "all.crt");
    await writeFile(caBundle, await bundle([...new Set(files.map((f) => f.ca))]));
    await writeFile(crtBundle, await bundle(files.map((f) => f.path)));
    const ours = await keyhole(root, ["verify", "-ca", caBundle, "-crt", crtBundle]);
    expect(ours.code).toBe(1);
    const lines = ours.stderr.trim().split("\n");
    expect(lines.length, ours.stderr).toBe(files.length);
    for (const f of files) {
      const line = lines.find((l) => l.includes(`host-${f.id} with issuer`));
      expect(line, `keyhole accepted tampered ${f.id}`).toMatch(/signature/i);
    }
  }, 240_000);

  it("both refuse certs outside their CA's constraints (groups, networks, unsafe networks, validity)", async () => {
    const outside = join(root, "outside");
    await mkdir(outside);
    const constrained = cas.filter((c) => c.constrained);
    expect(constrained.length).toBe(8);
    const violations: {
      name: string;
      change: Partial<CertificateDetails>;
      nebula: RegExp;
      keyhole: RegExp;
    }[] = [
      {
        name: "group",
        change: { groups: ["servers", "intruders"] },
        nebula: /group not present on the signing ca/,
        keyhole: /group "intruders" is not allowed by the CA/,
      },
      {
        name: "network",
        change: { networks: ["10.99.0.1/16"] },
        nebula: /network assignment outside the limitations/,
        keyhole: /network 10\.99\.0\.1\/16 is outside the CA's networks/,
      },
      {
        name: "unsafe",
        change: { unsafeNetworks: ["198.51.100.0/24"] },
        nebula: /unsafe network assignment outside the limitations/,
        keyhole: /unsafe network 198\.51\.100\.0\/24 is outside the CA's unsafe networks/,
      },
      {
        name: "validity",
        change: { notAfter: new Date(Date.now() + 48 * 3600_000) },
        nebula: /expires after signing certificate/,
        keyhole: /expire after its CA/,
      },
    ];
    const files: { path: string; ca: string; id: string; nebula: RegExp }[] = [];
    for (const ca of constrained) {
      const [caCert] = parseCertificatesPem(await readFile(join(ca.dir, "ca.crt"), "utf8"));
      if (!caCert) throw new Error(`no CA cert in ${ca.id}`);
      const { curve, privateKey } = parsePrivateKeyPem(
        await readFile(join(ca.dir, "ca.key"), "utf8"),
      );
      const signer = await signerFromPrivateKey(curve, privateKey);
      const hostPub = parseCertificatesPem(
        await readFile(join(root, "hosts", ca.id, "host.crt"), "utf8"),
      )[0]?.publicKey;
      if (!hostPub) throw new Error(`no host cert for ${ca.id}`);
      const now = new Date(Math.floor(Date.now() / 1000) * 1000);
      for (const v of violations) {
        const details: Omit<CertificateDetails, "issuer"> = {
          version: ca.version,
          name: `outside-${v.name}`,
          networks: ["10.70.2.1/16"],
          unsafeNetworks: [],
          groups: ["servers"],
          isCA: false,
          notBefore: now,
          notAfter: new Date(now.getTime() + 3600_000),
          publicKey: hostPub,
          curve: caCert.curve,
          ...v.change,
        };
        const cert = await signOutsideConstraints(details, caCert, signer);
        const path = join(outside, `${ca.id}-${v.name}.crt`);
        await writeFile(path, certificateToPem(cert));
        files.push({
          path,
          ca: join(ca.dir, "ca.crt"),
          id: `${ca.id}-${v.name}`,
          nebula: v.nebula,
        });
      }
      privateKey.fill(0);
    }
    const runs = await pooled(
      files.map((f) => () => nebula111(root, ["verify", "-ca", f.ca, "-crt", f.path])),
    );
    runs.forEach((r, i) => {
      const f = files[i] as (typeof files)[number];
      expect(r.code, `nebula-cert accepted ${f.id}`).toBe(1);
      expect(r.stderr, f.id).toMatch(f.nebula);
    });
    // keyhole: one process per CA, each -crt holding that CA's four violations (one error line each).
    const ours = await pooled(
      constrained.map((ca) => async () => {
        const mine = files.filter((f) => f.ca === join(ca.dir, "ca.crt"));
        const path = join(outside, `${ca.id}-all.crt`);
        await writeFile(path, await bundle(mine.map((f) => f.path)));
        return keyhole(root, ["verify", "-ca", join(ca.dir, "ca.crt"), "-crt", path]);
      }),
    );
    ours.forEach((r, i) => {
      expect(r.code, `keyhole accepted a cert outside ${constrained[i]?.id}`).toBe(1);
      const lines = r.stderr.trim().split("\n");
      expect(lines.length, r.stderr).toBe(violations.length);
      for (const v of violations) {
        const line = lines.find((l) => l.includes(`outside-${v.name} with issuer`));
        expect(line, `${constrained[i]?.id}: ${v.name}`).toMatch(v.keyhole);
      }
    });
  }, 240_000);
});

/**
 * Signs details that the CA's constraints forbid, which signCertificate rightly refuses, by handing it
 * a copy of the CA without constraints and with a longer life. The issuer is still the real CA's
 * fingerprint, so the result is exactly the cert a misbehaving signer would produce.
 */
async function signOutsideConstraints(
  details: Omit<CertificateDetails, "issuer">,
  ca: NebulaCertificate,
  signer: Awaited<ReturnType<typeof signerFromPrivateKey>>,
): Promise<NebulaCertificate> {
  const relaxed: NebulaCertificate = {
    ...ca,
    groups: [],
    networks: [],
    unsafeNetworks: [],
    notAfter: new Date(ca.notAfter.getTime() + 365 * 86400_000),
  };
  const cert = await signCertificate(details, relaxed, signer);
  expect(cert.issuer).toBe(ca.fingerprint);
  return cert;
}

function pemOf(version: 1 | 2, raw: Uint8Array): string {
  const banner = version === 1 ? "NEBULA CERTIFICATE" : "NEBULA CERTIFICATE V2";
  const b64 = Buffer.from(raw)
    .toString("base64")
    .replace(/(.{64})/g, "$1\n")
    .replace(/\n$/, "");
  return `-----BEGIN ${banner}-----\n${b64}\n-----END ${banner}-----\n`;
}
