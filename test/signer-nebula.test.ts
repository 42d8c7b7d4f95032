/**
 * Certificates the signer issues are accepted by the real Nebula tools: `nebula-cert verify` 1.11 for
 * v1 and v2 on both curves (IPv6 too for v2), and Debian's 1.6.1 for v1 Curve25519, what many fleets
 * run. The signer runs in process with local custody and a real libSQL file.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, expect, it } from "vitest";
import { hostPublicKeyPem, startTestSigner, type TestSigner } from "../signer/testing.ts";
import { describeWith, nebulaCert16, nebulaCert111 } from "./support/tools.ts";

const run = promisify(execFile);

describeWith([nebulaCert111, nebulaCert16], "signer certificates verified by nebula-cert", () => {
  let s: TestSigner;
  let admin: string;
  let dir: string;

  beforeAll(async () => {
    s = await startTestSigner();
    admin = await s.token();
    dir = mkdtempSync(join(tmpdir(), "keyhole-nebula-"));
  });
  afterAll(async () => {
    await s?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function verify(tool: string, caBundle: string, cert: string): Promise<string> {
    const sub = mkdtempSync(join(dir, "v-"));
    writeFileSync(join(sub, "ca.crt"), caBundle);
    writeFileSync(join(sub, "host.crt"), cert);
    const out = await run(tool, [
      "verify",
      "-ca",
      join(sub, "ca.crt"),
      "-crt",
      join(sub, "host.crt"),
    ]);
    return `${out.stdout}${out.stderr}`;
  }

  async function enrolled(curve: "25519" | "P256", certVersion: 1 | 2, cidrs: string[]) {
    const net = await s.call("POST", "/v1/networks", {
      token: admin,
      body: {
        name: `n-${curve}-v${certVersion}-${cidrs[0]}`,
        cidrs,
        curve,
        certVersion,
        groups: ["web", "db"],
      },
    });
    expect(net.status, JSON.stringify(net.body)).toBe(201);
    const reg = await s.call("POST", `/v1/networks/${net.body.id}/hosts`, {
      token: admin,
      body: { name: "web-1", groups: ["web"] },
    });
    expect(reg.status, JSON.stringify(reg.body)).toBe(201);
    const res = await s.call("POST", "/v1/enroll", {
      body: { code: reg.body.enrollmentCode, publicKey: await hostPublicKeyPem(curve) },
    });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    return { network: net.body, issued: res.body };
  }

  for (const [curve, version] of [
    ["25519", 1],
    ["P256", 1],
    ["25519", 2],
    ["P256", 2],
  ] as const) {
    it(`enrollment certificate (v${version}, ${curve}) passes nebula-cert 1.11 verify`, async () => {
      const { issued } = await enrolled(curve, version, ["10.60.0.0/16"]);
      await verify(nebulaCert111.path, issued.caBundle, issued.certificate);
    });
  }

  it("v1 Curve25519 certificates (enrolled, renewed, directly signed) pass nebula-cert 1.6.1 verify", async () => {
    const { network, issued } = await enrolled("25519", 1, ["10.61.0.0/16"]);
    await verify(nebulaCert16.path, issued.caBundle, issued.certificate);
    const renewed = await s.call("POST", "/v1/renew", { token: issued.hostToken, body: {} });
    expect(renewed.status, JSON.stringify(renewed.body)).toBe(201);
    await verify(nebulaCert16.path, renewed.body.caBundle, renewed.body.certificate);
    const signed = await s.call("POST", `/v1/networks/${network.id}/sign`, {
      token: admin,
      body: {
        publicKey: await hostPublicKeyPem(),
        name: "ci",
        networks: ["10.61.3.3"],
        groups: ["db"],
        duration: "1h",
      },
    });
    expect(signed.status, JSON.stringify(signed.body)).toBe(201);
    await verify(nebulaCert16.path, network.caBundle, signed.body.certificate);
  });

  it("v2 with IPv4 and IPv6 networks, and a rotated CA bundle, pass nebula-cert 1.11 verify", async () => {
    const { network } = await enrolled("25519", 2, ["10.62.0.0/16", "fd00:62::/64"]);
    const signed = await s.call("POST", `/v1/networks/${network.id}/sign`, {
      token: admin,
      body: {
        publicKey: await hostPublicKeyPem(),
        name: "dual",
        networks: ["10.62.0.9", "fd00:62::9"],
      },
    });
    expect(signed.status, JSON.stringify(signed.body)).toBe(201);
    await verify(nebulaCert111.path, network.caBundle, signed.body.certificate);
    const rotated = await s.call("POST", `/v1/networks/${network.id}/ca-rotations`, {
      token: admin,
      body: {},
    });
    expect(rotated.status).toBe(201);
    // The old certificate still verifies against the new bundle (old CA kept), and so does a new one.
    await verify(nebulaCert111.path, rotated.body.caBundle, signed.body.certificate);
    const after = await s.call("POST", `/v1/networks/${network.id}/sign`, {
      token: admin,
      body: { publicKey: await hostPublicKeyPem(), name: "dual2", networks: ["10.62.0.10"] },
    });
    await verify(nebulaCert111.path, rotated.body.caBundle, after.body.certificate);
  });

  it("nebula-cert refuses a certificate against another network's CA (the check can fail)", async () => {
    const one = await enrolled("25519", 2, ["10.63.0.0/16", "fd00:63::/64"]);
    const two = await enrolled("25519", 2, ["10.64.0.0/16", "fd00:64::/64"]);
    await expect(
      verify(nebulaCert111.path, two.issued.caBundle, one.issued.certificate),
    ).rejects.toThrow();
  });
});
