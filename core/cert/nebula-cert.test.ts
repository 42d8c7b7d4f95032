/**
 * Cross-check with the real nebula-cert (starts the 1.11 and 1.6.1 binaries): certificates this
 * library signs pass `nebula-cert verify` and print identically with `print -json`; CA keys and
 * encrypted CA keys this library writes are usable by `nebula-cert sign`, whose output this
 * library then reads and verifies.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { describeWith, nebulaCert16, nebulaCert111 } from "../../test/support/tools.ts";
import {
  CaPool,
  type CertVersion,
  type Curve,
  certificateToPem,
  certificateToPrintJson,
  encryptPrivateKeyPem,
  generateCaKeyPair,
  generateHostKeyPair,
  parseCertificatesPem,
  privateKeyToPem,
  publicKeyToPem,
  signCertificate,
  signerFromPrivateKey,
} from "./index.ts";

const work = mkdtempSync(join(tmpdir(), "keyhole-cert-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function run(
  bin: string,
  args: string[],
  env: Record<string, string> = {},
): { ok: boolean; out: string } {
  try {
    const out = execFileSync(bin, args, {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, ...env },
    });
    return { ok: true, out };
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string };
    return { ok: false, out: `${err.stdout ?? ""}${err.stderr ?? ""}` };
  }
}

/** A CA and a host certificate made by this library, valid now, written under `dir`. */
async function issue(dir: string, curve: Curve, version: CertVersion) {
  const now = Date.now();
  const caKeys = await generateCaKeyPair(curve);
  const signer = await signerFromPrivateKey(curve, caKeys.privateKey);
  const ca = await signCertificate(
    {
      version,
      name: `keyhole ca ${curve} v${version}`,
      networks: version === 2 ? ["10.50.0.0/16", "fd00:50::/64"] : ["10.50.0.0/16"],
      unsafeNetworks: ["192.0.2.0/24"],
      groups: ["servers", "ops"],
      isCA: true,
      notBefore: new Date(now - 60_000),
      notAfter: new Date(now + 30 * 86_400_000),
      publicKey: caKeys.publicKey,
      curve,
    },
    null,
    signer,
  );
  const hostKeys = await generateHostKeyPair(curve);
  const host = await signCertificate(
    {
      version,
      name: "web-1",
      networks: version === 2 ? ["fd00:50::7/64", "10.50.1.7/16"] : ["10.50.1.7/16"],
      unsafeNetworks: ["192.0.2.128/25"],
      groups: ["servers"],
      isCA: false,
      notBefore: new Date(now - 30_000),
      notAfter: new Date(now + 86_400_000),
      publicKey: hostKeys.publicKey,
      curve,
    },
    ca,
    signer,
  );
  writeFileSync(join(dir, "ca.crt"), certificateToPem(ca));
  writeFileSync(join(dir, "ca.key"), privateKeyToPem(curve, caKeys.privateKey, true));
  writeFileSync(join(dir, "host.crt"), certificateToPem(host));
  writeFileSync(
    join(dir, "other.pub"),
    publicKeyToPem(curve, (await generateHostKeyPair(curve)).publicKey),
  );
  return { ca, host, caKeys };
}

const COMBOS = [
  ["CURVE25519", 1],
  ["CURVE25519", 2],
  ["P256", 1],
  ["P256", 2],
] as const;

describeWith([nebulaCert111], "nebula-cert 1.11 agrees with core/cert", () => {
  for (const [curve, version] of COMBOS) {
    describe(`${curve} v${version}`, () => {
      const dir = mkdtempSync(join(work, `${curve}-v${version}-`));

      it("verifies and prints our certificates exactly as we do", async () => {
        const { ca, host } = await issue(dir, curve, version);
        const bin = nebulaCert111.path;
        const verify = run(bin, [
          "verify",
          "-ca",
          join(dir, "ca.crt"),
          "-crt",
          join(dir, "host.crt"),
        ]);
        expect(verify.out).toBe("");
        expect(verify.ok).toBe(true);
        for (const [file, cert] of [
          ["ca.crt", ca],
          ["host.crt", host],
        ] as const) {
          const printed = JSON.parse(run(bin, ["print", "-json", "-path", join(dir, file)]).out);
          expect(printed).toEqual([certificateToPrintJson(cert)]);
        }
      });

      it("signs with our CA key; we read and verify what it made", async () => {
        const bin = nebulaCert111.path;
        const out = join(dir, "theirs.crt");
        const r = run(bin, [
          "sign",
          "-ca-crt",
          join(dir, "ca.crt"),
          "-ca-key",
          join(dir, "ca.key"),
          "-in-pub",
          join(dir, "other.pub"),
          "-name",
          "theirs",
          "-networks",
          "10.50.2.2/16",
          "-groups",
          "ops",
          "-duration",
          "1h",
          "-out-crt",
          out,
        ]);
        expect(r.out).toBe("");
        const pool = CaPool.fromPem(readFileSync(join(dir, "ca.crt"), "utf8"));
        const [theirs] = parseCertificatesPem(readFileSync(out, "utf8"));
        if (!theirs) throw new Error("nebula-cert wrote no certificate");
        expect(theirs.version).toBe(version);
        await expect(pool.verify(theirs)).resolves.toBeDefined();
      });
    });
  }

  it("opens an encrypted CA key we wrote", async () => {
    const dir = mkdtempSync(join(work, "encrypted-"));
    const { caKeys } = await issue(dir, "CURVE25519", 2);
    const pem = await encryptPrivateKeyPem("CURVE25519", caKeys.privateKey, "correct-horse", {
      memoryKiB: 1024,
      iterations: 2,
      parallelism: 2,
    });
    writeFileSync(join(dir, "ca.key"), pem);
    const args = [
      "sign",
      "-ca-crt",
      join(dir, "ca.crt"),
      "-ca-key",
      join(dir, "ca.key"),
      "-in-pub",
      join(dir, "other.pub"),
      "-name",
      "enc",
      "-networks",
      "10.50.3.3/16",
      "-out-crt",
      join(dir, "enc.crt"),
    ];
    const wrong = run(nebulaCert111.path, args, { NEBULA_CA_PASSPHRASE: "wrong" });
    expect(wrong.ok).toBe(false);
    const right = run(nebulaCert111.path, args, { NEBULA_CA_PASSPHRASE: "correct-horse" });
    expect(right.out).toBe("");
    expect(right.ok).toBe(true);
  });
});

describeWith([nebulaCert16], "nebula-cert 1.6.1 agrees with core/cert (v1, Curve25519)", () => {
  it("verifies our v1 certificates", async () => {
    const dir = mkdtempSync(join(work, "v16-"));
    await issue(dir, "CURVE25519", 1);
    const r = run(nebulaCert16.path, [
      "verify",
      "-ca",
      join(dir, "ca.crt"),
      "-crt",
      join(dir, "host.crt"),
    ]);
    expect(r.out).toBe("");
    expect(r.ok).toBe(true);
  });

  it("refuses our certificate when the CA differs (the check can fail)", async () => {
    const a = mkdtempSync(join(work, "v16a-"));
    const b = mkdtempSync(join(work, "v16b-"));
    await issue(a, "CURVE25519", 1);
    await issue(b, "CURVE25519", 1);
    const r = run(nebulaCert16.path, [
      "verify",
      "-ca",
      join(a, "ca.crt"),
      "-crt",
      join(b, "host.crt"),
    ]);
    expect(r.ok).toBe(false);
  });
});
