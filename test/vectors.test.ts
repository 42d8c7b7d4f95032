/**
 * Certificates and keys made by the real nebula-cert (1.11 and 1.6.1) read back by core/cert:
 * byte-exact re-encoding and PEM, every field and fingerprint equal to `nebula-cert print -json`,
 * verification against the CA, keys that parse and belong together, the encrypted CA key opened
 * with its passphrase, and a foreign CA refused. Runs over ../shared/vectors and the committed
 * test/fixtures/nebula (same layout), whichever exist.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { x25519 } from "@noble/curves/ed25519.js";
import { p256 } from "@noble/curves/nist.js";
import { describe, expect, it } from "vitest";
import {
  CaPool,
  CertError,
  certificateToPem,
  certificateToPrintJson,
  decryptPrivateKeyPem,
  encodeCertificate,
  isEncryptedPrivateKeyPem,
  type NebulaCertificate,
  parseCertificatesPem,
  parsePrivateKeyPem,
  parsePublicKeyPem,
  privateKeyToPem,
  publicKeyToPem,
  signCertificate,
  signerFromPrivateKey,
} from "../core/cert/index.ts";
import { REPO_ROOT } from "./support/tools.ts";

const ROOTS = [resolve(REPO_ROOT, "../shared/vectors"), resolve(REPO_ROOT, "test/fixtures/nebula")];

interface VectorCase {
  root: string;
  name: string;
  dir: string;
}

const cases: VectorCase[] = [];
for (const root of ROOTS) {
  if (!existsSync(root)) {
    console.warn(`*** vectors folder ${root} is absent: its cases are not checked here`);
    continue;
  }
  for (const name of readdirSync(root).sort()) {
    const dir = join(root, name);
    if (existsSync(join(dir, "ca.crt"))) cases.push({ root, name, dir });
  }
}

const read = (c: VectorCase, file: string) => readFileSync(join(c.dir, file), "utf8");
const has = (c: VectorCase, file: string) => existsSync(join(c.dir, file));
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

function passphraseOf(c: VectorCase): string | undefined {
  if (!has(c, "meta.txt")) return undefined;
  return /^passphrase: (.+)$/m.exec(read(c, "meta.txt"))?.[1]?.trim();
}

/** 1.11 prints a JSON array of certificates; 1.6.1 printed one object in its own older shape. */
function expectPrintJson(cert: NebulaCertificate, printed: unknown): void {
  if (Array.isArray(printed)) {
    expect(printed).toHaveLength(1);
    expect(certificateToPrintJson(cert)).toEqual(printed[0]);
    return;
  }
  const p = printed as {
    details: Record<string, unknown>;
    fingerprint: string;
    signature: string;
  };
  expect(cert.version).toBe(1);
  expect(cert.name).toBe(p.details.name);
  expect(cert.networks).toEqual(p.details.ips);
  expect(cert.unsafeNetworks).toEqual(p.details.subnets);
  expect(cert.groups).toEqual(p.details.groups);
  expect(cert.isCA).toBe(p.details.isCa);
  expect(cert.issuer).toBe(p.details.issuer);
  expect(cert.notBefore.toISOString().replace(".000Z", "Z")).toBe(p.details.notBefore);
  expect(cert.notAfter.toISOString().replace(".000Z", "Z")).toBe(p.details.notAfter);
  expect(hex(cert.publicKey)).toBe(p.details.publicKey);
  expect(cert.fingerprint).toBe(p.fingerprint);
  expect(hex(cert.signature)).toBe(p.signature);
}

function hostPublicKeyOf(curve: string, privateKey: Uint8Array): Uint8Array {
  return curve === "CURVE25519"
    ? x25519.getPublicKey(privateKey)
    : p256.getPublicKey(privateKey, false);
}

describe("nebula-cert vectors", () => {
  it("finds vector cases", () => {
    if (cases.length === 0) console.warn("*** no vector folders found: nothing was checked");
    expect(cases.length).toBeGreaterThan(0);
  });

  for (const c of cases) {
    describe(`${c.root.endsWith("vectors") ? "shared" : "fixtures"}/${c.name}`, () => {
      const caPem = read(c, "ca.crt");

      it("CA decodes, re-encodes to the same bytes and PEM, and matches print -json", () => {
        const [ca, ...rest] = parseCertificatesPem(caPem);
        expect(rest).toHaveLength(0);
        if (!ca) throw new Error("no CA");
        expect(ca.isCA).toBe(true);
        expect(ca.issuer).toBe("");
        expect(encodeCertificate(ca)).toEqual(ca.raw);
        expect(certificateToPem(ca)).toBe(caPem);
        if (has(c, "ca.print.json")) expectPrintJson(ca, JSON.parse(read(c, "ca.print.json")));
        // A pool accepts it (self-signature verifies).
        expect(
          CaPool.fromPem(caPem)
            .list()
            .map((x) => x.fingerprint),
        ).toEqual([ca.fingerprint]);
      });

      it("CA private key parses (or opens with its passphrase) and belongs to the CA", async () => {
        const [ca] = parseCertificatesPem(caPem);
        if (!ca) throw new Error("no CA");
        const keyPem = read(c, "ca.key");
        let privateKey: Uint8Array;
        if (isEncryptedPrivateKeyPem(keyPem)) {
          const pass = passphraseOf(c);
          expect(pass, "an encrypted CA key needs `passphrase:` in meta.txt").toBeDefined();
          const opened = await decryptPrivateKeyPem(keyPem, pass as string);
          expect(opened.curve).toBe(ca.curve);
          privateKey = opened.privateKey;
          await expect(decryptPrivateKeyPem(keyPem, `${pass}!`)).rejects.toMatchObject({
            code: "wrong_passphrase",
          });
        } else {
          const parsed = parsePrivateKeyPem(keyPem);
          expect(parsed).toMatchObject({ curve: ca.curve, isCA: true });
          expect(privateKeyToPem(parsed.curve, parsed.privateKey, true)).toBe(keyPem);
          privateKey = parsed.privateKey;
        }
        const signer = await signerFromPrivateKey(ca.curve, privateKey);
        expect(hex(signer.publicKey)).toBe(hex(ca.publicKey));
      });

      if (!has(c, "host.crt")) return;
      const hostPem = read(c, "host.crt");

      it("host certificate decodes, re-encodes exactly and matches print -json", () => {
        const [host] = parseCertificatesPem(hostPem);
        if (!host) throw new Error("no host certificate");
        expect(host.isCA).toBe(false);
        expect(encodeCertificate(host)).toEqual(host.raw);
        expect(certificateToPem(host)).toBe(hostPem);
        if (has(c, "host.print.json"))
          expectPrintJson(host, JSON.parse(read(c, "host.print.json")));
      });

      it("host certificate verifies against its CA", async () => {
        const pool = CaPool.fromPem(caPem);
        const [host] = parseCertificatesPem(hostPem);
        if (!host) throw new Error("no host certificate");
        const now = new Date(host.notBefore.getTime() + 86_400_000);
        const ca = await pool.verify(host, { now });
        expect(ca.fingerprint).toBe(host.issuer);
        if (has(c, "host.verify.txt")) expect(read(c, "host.verify.txt").trim()).toBe("ok");
      });

      it("host keys parse, belong together and to the certificate", () => {
        const [host] = parseCertificatesPem(hostPem);
        if (!host) throw new Error("no host certificate");
        if (has(c, "host.pub")) {
          const pubPem = read(c, "host.pub");
          const pub = parsePublicKeyPem(pubPem);
          expect(pub.curve).toBe(host.curve);
          expect(hex(pub.publicKey)).toBe(hex(host.publicKey));
          expect(publicKeyToPem(pub.curve, pub.publicKey)).toBe(pubPem);
        }
        if (has(c, "host.key")) {
          const keyPem = read(c, "host.key");
          const key = parsePrivateKeyPem(keyPem);
          expect(key).toMatchObject({ curve: host.curve, isCA: false });
          expect(privateKeyToPem(key.curve, key.privateKey, false)).toBe(keyPem);
          expect(hex(hostPublicKeyOf(key.curve, key.privateKey))).toBe(hex(host.publicKey));
        }
      });

      it("a CA from another case is refused", async () => {
        const other = cases.find((o) => o.dir !== c.dir && read(o, "ca.crt") !== caPem);
        if (!other) return;
        const [host] = parseCertificatesPem(hostPem);
        if (!host) throw new Error("no host certificate");
        const pool = CaPool.fromPem(read(other, "ca.crt"));
        const now = new Date(host.notBefore.getTime() + 86_400_000);
        const err = await pool.verify(host, { now }).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(CertError);
        expect((err as CertError).code).toBe("ca_not_found");
      });

      it("the vector CA key signs a new host certificate that verifies", async () => {
        const [ca] = parseCertificatesPem(caPem);
        const [host] = parseCertificatesPem(hostPem);
        if (!ca || !host || !has(c, "ca.key") || isEncryptedPrivateKeyPem(read(c, "ca.key")))
          return;
        const signer = await signerFromPrivateKey(
          ca.curve,
          parsePrivateKeyPem(read(c, "ca.key")).privateKey,
        );
        const again = await signCertificate(
          {
            version: host.version,
            name: `${host.name}-again`,
            networks: host.networks,
            unsafeNetworks: host.unsafeNetworks,
            groups: host.groups,
            isCA: false,
            notBefore: host.notBefore,
            notAfter: host.notAfter,
            publicKey: host.publicKey,
            curve: host.curve,
          },
          ca,
          signer,
        );
        const pool = CaPool.fromPem(caPem);
        await expect(
          pool.verify(again, { now: new Date(host.notBefore.getTime() + 1000) }),
        ).resolves.toBe(pool.get(ca.fingerprint));
        expect(parseCertificatesPem(certificateToPem(again))[0]?.fingerprint).toBe(
          again.fingerprint,
        );
      });
    });
  }
});
