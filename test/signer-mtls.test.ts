/**
 * Invariant 4 against the real process: `bun signer/main.ts` with a dev relay PKI. Only a client
 * certificate from the relay CA gets an HTTP answer; no certificate, a foreign CA's certificate and
 * an expired one are refused on every one of 50 attempts each. Also drives one whole enrollment over
 * mTLS to prove the entry wires store, custody and OIDC together.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Agent, request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type DevIssuer, startDevIssuer } from "../cli/dev/issuer.ts";
import { makeRelayPki, type RelayPki } from "../cli/dev/pki.ts";
import { parseCertificatesPem } from "../core/cert/index.ts";
import { type BunSigner, hostPublicKeyPem, startBunSigner } from "../signer/testing.ts";

let dir: string;
let pki: RelayPki;
let issuer: DevIssuer;
let signer: BunSigner;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "keyhole-mtls-"));
  pki = await makeRelayPki(join(dir, "pki"));
  issuer = await startDevIssuer({ audience: "keyhole" });
  signer = await startBunSigner({
    KEYHOLE_REGION: "test-a",
    KEYHOLE_DB_URL: `file:${join(dir, "signer.db")}`,
    KEYHOLE_KMS: "local",
    KEYHOLE_DATA_DIR: join(dir, "data"),
    KEYHOLE_SIGNER_HOST: "127.0.0.1",
    KEYHOLE_SIGNER_PORT: "0",
    KEYHOLE_TLS_CERT: pki.serverCert,
    KEYHOLE_TLS_KEY: pki.serverKey,
    KEYHOLE_TLS_CLIENT_CA: pki.caCert,
    KEYHOLE_OIDC_ISSUERS: issuer.issuer,
    KEYHOLE_OIDC_AUDIENCE: "keyhole",
  });
});

afterAll(async () => {
  await signer?.stop();
  await issuer?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function agentWith(cert?: string, key?: string): Agent {
  return new Agent({
    connect: {
      ca: readFileSync(pki.caCert),
      ...(cert && key ? { cert: readFileSync(cert), key: readFileSync(key) } : {}),
      servername: "localhost",
    },
    pipelining: 0,
  });
}

async function attempt(
  agent: Agent,
  path = "/v1/health",
  init: { method?: "GET" | "POST"; headers?: Record<string, string>; body?: string } = {},
) {
  const res = await request(`${signer.url}${path}`, {
    dispatcher: agent,
    method: init.method ?? "GET",
    ...(init.headers ? { headers: init.headers } : {}),
    ...(init.body !== undefined ? { body: init.body } : {}),
    headersTimeout: 5000,
    bodyTimeout: 5000,
  });
  const text = await res.body.text();
  return { status: res.statusCode, text };
}

describe("signer over mutual TLS (real Bun process)", () => {
  it("prints a ready line with its region and URL", () => {
    expect(signer.lines.find((l) => l.msg === "signer ready")).toMatchObject({ region: "test-a" });
    expect(signer.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
  });

  it("answers a relay client certificate, 50 times out of 50", async () => {
    for (let i = 0; i < 50; i++) {
      const agent = agentWith(pki.clientCert, pki.clientKey);
      const res = await attempt(agent);
      expect(res.status).toBe(200);
      await agent.close();
    }
  });

  for (const kind of [
    "no certificate",
    "a foreign CA's certificate",
    "an expired certificate",
  ] as const) {
    it(`refuses ${kind}, 50 times out of 50`, async () => {
      const files =
        kind === "no certificate"
          ? []
          : kind === "an expired certificate"
            ? [pki.expiredClientCert, pki.expiredClientKey]
            : [pki.foreignClientCert, pki.foreignClientKey];
      let refused = 0;
      for (let i = 0; i < 50; i++) {
        const agent = agentWith(files[0], files[1]);
        try {
          const res = await attempt(agent);
          throw new Error(`answered HTTP ${res.status} to a client with ${kind}`);
        } catch (e) {
          if ((e as Error).message.startsWith("answered HTTP")) throw e;
          refused++;
        } finally {
          await agent.destroy().catch(() => {});
        }
      }
      expect(refused).toBe(50);
    });
  }

  it("creates a network, registers and enrolls a host over mTLS", async () => {
    const agent = agentWith(pki.clientCert, pki.clientKey);
    const token = await issuer.mint({
      sub: "alice",
      org: "org-x",
      scope: "networks:write hosts:write",
      amr: ["otp"],
    });
    const json = { "content-type": "application/json", authorization: `Bearer ${token}` };
    const net = await attempt(agent, "/v1/networks", {
      method: "POST",
      headers: json,
      body: JSON.stringify({ name: "mtls", cidrs: ["10.7.0.0/24"] }),
    });
    expect(net.status, net.text).toBe(201);
    const networkId = JSON.parse(net.text).id;
    const reg = await attempt(agent, `/v1/networks/${networkId}/hosts`, {
      method: "POST",
      headers: json,
      body: JSON.stringify({ name: "web-1" }),
    });
    expect(reg.status, reg.text).toBe(201);
    const code = JSON.parse(reg.text).enrollmentCode;
    const enrolled = await attempt(agent, "/v1/enroll", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ code, publicKey: await hostPublicKeyPem() }),
    });
    expect(enrolled.status, enrolled.text).toBe(201);
    expect(parseCertificatesPem(JSON.parse(enrolled.text).certificate)[0]?.networks).toEqual([
      "10.7.0.1/24",
    ]);
    await agent.close();
    const logged = JSON.stringify(signer.lines);
    expect(logged).not.toContain(code);
    expect(logged).not.toContain(token);
  });
});
