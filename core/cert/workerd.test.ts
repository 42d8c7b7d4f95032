/**
 * core/cert runs unchanged on workerd (starts workerd through Miniflare): the library is bundled
 * for a neutral platform (no Node built-ins, no eval), then signs, encodes, parses and verifies
 * certificates of both versions and curves inside a worker.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { build } from "esbuild";
import { Miniflare } from "miniflare";
import { afterAll, describe, expect, it } from "vitest";
import { REPO_ROOT } from "../../test/support/tools.ts";

const dir = mkdtempSync(join(tmpdir(), "keyhole-cert-workerd-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const ENTRY = `
import { CaPool, certificateToPem, generateCaKeyPair, generateHostKeyPair, parseCertificatesPem,
  signCertificate, signerFromPrivateKey, CertError } from ${JSON.stringify(resolve(REPO_ROOT, "core/cert/index.ts"))};
export default {
  async fetch() {
    const out = [];
    const T0 = new Date("2030-01-01T00:00:00Z");
    for (const curve of ["CURVE25519", "P256"]) for (const version of [1, 2]) {
      const k = await generateCaKeyPair(curve);
      const signer = await signerFromPrivateKey(curve, k.privateKey);
      const ca = await signCertificate({ version, name: "ca", networks: ["10.0.0.0/8"], unsafeNetworks: [],
        groups: ["a"], isCA: true, notBefore: T0, notAfter: new Date(T0.getTime() + 1e10),
        publicKey: k.publicKey, curve }, null, signer);
      const h = await generateHostKeyPair(curve);
      const host = await signCertificate({ version, name: "h", networks: ["10.1.2.3/8"], unsafeNetworks: [],
        groups: ["a"], isCA: false, notBefore: new Date(T0.getTime() + 1000),
        notAfter: new Date(T0.getTime() + 1e9), publicKey: h.publicKey, curve }, ca, signer);
      const back = parseCertificatesPem(certificateToPem(host))[0];
      const pool = CaPool.fromPem(certificateToPem(ca));
      const verified = await pool.verify(back, { now: new Date(T0.getTime() + 5000) });
      let refused = "";
      try { await pool.verify({ ...back, name: "x" }, { now: new Date(T0.getTime() + 5000) }); }
      catch (e) { refused = e instanceof CertError ? e.code : String(e); }
      out.push(curve + " v" + version + " " + (verified.fingerprint === ca.fingerprint ? "ok" : "BAD") + " " + refused);
    }
    return new Response(out.join("\\n"));
  },
};
`;

describe("core/cert on workerd", () => {
  it("signs, parses and verifies both versions and curves inside a worker", async () => {
    const entry = join(dir, "entry.js");
    writeFileSync(entry, ENTRY);
    const bundle = await build({
      entryPoints: [entry],
      bundle: true,
      platform: "neutral",
      format: "esm",
      mainFields: ["module", "main"],
      write: false,
      logLevel: "silent",
    });
    const script = bundle.outputFiles[0]?.text ?? "";
    expect(script).not.toMatch(/\bnew Function\(|\beval\(/);
    const mf = new Miniflare({ modules: true, script, compatibilityDate: "2025-01-01" });
    try {
      const res = await mf.dispatchFetch("http://worker/");
      expect(res.status).toBe(200);
      expect((await res.text()).split("\n")).toEqual([
        "CURVE25519 v1 ok bad_signature",
        "CURVE25519 v2 ok bad_signature",
        "P256 v1 ok bad_signature",
        "P256 v2 ok bad_signature",
      ]);
    } finally {
      await mf.dispose();
    }
  });
});
