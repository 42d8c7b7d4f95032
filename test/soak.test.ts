/**
 * Soak under faults, bounded to about two minutes on loopback: sustained enrollments and direct
 * signings through the edge app into two REAL Bun signer regions (mTLS, one libSQL file) whose CA
 * keys are sealed in two REAL moto_server KMS regions. While the load runs, KMS regions are paused,
 * have their key disabled, both go dark together once, one is killed; a signer region is killed and
 * restarted; the database is locked from outside. Clients retry with the same Idempotency-Key, as
 * the API tells them to. Afterwards, from the database itself: every certificate has exactly one
 * audit row and every signing row its certificate, no idempotency key issued twice, nothing a client
 * was given is missing, the audit chain verifies, and the only failures fell where both regions of
 * something were down, each a 503 with a stable code. The figures are printed.
 */
import { rmSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "@libsql/client";
import { afterAll, beforeAll, expect, it } from "vitest";
import { type DevIssuer, startDevIssuer } from "../cli/dev/issuer.ts";
import { makeRelayPki, type RelayPki } from "../cli/dev/pki.ts";
import { generateHostKeyPair, publicKeyToPem } from "../core/cert/index.ts";
import type { createEdgeApp } from "../edge/app.ts";
import {
  callSigner,
  holdDatabaseLock,
  inProcessEdge,
  relayAgent,
  type SignerProcess,
  signerEnv,
  startSignerProcess,
} from "./support/faults.ts";
import { fakeAwsEnv, type MotoRegion, motoServer, startMoto } from "./support/moto.ts";
import { describeWith } from "./support/tools.ts";

const LOAD_MS = Number(process.env.KEYHOLE_SOAK_MS ?? 90_000);
const WORKERS = 4;
const KMS_TIMEOUT_MS = 600;
const AUDIENCE = "keyhole-soak";
const SCOPES = "networks:write hosts:write hosts:read certs:sign audit:read";

interface Outcome {
  op: "enroll" | "sign";
  key: string;
  startedAt: number;
  endedAt: number;
  attempts: { status: number; code: string | undefined }[];
  fingerprint: string | undefined;
  finalStatus: number;
  finalCode: string | undefined;
}

describeWith(
  [motoServer],
  "soak: enrollments and signings while KMS, signer and database fail",
  () => {
    let dir: string;
    let pki: RelayPki;
    let issuer: DevIssuer;
    let kmsA: MotoRegion;
    let kmsB: MotoRegion;
    let keyA: string;
    let keyB: string;
    const signers: SignerProcess[] = [];
    let edge: ReturnType<typeof createEdgeApp>;
    let admin: string;
    const dbPath = () => join(dir, "keyhole.db");

    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), "keyhole-soak-"));
      pki = await makeRelayPki(join(dir, "pki"));
      issuer = await startDevIssuer({ audience: AUDIENCE });
      [kmsA, kmsB] = await Promise.all([startMoto(), startMoto()]);
      keyA = await kmsA.createKey("us-east-1");
      keyB = await kmsB.createKey("eu-west-1");
      const extra = {
        ...fakeAwsEnv(),
        KEYHOLE_KMS: "aws",
        KEYHOLE_KMS_KEYS: `us-east-1=${keyA},eu-west-1=${keyB}`,
        KEYHOLE_KMS_ENDPOINTS: `us-east-1=${kmsA.url},eu-west-1=${kmsB.url}`,
        KEYHOLE_KMS_TIMEOUT_MS: String(KMS_TIMEOUT_MS),
      };
      const common = {
        pki,
        dbPath: dbPath(),
        dataDir: join(dir, "custody"),
        issuer: issuer.issuer,
        audience: AUDIENCE,
        extra,
      };
      // One at a time: the first applies the migrations.
      signers.push(await startSignerProcess(signerEnv({ ...common, region: "sa" })));
      signers.push(await startSignerProcess(signerEnv({ ...common, region: "sb" })));
      const env = {
        KEYHOLE_SIGNERS: signers.map((s) => `${s.region}=${s.url}`).join(","),
        KEYHOLE_OIDC_ISSUERS: issuer.issuer,
        KEYHOLE_OIDC_AUDIENCE: AUDIENCE,
        KEYHOLE_SIGNER_TIMEOUT_MS: "8000",
        KEYHOLE_SIGNER_COOLDOWN_MS: "1000",
      };
      edge = inProcessEdge(env, pki, "198.51.100.30");
      admin = await issuer.mint({
        sub: "soak-admin",
        org: "org-soak",
        scope: SCOPES,
        amr: ["pwd", "otp"],
      });
    }, 180_000);

    afterAll(async () => {
      for (const s of signers) await s.stop().catch(() => {});
      await kmsA?.kill();
      await kmsB?.kill();
      await issuer?.close();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    async function api(
      method: string,
      path: string,
      o: { token?: string; body?: unknown; key?: string } = {},
    ) {
      const headers: Record<string, string> = {};
      if (o.token !== undefined) headers.authorization = `Bearer ${o.token}`;
      if (o.key !== undefined) headers["idempotency-key"] = o.key;
      if (o.body !== undefined) headers["content-type"] = "application/json";
      const res = await edge.request(path, {
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
      return { status: res.status, body: body as any };
    }

    it("loses nothing and fails only where both regions are down", async () => {
      // ---- setup: two networks and enough pending hosts for the whole run ----
      const networks: { id: string; curve: "CURVE25519" | "P256"; prefix: string }[] = [];
      for (const [i, curve, certVersion] of [
        [0, "25519", 2],
        [1, "P256", 1],
      ] as const) {
        const r = await api("POST", "/v1/networks", {
          token: admin,
          body: { name: `soak-${curve}`, cidrs: [`10.${100 + i}.0.0/16`], curve, certVersion },
        });
        expect(r.status, JSON.stringify(r.body)).toBe(201);
        networks.push({
          id: r.body.id,
          curve: curve === "25519" ? "CURVE25519" : "P256",
          prefix: `10.${100 + i}`,
        });
      }
      const codes: { code: string; curve: "CURVE25519" | "P256" }[] = [];
      for (let i = 0; i < 160; i++) {
        const net = networks[i % 2] as (typeof networks)[number];
        const r = await api("POST", `/v1/networks/${net.id}/hosts`, {
          token: admin,
          body: { name: `host-${i}` },
        });
        expect(r.status, JSON.stringify(r.body)).toBe(201);
        codes.push({ code: r.body.enrollmentCode, curve: net.curve });
      }
      const keys = {
        CURVE25519: await Promise.all(
          Array.from({ length: 8 }, () => generateHostKeyPair("CURVE25519")),
        ),
        P256: await Promise.all(Array.from({ length: 8 }, () => generateHostKeyPair("P256"))),
      };
      const pem = (curve: "CURVE25519" | "P256", i: number) => {
        const k = keys[curve][i % 8] as { curve: "CURVE25519" | "P256"; publicKey: Uint8Array };
        return publicKeyToPem(k.curve, k.publicKey);
      };

      // ---- faults, on a timeline, while the load runs ----
      const t0 = Date.now();
      const bothDown: { from: number; to: number; what: string }[] = [];
      const faults: string[] = [];
      const at = (ms: number) =>
        new Promise((r) => setTimeout(r, Math.max(0, t0 + ms - Date.now())));
      const scale = LOAD_MS / 90_000;
      const timeline = (async () => {
        await at(8_000 * scale);
        kmsA.pause();
        faults.push("KMS us-east-1 paused 6 s");
        await at(14_000 * scale);
        kmsA.resume();
        await at(20_000 * scale);
        kmsB.pause();
        faults.push("KMS eu-west-1 paused 6 s");
        await at(26_000 * scale);
        kmsB.resume();
        await at(32_000 * scale);
        await kmsA.disableKey("us-east-1", keyA);
        faults.push("KMS us-east-1 key disabled 6 s");
        await at(38_000 * scale);
        await kmsA.enableKey("us-east-1", keyA);
        await at(44_000 * scale);
        await (signers[0] as SignerProcess).kill();
        faults.push("signer region sa killed (SIGKILL) and restarted");
        await (signers[0] as SignerProcess).restart();
        await at(56_000 * scale);
        faults.push("database locked 1.5 s from another connection");
        await holdDatabaseLock(dbPath(), 1_500);
        await at(64_000 * scale);
        const from = Date.now();
        kmsA.pause();
        kmsB.pause();
        faults.push("both KMS regions paused 4 s");
        await at(68_000 * scale);
        kmsA.resume();
        kmsB.resume();
        bothDown.push({ from, to: Date.now(), what: "kms" });
        await at(74_000 * scale);
        await kmsA.kill();
        faults.push("KMS us-east-1 killed for good");
      })();

      // ---- the load: workers retrying with the same Idempotency-Key ----
      const outcomes: Outcome[] = [];
      let nextCode = 0;
      let serial = 0;
      const worker = async (w: number) => {
        while (Date.now() - t0 < LOAD_MS) {
          const n = serial++;
          const enroll = n % 2 === 0 && nextCode < codes.length;
          const key = `soak-${w}-${n}`;
          const startedAt = Date.now();
          const attempts: Outcome["attempts"] = [];
          let last:
            | { status: number; body: { fingerprint?: string; error?: { code?: string } } }
            | undefined;
          let request: () => Promise<typeof last>;
          if (enroll) {
            const c = codes[nextCode++] as (typeof codes)[number];
            const body = { code: c.code, publicKey: pem(c.curve, n) };
            request = () => api("POST", "/v1/enroll", { body, key });
          } else {
            const net = networks[n % 2] as (typeof networks)[number];
            const body = {
              publicKey: pem(net.curve, n),
              name: `direct-${n}`,
              networks: [`${net.prefix}.${200 + (n % 50)}.${1 + (n % 250)}/16`],
            };
            request = () => api("POST", `/v1/networks/${net.id}/sign`, { token: admin, body, key });
          }
          for (let attempt = 0; attempt < 4; attempt++) {
            last = await request();
            attempts.push({ status: last?.status ?? 0, code: last?.body?.error?.code });
            if ((last?.status ?? 0) < 500) break;
            await new Promise((r) => setTimeout(r, 400 * (attempt + 1)));
          }
          outcomes.push({
            op: enroll ? "enroll" : "sign",
            key,
            startedAt,
            endedAt: Date.now(),
            attempts,
            fingerprint: last?.body?.fingerprint,
            finalStatus: last?.status ?? 0,
            finalCode: last?.body?.error?.code,
          });
        }
      };
      await Promise.all(Array.from({ length: WORKERS }, (_, w) => worker(w)));
      await timeline;
      const elapsed = (Date.now() - t0) / 1000;

      // ---- the audit chain, verified by a signer ----
      const agent = relayAgent(pki);
      const verify = await callSigner(
        agent,
        (signers[1] as SignerProcess).url,
        "GET",
        "/v1/audit/verify",
        { token: admin },
      );
      await agent.close();
      expect(verify.status, verify.text).toBe(200);
      for (const s of signers) await s.stop();

      // ---- the database, read directly ----
      const db = createClient({ url: `file:${dbPath()}` });
      const rows = async (sql: string) => (await db.execute(sql)).rows;
      const certs = await rows("select fingerprint, idempotency_key from certificates");
      const signRows = await rows(
        "select cert_fingerprint as fp, count(*) as n from audit_events where action = 'cert.sign' and outcome = 'ok' group by cert_fingerprint",
      );
      const audited = new Map(signRows.map((r) => [String(r.fp), Number(r.n)]));
      const stored = new Set(certs.map((r) => String(r.fingerprint)));
      const withoutAudit = [...stored].filter((fp) => audited.get(fp) !== 1);
      const auditWithoutCert = [...audited.keys()].filter((fp) => !stored.has(fp));
      const keysUsed = certs.map((r) => r.idempotency_key).filter((k) => k !== null);
      const duplicatedKeys = keysUsed.length - new Set(keysUsed).size;
      db.close();

      // What clients were given must all be there, and one key never yields two certificates.
      const given = outcomes.filter((o) => o.finalStatus < 300 && o.fingerprint);
      const lost = given.filter((o) => !stored.has(o.fingerprint as string));
      const fpByKey = new Map<string, Set<string>>();
      for (const o of given)
        fpByKey.set(o.key, (fpByKey.get(o.key) ?? new Set()).add(o.fingerprint as string));
      const keyTwice = [...fpByKey.values()].filter((s) => s.size > 1).length;

      // Failures: only 503s with a stable code, and only when the op overlapped a both-down window.
      const failed = outcomes.filter((o) => o.finalStatus >= 300);
      const margin = KMS_TIMEOUT_MS * 2 + 3_000;
      const unexplained = failed.filter(
        (o) =>
          !(
            o.finalStatus === 503 &&
            o.finalCode === "kms_unavailable" &&
            bothDown.some((w) => o.startedAt <= w.to + margin && o.endedAt >= w.from)
          ),
      );
      // The same holds for every attempt a client retried: a failed attempt outside a both-down
      // window means one region's outage leaked through to a caller.
      const inWindow = (o: Outcome) =>
        bothDown.some((w) => o.startedAt <= w.to + margin && o.endedAt >= w.from);
      const strayAttempts = outcomes.flatMap((o) =>
        o.attempts
          .filter(
            (a) =>
              a.status >= 300 && !(a.status === 503 && a.code === "kms_unavailable" && inWindow(o)),
          )
          .map(
            (a) =>
              `${o.op} attempt ${a.status} ${a.code} at ${((o.startedAt - t0) / 1000).toFixed(1)}s`,
          ),
      );
      const byCode = new Map<string, number>();
      let retried = 0;
      for (const o of outcomes) {
        if (o.attempts.length > 1) retried++;
        for (const a of o.attempts) {
          const k = `${a.status}${a.code ? ` ${a.code}` : ""}`;
          byCode.set(k, (byCode.get(k) ?? 0) + 1);
        }
      }
      const requests = [...byCode.values()].reduce((a, b) => a + b, 0);
      process.stdout.write(
        `${[
          `soak: ${elapsed.toFixed(0)} s, ${WORKERS} workers, faults injected ${faults.length}: ${faults.join("; ")}`,
          `soak: ${outcomes.length} operations (${outcomes.filter((o) => o.op === "enroll").length} enrollments, ${outcomes.filter((o) => o.op === "sign").length} signings), ${requests} requests, ${retried} retried, ${given.length} certificates handed out, ${stored.size} stored`,
          `soak: responses by code: ${[...byCode.entries()].map(([k, n]) => `${k} x${n}`).join(", ")}`,
          `soak: final failures ${failed.length} (unexplained ${unexplained.length}); rows lost: ${lost.length}; certificates without one audit row: ${withoutAudit.length}; audit rows without certificate: ${auditWithoutCert.length}; idempotency keys issued twice: ${duplicatedKeys + keyTwice}; audit chain: ${JSON.stringify(verify.body).slice(0, 120)}`,
        ].join("\n")}\n`,
      );

      expect(faults.length).toBe(7);
      expect(given.length).toBeGreaterThan(20);
      expect(lost).toEqual([]);
      expect(withoutAudit).toEqual([]);
      expect(auditWithoutCert).toEqual([]);
      expect(duplicatedKeys).toBe(0);
      expect(keyTwice).toBe(0);
      expect(strayAttempts).toEqual([]);
      expect(
        unexplained.map(
          (o) =>
            `${o.op} ${o.finalStatus} ${o.finalCode} at ${((o.startedAt - t0) / 1000).toFixed(1)}s`,
        ),
      ).toEqual([]);
    }, 300_000);
  },
);
