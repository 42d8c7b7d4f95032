/**
 * Hostile clients against the REAL signer process (`bun signer/main.ts`, local custody, a libSQL
 * file, a dev relay PKI) over REAL mutual TLS, and through the REAL edge in workerd (Miniflare) in
 * front of it: bodies dripped a byte at a time, huge headers, many
 * idle connections, replayed enrollment codes and host tokens, 20 concurrent uses of one code,
 * forged traceparent headers and CR/LF smuggled through names and groups. The signer must stay
 * responsive, answer with stable codes, let exactly one use of a code win, and reflect nothing
 * from the request into response headers.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type TLSSocket } from "node:tls";
import { createClient } from "@libsql/client";
import type { Agent } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type DevIssuer, startDevIssuer } from "../cli/dev/issuer.ts";
import { makeRelayPki, type RelayPki } from "../cli/dev/pki.ts";
import { ERROR_STATUS, isErrorCode } from "../core/contract/index.ts";
import { hostPublicKeyPem } from "../signer/testing.ts";
import {
  callSigner,
  relayAgent,
  type SignerProcess,
  signerEnv,
  startSignerProcess,
} from "./support/faults.ts";
import { type EdgeInMiniflare, startEdgeInMiniflare } from "./support/miniflare.ts";

const AUDIENCE = "keyhole-hostile";
const SCOPES = "networks:write hosts:write hosts:read certs:sign audit:read";

let dir: string;
let pki: RelayPki;
let issuer: DevIssuer;
let signer: SignerProcess;
let agent: Agent;
let admin: string;
let networkId: string;
const figures: string[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "keyhole-hostile-"));
  pki = await makeRelayPki(join(dir, "pki"));
  issuer = await startDevIssuer({ audience: AUDIENCE });
  signer = await startSignerProcess(
    signerEnv({
      region: "hostile-a",
      pki,
      dbPath: join(dir, "keyhole.db"),
      dataDir: join(dir, "custody"),
      issuer: issuer.issuer,
      audience: AUDIENCE,
    }),
  );
  agent = relayAgent(pki);
  admin = await issuer.mint({ sub: "alice", org: "org-h", scope: SCOPES, amr: ["pwd", "otp"] });
  const net = await callSigner(agent, signer.url, "POST", "/v1/networks", {
    token: admin,
    body: { name: "hostile", cidrs: ["10.88.0.0/16"], curve: "25519", certVersion: 2 },
  });
  expect(net.status, net.text).toBe(201);
  networkId = net.body.id;
}, 120_000);

afterAll(async () => {
  process.stdout.write(`hostile-clients: ${figures.join("; ")}\n`);
  await agent?.close();
  await signer?.stop();
  await issuer?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function tlsSocket(): Promise<TLSSocket> {
  return new Promise((res, rej) => {
    const s = connect({
      host: "127.0.0.1",
      port: signer.port,
      ca: readFileSync(pki.caCert),
      cert: readFileSync(pki.clientCert),
      key: readFileSync(pki.clientKey),
      servername: "localhost",
    });
    s.once("secureConnect", () => res(s));
    s.once("error", rej);
  });
}

/** Everything the server sends until it closes the socket or `ms` pass. */
function collect(
  s: TLSSocket,
  ms: number,
): Promise<{ text: string; closed: boolean; atMs: number }> {
  const started = performance.now();
  return new Promise((res) => {
    let text = "";
    const done = (closed: boolean) => {
      clearTimeout(timer);
      s.removeAllListeners("data");
      res({ text, closed, atMs: performance.now() - started });
    };
    const timer = setTimeout(() => done(false), ms);
    s.on("data", (d: Buffer) => {
      text += d.toString("latin1");
    });
    s.once("close", () => done(true));
    s.once("error", () => done(true));
  });
}

async function healthMs(): Promise<number> {
  const t = performance.now();
  const r = await callSigner(agent, signer.url, "GET", "/v1/health", { timeoutMs: 5000 });
  expect(r.status).toBe(200);
  return performance.now() - t;
}

function expectStable(status: number, body: unknown, code?: string): void {
  const c = (body as { error?: { code?: unknown } })?.error?.code;
  expect(isErrorCode(c), JSON.stringify(body)).toBe(true);
  expect(ERROR_STATUS[c as keyof typeof ERROR_STATUS]).toBe(status);
  if (code !== undefined) expect(c).toBe(code);
}

async function registerHost(name: string): Promise<string> {
  const r = await callSigner(agent, signer.url, "POST", `/v1/networks/${networkId}/hosts`, {
    token: admin,
    body: { name },
  });
  expect(r.status, r.text).toBe(201);
  return r.body.enrollmentCode as string;
}

async function count(sql: string): Promise<number> {
  const c = createClient({ url: `file:${join(dir, "keyhole.db")}` });
  try {
    const r = await c.execute(sql);
    return Number(r.rows[0]?.n ?? 0);
  } finally {
    c.close();
  }
}

describe("slow and heavy clients", () => {
  it("30 connections dripping a body one byte per 300 ms do not stall other callers", async () => {
    const body = JSON.stringify({ code: "x".repeat(20), publicKey: "y".repeat(40) });
    const sockets = await Promise.all(Array.from({ length: 30 }, () => tlsSocket()));
    const results = sockets.map((s) => collect(s, 12_000));
    for (const s of sockets) {
      s.write(
        `POST /v1/enroll HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`,
      );
    }
    // While every dripping connection is open, a normal caller is served promptly.
    const during: number[] = [];
    for (let i = 0; i < 15; i++) {
      for (const s of sockets) if (!s.destroyed) s.write(body[i] as string);
      await new Promise((r) => setTimeout(r, 300));
      if (i % 5 === 4) during.push(await healthMs());
    }
    // Finish the bodies: each dripped request gets a normal, stable answer (the code is unknown).
    for (const s of sockets) if (!s.destroyed) s.write(body.slice(15));
    const answers = await Promise.all(results);
    for (const a of answers) {
      if (a.text === "") continue; // closed by the server: also acceptable
      expect(a.text).toMatch(/^HTTP\/1\.1 401 /);
      expect(a.text).toContain('"invalid_enrollment_code"');
    }
    for (const s of sockets) s.destroy();
    const answered = answers.filter((a) => a.text !== "").length;
    figures.push(
      `drip: 30 conns, ${answered} answered 401, health during drip max ${Math.max(...during).toFixed(0)} ms`,
    );
    expect(Math.max(...during)).toBeLessThan(3000);
  }, 60_000);

  it("a connection that never finishes its headers is closed by the server, bounded", async () => {
    const s = await tlsSocket();
    const result = collect(s, 40_000);
    s.write("POST /v1/enroll HTTP/1.1\r\nHost: localhost\r\n");
    const r = await result;
    s.destroy();
    figures.push(`stalled headers: closed=${r.closed} after ${(r.atMs / 1000).toFixed(1)} s`);
    expect(r.closed).toBe(true);
    expect(r.text).not.toMatch(/^HTTP\/1\.1 5/);
    expect(await healthMs()).toBeLessThan(3000);
  }, 60_000);

  it("huge headers and a flood of header lines are refused, not answered with a 5xx", async () => {
    const cases = [
      `GET /v1/health HTTP/1.1\r\nHost: localhost\r\nX-Big: ${"a".repeat(256 * 1024)}\r\n\r\n`,
      `GET /v1/health HTTP/1.1\r\nHost: localhost\r\n${Array.from({ length: 5000 }, (_, i) => `X-H${i}: v`).join("\r\n")}\r\n\r\n`,
      `GET /v1/networks HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${"A".repeat(64 * 1024)}\r\n\r\n`,
    ];
    const seen: string[] = [];
    for (const raw of cases) {
      const s = await tlsSocket();
      const result = collect(s, 10_000);
      s.write(raw);
      const r = await result;
      s.destroy();
      const status = /^HTTP\/1\.1 (\d{3})/.exec(r.text)?.[1] ?? (r.closed ? "closed" : "silent");
      seen.push(status);
      expect(status).not.toMatch(/^5/);
      expect(status).not.toBe("200");
    }
    figures.push(`huge headers: ${seen.join(", ")}`);
    expect(await healthMs()).toBeLessThan(3000);
  }, 60_000);

  it("300 idle mTLS connections at once, then normal service", async () => {
    const sockets: TLSSocket[] = [];
    const opened = await Promise.allSettled(Array.from({ length: 300 }, () => tlsSocket()));
    for (const o of opened) if (o.status === "fulfilled") sockets.push(o.value);
    const ms = await healthMs();
    for (const s of sockets) s.destroy();
    figures.push(`idle connections: ${sockets.length}/300 opened, health ${ms.toFixed(0)} ms`);
    expect(sockets.length).toBeGreaterThan(0);
    expect(ms).toBeLessThan(3000);
  }, 60_000);
});

describe("replays and races", () => {
  it("an enrollment code works once; its replay is refused with invalid_enrollment_code", async () => {
    const code = await registerHost("replay-1");
    const first = await callSigner(agent, signer.url, "POST", "/v1/enroll", {
      body: { code, publicKey: await hostPublicKeyPem() },
    });
    expect(first.status, first.text).toBe(201);
    for (let i = 0; i < 3; i++) {
      const again = await callSigner(agent, signer.url, "POST", "/v1/enroll", {
        body: { code, publicKey: await hostPublicKeyPem() },
      });
      expect(again.status).toBe(401);
      expectStable(again.status, again.body, "invalid_enrollment_code");
      expect(again.text).not.toContain(code);
    }
  });

  it("20 concurrent uses of one code: exactly one certificate", async () => {
    const code = await registerHost("race-1");
    const certsBefore = await count("select count(*) as n from certificates");
    const keys = await Promise.all(Array.from({ length: 20 }, () => hostPublicKeyPem()));
    const replies = await Promise.all(
      keys.map((publicKey) =>
        callSigner(agent, signer.url, "POST", "/v1/enroll", { body: { code, publicKey } }),
      ),
    );
    const wins = replies.filter((r) => r.status === 201);
    const losses = replies.filter((r) => r.status !== 201);
    expect(wins).toHaveLength(1);
    for (const l of losses) expectStable(l.status, l.body, "invalid_enrollment_code");
    expect(await count("select count(*) as n from certificates")).toBe(certsBefore + 1);
    figures.push(`one code x20 concurrent: ${wins.length} won, ${losses.length} refused`);
  });

  it("an enrollment replayed with its Idempotency-Key never hands out the host token again", async () => {
    const code = await registerHost("idem-1");
    const publicKey = await hostPublicKeyPem();
    const key = "idem-hostile-0001";
    const headers = { "idempotency-key": key };
    const first = await callSigner(agent, signer.url, "POST", "/v1/enroll", {
      headers,
      body: { code, publicKey },
    });
    expect(first.status, first.text).toBe(201);
    const token = first.body.hostToken as string;
    expect(token.length).toBeGreaterThan(16);
    const replay = await callSigner(agent, signer.url, "POST", "/v1/enroll", {
      headers,
      body: { code, publicKey },
    });
    expect(replay.status).toBeLessThan(300);
    expect(replay.body.fingerprint).toBe(first.body.fingerprint);
    expect(replay.text).not.toContain(token);
    // Another caller reusing the key with another (guessed) code gets nothing of the first reply.
    const other = await callSigner(agent, signer.url, "POST", "/v1/enroll", {
      headers,
      body: { code: `${code.slice(0, -2)}zz`, publicKey },
    });
    expectStable(other.status, other.body, "invalid_enrollment_code");
    expect(other.text).not.toContain(first.body.fingerprint);
  });

  it("a replayed host token is refused and blocks the host; its successor then stops working", async () => {
    const code = await registerHost("renew-1");
    const enrolled = await callSigner(agent, signer.url, "POST", "/v1/enroll", {
      body: { code, publicKey: await hostPublicKeyPem() },
    });
    expect(enrolled.status).toBe(201);
    const t1 = enrolled.body.hostToken as string;
    const renewed = await callSigner(agent, signer.url, "POST", "/v1/renew", {
      token: t1,
      body: {},
    });
    expect(renewed.status, renewed.text).toBeLessThan(300);
    const t2 = renewed.body.hostToken as string;
    expect(t2).not.toBe(t1);
    const replay = await callSigner(agent, signer.url, "POST", "/v1/renew", {
      token: t1,
      body: {},
    });
    expectStable(replay.status, replay.body, "host_token_reused");
    expect(replay.text).not.toContain(t1);
    const after = await callSigner(agent, signer.url, "POST", "/v1/renew", { token: t2, body: {} });
    expect(after.status).toBeGreaterThanOrEqual(400);
    expectStable(after.status, after.body);
    expect(["host_blocked", "invalid_host_token", "host_token_reused"]).toContain(
      after.body.error.code,
    );
  });
});

describe("headers from the caller", () => {
  it("a malformed traceparent is replaced by a fresh trace id", async () => {
    const seen = new Set<string>();
    for (const tp of [
      "garbage",
      "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
      "00-4BF92F3577B34DA6A3CE929D0E0E473-00f067aa0ba902b7-01",
      `00-${"a".repeat(2000)}-00f067aa0ba902b7-01`,
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
    ]) {
      const r = await callSigner(agent, signer.url, "GET", "/v1/health", {
        headers: { traceparent: tp },
      });
      const id = String(r.headers["x-request-id"]);
      expect(id).toMatch(/^[0-9a-f]{32}$/);
      expect(tp.toLowerCase()).not.toContain(id);
      expect(seen.has(id)).toBe(false);
      seen.add(id);
    }
  });

  it("a well-formed foreign traceparent is kept as the trace id and trusted for nothing else", async () => {
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    const outsider = await issuer.mint({
      sub: "mallory",
      org: "org-other",
      scope: SCOPES,
      amr: ["pwd", "otp"],
    });
    const r = await callSigner(agent, signer.url, "POST", `/v1/networks/${networkId}/sign`, {
      token: outsider,
      headers: {
        traceparent: `00-${traceId}-00f067aa0ba902b7-01`,
        "x-keyhole-client-address": "10.0.0.1",
      },
      body: { publicKey: await hostPublicKeyPem(), name: "intruder", networks: ["10.88.0.9/16"] },
    });
    expect(r.headers["x-request-id"]).toBe(traceId);
    expect(r.status).toBeGreaterThanOrEqual(400);
    expectStable(r.status, r.body);
    expect(r.body.error.traceId).toBe(traceId);
    // The audit rows of that trace id (if any) name the verified caller, never the network's org.
    const audit = await callSigner(agent, signer.url, "GET", `/v1/audit?traceId=${traceId}`, {
      token: admin,
    });
    expect(audit.status).toBe(200);
    const rows = (
      Array.isArray(audit.body) ? audit.body : (audit.body.rows ?? audit.body.items ?? [])
    ) as {
      actor: string;
      outcome: string;
    }[];
    for (const row of rows) {
      expect(row.actor).not.toBe("alice");
      expect(row.outcome).not.toBe("ok");
    }
  });

  it("CR/LF in names and groups is refused by the schemas and nothing is reflected into headers", async () => {
    const injections = ["a\r\nX-Evil: 1", "a\nSet-Cookie: s=1", "ok\rX-Evil: 2", "a\u0000b"];
    const certsBefore = await count("select count(*) as n from hosts");
    for (const bad of injections) {
      const attempts = [
        callSigner(agent, signer.url, "POST", `/v1/networks/${networkId}/hosts`, {
          token: admin,
          body: { name: bad },
        }),
        callSigner(agent, signer.url, "POST", `/v1/networks/${networkId}/hosts`, {
          token: admin,
          body: { name: "fine", groups: [bad] },
        }),
        callSigner(agent, signer.url, "POST", "/v1/networks", {
          token: admin,
          body: { name: bad, cidrs: ["10.89.0.0/16"] },
        }),
        callSigner(agent, signer.url, "POST", `/v1/networks/${networkId}/sign`, {
          token: admin,
          body: { publicKey: await hostPublicKeyPem(), name: bad, networks: ["10.88.0.10/16"] },
        }),
      ];
      for (const r of await Promise.all(attempts)) {
        expect(r.status, r.text).toBe(400);
        expectStable(r.status, r.body, "invalid_request");
        for (const [name, value] of Object.entries(r.headers)) {
          expect(name).not.toMatch(/evil|set-cookie/i);
          expect(String(value)).not.toMatch(/[\r\n]|X-Evil/);
        }
      }
    }
    expect(await count("select count(*) as n from hosts")).toBe(certsBefore);
    // A valid but unusual name (unicode network name) is never copied into a response header.
    const odd = await callSigner(agent, signer.url, "POST", "/v1/networks", {
      token: admin,
      body: { name: "réseau ünïcode ✓", cidrs: ["10.90.0.0/16"] },
    });
    expect(odd.status, odd.text).toBe(201);
    for (const value of Object.values(odd.headers))
      expect(String(value)).not.toContain("r\u00e9seau");
  });
});

describe("through the edge in workerd", () => {
  let edge: EdgeInMiniflare;

  beforeAll(async () => {
    edge = await startEdgeInMiniflare({
      vars: {
        KEYHOLE_SIGNERS: `hostile-a=${signer.url}`,
        KEYHOLE_OIDC_ISSUERS: issuer.issuer,
        KEYHOLE_OIDC_AUDIENCE: AUDIENCE,
        KEYHOLE_SIGNER_TIMEOUT_MS: "10000",
      },
      tls: { caFile: pki.caCert, certFile: pki.clientCert, keyFile: pki.clientKey },
      rates: {
        address: { limit: 10_000, periodSec: 60 },
        subject: { limit: 10_000, periodSec: 60 },
        network: { limit: 10_000, periodSec: 60 },
      },
    });
  }, 120_000);

  afterAll(async () => {
    await edge?.dispose();
  });

  async function viaEdge(
    method: string,
    path: string,
    o: { token?: string; body?: unknown; headers?: Record<string, string> } = {},
  ) {
    const headers: Record<string, string> = { ...o.headers };
    if (o.token !== undefined) headers.authorization = `Bearer ${o.token}`;
    if (o.body !== undefined) headers["content-type"] = "application/json";
    const res = await fetch(`${edge.url.replace(/\/+$/, "")}${path}`, {
      method,
      headers,
      ...(o.body !== undefined ? { body: JSON.stringify(o.body) } : {}),
    });
    const text = await res.text();
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {}
    // biome-ignore lint/suspicious/noExplicitAny: tests read JSON bodies freely
    return { status: res.status, body: body as any, text, headers: res.headers };
  }

  it("20 concurrent uses of one code through the edge: exactly one certificate", async () => {
    const code = await registerHost("edge-race-1");
    const certsBefore = await count("select count(*) as n from certificates");
    const keys = await Promise.all(Array.from({ length: 20 }, () => hostPublicKeyPem()));
    const replies = await Promise.all(
      keys.map((publicKey) => viaEdge("POST", "/v1/enroll", { body: { code, publicKey } })),
    );
    const wins = replies.filter((r) => r.status === 201);
    expect(wins).toHaveLength(1);
    for (const l of replies.filter((r) => r.status !== 201))
      expectStable(l.status, l.body, "invalid_enrollment_code");
    expect(await count("select count(*) as n from certificates")).toBe(certsBefore + 1);
    figures.push(`one code x20 through workerd: ${wins.length} won`);
  });

  it("a foreign traceparent becomes the trace id of the audit rows, and nothing else", async () => {
    const traceId = "0af7651916cd43dd8448eb211c80319c";
    const r = await viaEdge("POST", `/v1/networks/${networkId}/sign`, {
      token: admin,
      headers: {
        traceparent: `00-${traceId}-b7ad6b7169203331-01`,
        "x-keyhole-client-address": "203.0.113.9",
      },
      body: { publicKey: await hostPublicKeyPem(), name: "traced", networks: ["10.88.0.77/16"] },
    });
    expect(r.status, r.text).toBe(201);
    expect(r.headers.get("x-request-id")).toBe(traceId);
    const audit = await callSigner(agent, signer.url, "GET", `/v1/audit?traceId=${traceId}`, {
      token: admin,
    });
    const rows = audit.body.rows as { actor: string; traceId: string; action: string }[];
    expect(rows.some((row) => row.action === "cert.sign")).toBe(true);
    for (const row of rows) {
      expect(row.traceId).toBe(traceId);
      expect(row.actor).toContain("alice");
    }
    const malformed = await viaEdge("GET", "/v1/health", {
      headers: { traceparent: `00-${"g".repeat(32)}-b7ad6b7169203331-01` },
    });
    expect(malformed.headers.get("x-request-id")).toMatch(/^[0-9a-f]{32}$/);
    expect(malformed.headers.get("x-request-id")).not.toBe(traceId);
  });

  it("CR/LF in a name through the edge is refused before the signer and not reflected", async () => {
    const r = await viaEdge("POST", `/v1/networks/${networkId}/hosts`, {
      token: admin,
      body: { name: "a\r\nX-Evil: 1" },
    });
    expect(r.status).toBe(400);
    expectStable(r.status, r.body, "invalid_request");
    for (const [name, value] of r.headers) {
      expect(name).not.toMatch(/evil/i);
      expect(value).not.toMatch(/X-Evil/);
    }
    // The edge's own log line for this request: refused there, no signer region tried.
    const line = await edge.requestLog(r.headers.get("x-request-id") ?? "");
    expect(line.status).toBe(400);
    expect(line.relay).toBeUndefined();
  });
});
