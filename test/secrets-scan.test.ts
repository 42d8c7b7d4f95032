/**
 * Invariant 1, checked from the outside: after a real workload (the REAL Bun signer over mTLS behind
 * the edge app relaying with the relay client certificate; networks on both curves and both
 * certificate versions, a CA rotation, enrollments, renewals, direct signings and a spread of
 * refused requests), every CA private key is opened once more HERE, through the local custody
 * backend with its own context (the one place plaintext is allowed), and searched for in raw, hex,
 * base64 and PEM forms in: every byte the signer printed, every edge log line, every response
 * body, the database file and every file in the data folder. None may hold it.
 */
import { readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "@libsql/client";
import type { Agent } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type DevIssuer, startDevIssuer } from "../cli/dev/issuer.ts";
import { makeRelayPki, type RelayPki } from "../cli/dev/pki.ts";
import { generateHostKeyPair, privateKeyToPem, publicKeyToPem } from "../core/cert/index.ts";
import type { createEdgeApp } from "../edge/app.ts";
import { createCustody } from "../signer/custody/index.ts";
import {
  callSigner,
  inProcessEdge,
  relayAgent,
  type SignerProcess,
  signerEnv,
  startSignerProcess,
} from "./support/faults.ts";

const AUDIENCE = "keyhole-secrets";
const SCOPES = "networks:write hosts:write hosts:read certs:sign audit:read";

let dir: string;
let pki: RelayPki;
let issuer: DevIssuer;
let signer: SignerProcess;
let agent: Agent;
let edge: ReturnType<typeof createEdgeApp>;
const edgeLog: string[] = [];
const bodies: string[] = [];
let requests = 0;

interface Reply {
  status: number;
  // biome-ignore lint/suspicious/noExplicitAny: tests read JSON bodies freely
  body: any;
}

async function api(
  method: string,
  path: string,
  o: { token?: string; body?: unknown; raw?: string } = {},
): Promise<Reply> {
  const headers: Record<string, string> = {};
  if (o.token !== undefined) headers.authorization = `Bearer ${o.token}`;
  let body: string | undefined = o.raw;
  if (o.body !== undefined) body = JSON.stringify(o.body);
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await edge.request(path, {
    method,
    headers,
    ...(body !== undefined ? { body } : {}),
  });
  const text = await res.text();
  requests++;
  bodies.push(text, JSON.stringify([...res.headers.entries()]));
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {}
  return { status: res.status, body: parsed };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "keyhole-secrets-"));
  pki = await makeRelayPki(join(dir, "pki"));
  issuer = await startDevIssuer({ audience: AUDIENCE });
  signer = await startSignerProcess(
    signerEnv({
      region: "scan-a",
      pki,
      dbPath: join(dir, "keyhole.db"),
      dataDir: join(dir, "custody"),
      issuer: issuer.issuer,
      audience: AUDIENCE,
    }),
  );
  agent = relayAgent(pki);
  const env = {
    KEYHOLE_SIGNERS: `scan-a=${signer.url}`,
    KEYHOLE_OIDC_ISSUERS: issuer.issuer,
    KEYHOLE_OIDC_AUDIENCE: AUDIENCE,
    KEYHOLE_SIGNER_TIMEOUT_MS: "10000",
  };
  edge = inProcessEdge(env, pki, "198.51.100.20", (line) => edgeLog.push(JSON.stringify(line)));
}, 120_000);

afterAll(async () => {
  await agent?.close();
  await signer?.stop();
  await issuer?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Every form in which a secret could leak into text or bytes. */
function leakForms(
  secret: Uint8Array,
  curve: "CURVE25519" | "P256",
  full: Uint8Array,
): { form: string; bytes: Buffer }[] {
  const b = Buffer.from(secret);
  const forms: { form: string; bytes: Buffer }[] = [
    { form: "raw", bytes: b },
    { form: "hex", bytes: Buffer.from(b.toString("hex")) },
    { form: "HEX", bytes: Buffer.from(b.toString("hex").toUpperCase()) },
    { form: "pem", bytes: Buffer.from(privateKeyToPem(curve, full, true)) },
    {
      form: "json-bytes",
      bytes: Buffer.from(JSON.stringify(Object.fromEntries(b.entries())).slice(1, 60)),
    },
    { form: "array", bytes: Buffer.from(Array.from(b).join(",")) },
  ];
  // base64 of the secret at each of the three alignments it could sit at inside a longer encoding;
  // the middle of each encoding (away from the ragged ends) must not appear.
  for (let shift = 0; shift < 3; shift++) {
    const padded = Buffer.concat([Buffer.alloc(shift), b]);
    for (const [name, enc] of [
      ["base64", padded.toString("base64")],
      ["base64url", padded.toString("base64url")],
    ] as const) {
      forms.push({ form: `${name}+${shift}`, bytes: Buffer.from(enc.slice(4, -4)) });
    }
  }
  return forms;
}

function findLeaks(
  haystacks: { where: string; bytes: Buffer }[],
  forms: { form: string; bytes: Buffer }[],
): string[] {
  const found: string[] = [];
  for (const h of haystacks) {
    for (const f of forms) if (h.bytes.includes(f.bytes)) found.push(`${f.form} in ${h.where}`);
  }
  return found;
}

function filesUnder(root: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(root)) {
    const p = join(root, name);
    if (statSync(p).isDirectory()) out.push(...filesUnder(p));
    else out.push(p);
  }
  return out;
}

describe("no CA private key in logs, responses, the database or the data folder", () => {
  it("runs a workload on both curves and versions, then scans everything for every CA key", async () => {
    const admin = await issuer.mint({
      sub: "alice",
      org: "org-s",
      scope: SCOPES,
      amr: ["pwd", "otp"],
    });
    const outsider = await issuer.mint({
      sub: "mallory",
      org: "org-m",
      scope: SCOPES,
      amr: ["pwd", "otp"],
    });
    const noMfa = await issuer.mint({ sub: "bob", org: "org-s", scope: SCOPES });
    let n = 0;
    for (const curve of ["25519", "P256"] as const) {
      for (const certVersion of [1, 2] as const) {
        n++;
        const net = await api("POST", "/v1/networks", {
          token: admin,
          body: {
            name: `scan-${curve}-v${certVersion}`,
            cidrs: [`10.${60 + n}.0.0/16`],
            curve,
            certVersion,
            groups: ["a", "b"],
          },
        });
        expect(net.status, JSON.stringify(net.body)).toBe(201);
        const id = net.body.id as string;
        const hostCurve = curve === "25519" ? "CURVE25519" : "P256";
        for (let h = 0; h < 2; h++) {
          const reg = await api("POST", `/v1/networks/${id}/hosts`, {
            token: admin,
            body: { name: `h${h}`, groups: ["a"] },
          });
          expect(reg.status, JSON.stringify(reg.body)).toBe(201);
          const pair = await generateHostKeyPair(hostCurve);
          const enrolled = await api("POST", "/v1/enroll", {
            body: {
              code: reg.body.enrollmentCode,
              publicKey: publicKeyToPem(pair.curve, pair.publicKey),
            },
          });
          expect(enrolled.status, JSON.stringify(enrolled.body)).toBe(201);
          const renewed = await api("POST", "/v1/renew", {
            token: enrolled.body.hostToken,
            body: {},
          });
          expect(renewed.status, JSON.stringify(renewed.body)).toBeLessThan(300);
          // Refused: replayed code, replayed token, a private key sent as the public key.
          expect(
            (
              await api("POST", "/v1/enroll", {
                body: {
                  code: reg.body.enrollmentCode,
                  publicKey: publicKeyToPem(pair.curve, pair.publicKey),
                },
              })
            ).status,
          ).toBe(401);
          expect(
            (await api("POST", "/v1/renew", { token: enrolled.body.hostToken, body: {} })).status,
          ).toBe(401);
          const priv = privateKeyToPem(pair.curve, pair.privateKey, false);
          const sentPrivate = await api("POST", `/v1/networks/${id}/sign`, {
            token: admin,
            body: { publicKey: priv, name: "leaky", networks: [`10.${60 + n}.9.${h + 1}/16`] },
          });
          expect(sentPrivate.status).toBe(400);
          expect(JSON.stringify(sentPrivate.body)).not.toContain(priv.split("\n")[1] as string);
        }
        const other = await generateHostKeyPair(hostCurve === "P256" ? "CURVE25519" : "P256");
        const wrongCurve = await api("POST", `/v1/networks/${id}/sign`, {
          token: admin,
          body: {
            publicKey: publicKeyToPem(other.curve, other.publicKey),
            name: "wrong",
            networks: [`10.${60 + n}.9.9/16`],
          },
        });
        expect(wrongCurve.status).toBe(400);
        const own = await generateHostKeyPair(hostCurve);
        const signed = await api("POST", `/v1/networks/${id}/sign`, {
          token: admin,
          body: {
            publicKey: publicKeyToPem(own.curve, own.publicKey),
            name: "direct",
            networks: [`10.${60 + n}.9.10/16`],
            groups: ["b"],
          },
        });
        expect(signed.status, JSON.stringify(signed.body)).toBeLessThan(300);
        const badGroup = await api("POST", `/v1/networks/${id}/sign`, {
          token: admin,
          body: {
            publicKey: publicKeyToPem(own.curve, own.publicKey),
            name: "direct2",
            networks: [`10.${60 + n}.9.11/16`],
            groups: ["zzz"],
          },
        });
        expect(badGroup.status).toBeGreaterThanOrEqual(400);
        expect(
          (
            await api("POST", `/v1/networks/${id}/sign`, {
              token: outsider,
              body: {
                publicKey: publicKeyToPem(own.curve, own.publicKey),
                name: "x",
                networks: [`10.${60 + n}.9.12/16`],
              },
            })
          ).status,
        ).toBeGreaterThanOrEqual(400);
        if (n === 1) {
          expect(
            (await api("POST", `/v1/networks/${id}/ca-rotations`, { token: noMfa, body: {} }))
              .status,
          ).toBe(403);
          const rotated = await api("POST", `/v1/networks/${id}/ca-rotations`, {
            token: admin,
            body: {},
          });
          expect(rotated.status, JSON.stringify(rotated.body)).toBeLessThan(300);
        }
      }
    }
    expect((await api("GET", "/v1/audit?limit=1000", { token: admin })).status).toBe(200);
    expect((await api("GET", "/v1/networks", { token: admin })).status).toBe(200);
    // An internal-error path for good measure: a request straight to the signer with a broken body.
    const direct = await callSigner(agent, signer.url, "POST", "/v1/networks", {
      token: admin,
      headers: { "content-type": "application/json" },
    });
    bodies.push(direct.text);

    // Stop the signer so that its last log lines and the WAL are on disk.
    await signer.stop();

    // Open every CA key (the one place this test holds plaintext) through the custody backend itself.
    const db = createClient({ url: `file:${join(dir, "keyhole.db")}` });
    const cas = await db.execute("select id, network_id, org from cas");
    const keys: {
      caId: string;
      curve: "CURVE25519" | "P256";
      full: Uint8Array;
      secret: Uint8Array;
    }[] = [];
    const custody = await createCustody({ backend: "local", dataDir: join(dir, "custody") });
    try {
      for (const row of cas.rows) {
        const caId = String(row.id);
        const copies = await db.execute({
          sql: "select region, key_id, ciphertext from ca_sealed_keys where ca_id = ?",
          args: [caId],
        });
        expect(copies.rows.length).toBe(2);
        const sealed = copies.rows.map((c) => ({
          region: String(c.region),
          keyId: String(c.key_id),
          ciphertext: new Uint8Array(c.ciphertext as ArrayBuffer),
        }));
        const opened = await custody.openCaKey(
          caId,
          sealed,
          { org: String(row.org), network: String(row.network_id), ca: caId },
          async (p) => p.slice(),
        );
        const full = opened.value;
        const curve = full.length === 64 ? "CURVE25519" : "P256";
        // An Ed25519 CA key is seed || public key: the seed is the secret half.
        keys.push({
          caId,
          curve,
          full,
          secret: curve === "CURVE25519" ? full.subarray(0, 32) : full,
        });
      }
    } finally {
      await custody.close();
      db.close();
    }
    expect(keys.length).toBe(5);
    expect(new Set(keys.map((k) => k.curve))).toEqual(new Set(["CURVE25519", "P256"]));

    const haystacks: { where: string; bytes: Buffer }[] = [
      { where: "signer stdout+stderr", bytes: signer.output() },
      { where: "edge log", bytes: Buffer.from(edgeLog.join("\n")) },
      { where: "response bodies and headers", bytes: Buffer.from(bodies.join("\n")) },
    ];
    for (const file of filesUnder(dir))
      haystacks.push({ where: file.slice(dir.length), bytes: readFileSync(file) });
    expect(haystacks.some((h) => h.where.endsWith("keyhole.db"))).toBe(true);

    // The scanner itself works: each form of a key, planted in a copy of the logs, is found.
    const probe = keys[0] as (typeof keys)[number];
    for (const f of leakForms(probe.secret, probe.curve, probe.full)) {
      const planted = Buffer.concat([signer.output(), Buffer.from("\n"), f.bytes]);
      expect(findLeaks([{ where: "planted", bytes: planted }], [f]), f.form).toHaveLength(1);
    }

    const leaks: string[] = [];
    for (const k of keys)
      leaks.push(
        ...findLeaks(haystacks, leakForms(k.secret, k.curve, k.full)).map((l) => `${k.caId}: ${l}`),
      );
    const scanned = haystacks.reduce((s, h) => s + h.bytes.length, 0);
    process.stdout.write(
      `secrets-scan: ${keys.length} CA keys x ${leakForms(probe.secret, probe.curve, probe.full).length} forms over ${haystacks.length} sources (${(scanned / 1024).toFixed(0)} KiB), ${requests} requests through the edge: ${leaks.length} leaks\n`,
    );
    for (const k of keys) k.full.fill(0);
    expect(leaks).toEqual([]);
  }, 180_000);
});
