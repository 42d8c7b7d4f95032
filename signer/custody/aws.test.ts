/**
 * Key custody on the aws backend against real moto_server processes, one per region (starts:
 * moto_server x2, once for the file). Regions are killed and paused (SIGSTOP) to make real outages:
 * refused connections and a server that accepts but never answers.
 */
import { randomBytes } from "node:crypto";
import { createServer, type Server } from "node:http";
import { createServer as createTcpServer, type Socket, type Server as TcpServer } from "node:net";
import { DecryptCommand, DisabledException, KMSClient } from "@aws-sdk/client-kms";
import { FetchHttpHandler } from "@smithy/fetch-http-handler";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  MOTO_CREDENTIALS,
  type MotoRegion,
  motoServer,
  startMoto,
} from "../../test/support/moto.ts";
import { describeWith } from "../../test/support/tools.ts";
import { classifyKmsError, kmsRequestHandler } from "./aws.ts";
import { createCustody, type KeyCustody, type SealedCopy } from "./index.ts";

import { CTX, caught, openAndKeep } from "./testing.ts";

const A = "us-east-1";
const B = "eu-west-1";

interface Pair {
  a: MotoRegion;
  b: MotoRegion;
  keyA: string;
  keyB: string;
}

/** A region endpoint that misbehaves below HTTP: `answer` gets each connection's first bytes. */
async function rawRegion(
  answer: (socket: Socket) => void,
): Promise<{ url: string; close(): Promise<void> }> {
  const server: TcpServer = createTcpServer((socket) => {
    socket.on("error", () => {});
    socket.once("data", () => answer(socket));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const addr = server.address();
  return {
    url: `http://127.0.0.1:${typeof addr === "object" && addr !== null ? addr.port : 0}`,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

async function startPair(): Promise<Pair> {
  const [a, b] = await Promise.all([startMoto(), startMoto()]);
  const [keyA, keyB] = await Promise.all([a.createKey(A), b.createKey(B)]);
  return { a, b, keyA, keyB };
}

const made: KeyCustody[] = [];
afterEach(async () => {
  for (const c of made.splice(0)) await c.close();
});

async function custodyFor(
  p: Pair,
  options: { attemptTimeoutMs?: number; hedgeAfterMs?: number | null } = {},
  endpoints: Record<string, string> = { [A]: p.a.url, [B]: p.b.url },
): Promise<KeyCustody> {
  const c = await createCustody({
    backend: "aws",
    keys: { [A]: p.keyA, [B]: p.keyB },
    endpoints,
    credentials: MOTO_CREDENTIALS,
    attemptTimeoutMs: options.attemptTimeoutMs ?? 1500,
    hedgeAfterMs: options.hedgeAfterMs ?? null,
  });
  made.push(c);
  return c;
}

const REQUEST_ID = /^[A-Za-z0-9-]{20,}$/;

describeWith([motoServer], "aws custody against two moto_server regions", () => {
  let p: Pair;
  let disabledRegion: Server | undefined;
  let disabledUrl = "";
  let requests = 0;
  beforeAll(async () => {
    p = await startPair();
    disabledRegion = createServer((req, res) => {
      requests += 1;
      req.resume();
      req.on("end", () => {
        res.writeHead(400, {
          "content-type": "application/x-amz-json-1.1",
          "x-amzn-requestid": `disabled-${requests}-0000000000000000`,
        });
        res.end(JSON.stringify({ __type: "DisabledException", message: `${p.keyA} is disabled.` }));
      });
    });
    const server = disabledRegion;
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const addr = server.address();
    disabledUrl = `http://127.0.0.1:${typeof addr === "object" && addr !== null ? addr.port : 0}`;
  }, 120_000); // moto_server takes seconds to start on a loaded machine
  afterAll(async () => {
    p?.a.resume();
    p?.b.resume();
    await new Promise((r) => (disabledRegion ? disabledRegion.close(r) : r(undefined)));
    await Promise.all([p?.a.kill(), p?.b.kill()]);
  });

  describe("both regions up", () => {
    it("seals a copy in both regions under each region's key, with request ids; opens, zeroes, opens again", async () => {
      const c = await custodyFor(p);
      expect([c.backend, c.label, c.regions]).toEqual(["aws", "aws-kms", [A, B]]);
      const key = randomBytes(64);
      const { copies, attempts } = await c.sealCaKey(key, CTX);
      expect(copies.map((s) => s.region)).toEqual([A, B]);
      expect(copies[0]?.keyId).toContain(p.keyA);
      expect(copies[1]?.keyId).toContain(p.keyB);
      expect(attempts.map((a) => [a.region, a.operation, a.outcome])).toEqual([
        [A, "encrypt", "ok"],
        [B, "encrypt", "ok"],
      ]);
      for (const a of attempts) expect(a.requestId).toMatch(REQUEST_ID);

      const first = await openAndKeep(c, copies);
      expect(first.seen).toEqual(new Uint8Array(key));
      expect(first.buffer.every((x) => x === 0)).toBe(true);
      expect(first.result.region).toBe(A);
      expect(first.result.attempts).toHaveLength(1);
      expect(first.result.attempts[0]).toMatchObject({
        region: A,
        operation: "decrypt",
        outcome: "ok",
      });
      expect(first.result.attempts[0]?.requestId).toMatch(REQUEST_ID);
      const second = await openAndKeep(c, copies);
      expect(second.seen).toEqual(new Uint8Array(key));
      expect(c.stats().decryptCalls).toEqual({ [A]: 2, [B]: 0 });
    });

    it("the two copies are independent: B's copy opens in B alone", async () => {
      const c = await custodyFor(p);
      const key = randomBytes(32);
      const { copies } = await c.sealCaKey(key, CTX);
      const onlyB = copies.filter((s) => s.region === B);
      const { result, seen } = await openAndKeep(c, onlyB);
      expect(seen).toEqual(new Uint8Array(key));
      expect(result.region).toBe(B);
      // and A's ciphertext means nothing to B's KMS
      const kmsB = new KMSClient({
        region: B,
        endpoint: p.b.url,
        credentials: MOTO_CREDENTIALS,
        maxAttempts: 1,
      });
      try {
        await expect(
          kmsB.send(
            new DecryptCommand({
              CiphertextBlob: copies[0]?.ciphertext,
              EncryptionContext: { ...CTX },
            }),
          ),
        ).rejects.toThrow();
      } finally {
        kmsB.destroy();
      }
    });

    it("wrong context (org Y) is denied after exactly ONE attempt, with moto's request id, and no failover", async () => {
      const c = await custodyFor(p);
      const { copies } = await c.sealCaKey(randomBytes(64), CTX);
      let called = false;
      const err = await caught(
        c.openCaKey("ca-1", copies, { ...CTX, org: "org-y" }, async () => {
          called = true;
        }),
      );
      expect(called).toBe(false);
      expect(err.kind).toBe("denied");
      expect(err.attempts).toHaveLength(1);
      expect(err.attempts[0]).toMatchObject({
        region: A,
        outcome: "denied",
        error: "InvalidCiphertextException",
      });
      expect(err.attempts[0]?.requestId).toMatch(REQUEST_ID);
      expect(c.stats()).toMatchObject({
        decryptCalls: { [A]: 1, [B]: 0 },
        denials: 1,
        failovers: 0,
      });
    });

    it("100 concurrent opens of one CA make one decrypt call; every use saw the same key; zeroed after", async () => {
      const c = await custodyFor(p);
      const key = randomBytes(64);
      const { copies } = await c.sealCaKey(key, CTX);
      const buffers = new Set<Uint8Array>();
      const seen: Uint8Array[] = [];
      const results = await Promise.all(
        Array.from({ length: 100 }, () =>
          c.openCaKey("ca-1", copies, CTX, async (plaintext) => {
            buffers.add(plaintext);
            seen.push(new Uint8Array(plaintext));
            return 1;
          }),
        ),
      );
      expect(c.stats()).toMatchObject({
        decryptCalls: { [A]: 1, [B]: 0 },
        opens: 100,
        sharedOpens: 99,
      });
      expect(results.filter((r) => !r.shared)).toHaveLength(1);
      for (const s of seen) expect(s).toEqual(new Uint8Array(key));
      expect(buffers.size).toBe(1);
      for (const b of buffers) expect(b.every((x) => x === 0)).toBe(true);
    });

    it("health reports both regions up; a disabled key shows its region down (DescribeKey)", async () => {
      const c = await custodyFor(p);
      const up = await c.health();
      expect(up[A]?.status).toBe("ok");
      expect(up[B]?.status).toBe("ok");
      await p.b.disableKey(B, p.keyB);
      try {
        const h = await c.health();
        expect(h[B]).toMatchObject({ status: "down", error: "key state Disabled" });
      } finally {
        await p.b.enableKey(B, p.keyB);
      }
    });

    it("moto 5.2.1 does NOT refuse Decrypt with a disabled key (recorded so a change in moto shows up here)", async () => {
      const c = await custodyFor(p);
      const key = randomBytes(32);
      const { copies } = await c.sealCaKey(key, CTX);
      await p.a.disableKey(A, p.keyA);
      try {
        const { result, seen } = await openAndKeep(c, copies);
        expect(seen).toEqual(new Uint8Array(key));
        expect(result.region).toBe(A); // real KMS answers DisabledException here; see the next group
      } finally {
        await p.a.enableKey(A, p.keyA);
      }
    });
  });

  /**
   * moto 5.2.1 decrypts with a disabled key (see above), so a disabled key in region A is stood for by a
   * loopback server that answers Decrypt the way AWS KMS documents for a disabled key: HTTP 400 with
   * {"__type":"DisabledException"}. The SDK parses that real wire answer; region B is a real moto_server.
   */
  describe("key disabled in region A", () => {
    it("DisabledException from A fails over to B, with A's request id in the attempts", async () => {
      const sealer = await custodyFor(p);
      const key = randomBytes(64);
      const { copies } = await sealer.sealCaKey(key, CTX);
      const c = await custodyFor(p, {}, { [A]: disabledUrl, [B]: p.b.url });
      const { result, seen } = await openAndKeep(c, copies);
      expect(seen).toEqual(new Uint8Array(key));
      expect(result.attempts.map((a) => [a.region, a.outcome, a.error, a.requestId])).toEqual([
        [A, "unavailable", "DisabledException", "disabled-1-0000000000000000"],
        [B, "ok", undefined, result.attempts[1]?.requestId],
      ]);
      expect(requests).toBe(1); // SDK retries are off
    });

    it("classifies the SDK's own exception classes: disabled is availability, not denial", () => {
      const disabled = new DisabledException({
        message: "disabled",
        $metadata: { requestId: "r-1" },
      });
      expect(classifyKmsError(disabled)).toMatchObject({
        outcome: "unavailable",
        message: "DisabledException",
        requestId: "r-1",
      });
      const named = (name: string) => Object.assign(new Error("x"), { name, $metadata: {} });
      for (const n of [
        "AccessDeniedException",
        "InvalidCiphertextException",
        "IncorrectKeyException",
      ]) {
        expect(classifyKmsError(named(n)).outcome).toBe("denied");
      }
      for (const n of [
        "KMSInvalidStateException",
        "KeyUnavailableException",
        "ThrottlingException",
        "KMSInternalException",
      ]) {
        expect(classifyKmsError(named(n)).outcome).toBe("unavailable");
      }
      expect(
        classifyKmsError(
          Object.assign(new Error("x"), { name: "Weird", $metadata: { httpStatusCode: 503 } }),
        ).outcome,
      ).toBe("unavailable");
      expect(classifyKmsError(named("ValidationException")).outcome).toBe("error");
    });
  });

  describe("region A broken below KMS (reset connections, answers that are not KMS's)", () => {
    it("KMS calls go through the runtime's own HTTP client: Bun's fetch under Bun, node:http elsewhere", () => {
      const handler = kmsRequestHandler(250);
      if (process.versions.bun !== undefined) expect(handler).toBeInstanceOf(FetchHttpHandler);
      else expect(handler).toEqual({ connectionTimeout: 250, requestTimeout: 250 });
    });

    it("a region that resets the connection fails over to B, with no request id from A", async () => {
      const sealer = await custodyFor(p);
      const key = randomBytes(64);
      const { copies } = await sealer.sealCaKey(key, CTX);
      const reset = await rawRegion((socket) => socket.resetAndDestroy());
      try {
        const c = await custodyFor(p, {}, { [A]: reset.url, [B]: p.b.url });
        const { result, seen } = await openAndKeep(c, copies);
        expect(seen).toEqual(new Uint8Array(key));
        expect(result.attempts.map((a) => [a.region, a.outcome, a.error, a.requestId])).toEqual([
          [A, "unavailable", "network: ECONNRESET", null],
          [B, "ok", undefined, result.attempts[1]?.requestId],
        ]);
      } finally {
        await reset.close();
      }
    });

    it("a region answering 500 with a body that is not KMS's fails over to B", async () => {
      const sealer = await custodyFor(p);
      const key = randomBytes(64);
      const { copies } = await sealer.sealCaKey(key, CTX);
      const broken = await rawRegion((socket) =>
        socket.end("HTTP/1.1 500 Internal Server Error\r\ncontent-length: 9\r\n\r\nnot json!"),
      );
      try {
        const c = await custodyFor(p, {}, { [A]: broken.url, [B]: p.b.url });
        const { result, seen } = await openAndKeep(c, copies);
        expect(seen).toEqual(new Uint8Array(key));
        expect(result.attempts.map((a) => [a.region, a.outcome])).toEqual([
          [A, "unavailable"],
          [B, "ok"],
        ]);
        expect(result.attempts[0]?.error).toMatch(/HTTP 500/);
      } finally {
        await broken.close();
      }
    });
  });

  // Destructive, in this order: A paused then resumed; A killed; then B paused as well.
  describe("outages", () => {
    let kept: { copies: SealedCopy[] } | undefined;
    const sealedEarlier = async () => {
      if (kept === undefined) throw new Error("needs the copies sealed by the earlier test");
      return kept;
    };
    it("region A paused => answers within attemptTimeoutMs + margin, then much faster with the hedge", async () => {
      const timeout = 800;
      const plain = await custodyFor(p, { attemptTimeoutMs: timeout });
      const hedged = await custodyFor(p, { attemptTimeoutMs: timeout, hedgeAfterMs: 100 });
      const key = randomBytes(64);
      const { copies } = await plain.sealCaKey(key, CTX);
      p.a.pause();

      let started = performance.now();
      const slow = await openAndKeep(plain, copies);
      const slowMs = performance.now() - started;
      expect(slow.seen).toEqual(new Uint8Array(key));
      expect(slowMs).toBeGreaterThanOrEqual(timeout - 10);
      expect(slowMs).toBeLessThan(timeout + 700);
      expect(slow.result.attempts.map((a) => [a.region, a.outcome, a.error])).toEqual([
        [A, "unavailable", `timeout after ${timeout}ms`],
        [B, "ok", undefined],
      ]);

      started = performance.now();
      const fast = await openAndKeep(hedged, copies);
      const fastMs = performance.now() - started;
      expect(fast.seen).toEqual(new Uint8Array(key));
      expect(fastMs).toBeLessThan(timeout);
      expect(fast.result.region).toBe(B);
      expect(fast.result.attempts).toHaveLength(2);
      expect(fast.result.attempts[0]).toMatchObject({ region: A, outcome: "unavailable" });
      expect(fast.result.attempts[0]?.error).toMatch(/abandoned/);
      expect(fast.result.attempts[1]).toMatchObject({ region: B, outcome: "ok", hedged: true });
      expect(hedged.stats().hedges).toBe(1);
      p.a.resume();
      process.stderr.write(
        `[measured] paused region A: no hedge ${slowMs.toFixed(0)}ms, hedge@100ms ${fastMs.toFixed(0)}ms\n`,
      );
    });

    it("region A killed => opens through B; attempts show A's refused connection and B's success", async () => {
      const c = await custodyFor(p);
      const key = randomBytes(64);
      const { copies } = await c.sealCaKey(key, CTX);
      kept = { copies };
      await p.a.kill();
      const { result, seen, buffer } = await openAndKeep(c, copies);
      expect(seen).toEqual(new Uint8Array(key));
      expect(buffer.every((x) => x === 0)).toBe(true);
      expect(result.region).toBe(B);
      expect(result.attempts.map((a) => [a.region, a.outcome, a.error])).toEqual([
        [A, "unavailable", "network: ECONNREFUSED"],
        [B, "ok", undefined],
      ]);
      expect(result.attempts[0]?.requestId).toBeNull(); // nothing answered, so there is no request id
      expect(result.attempts[1]?.requestId).toMatch(REQUEST_ID);
      expect(c.stats().failovers).toBe(1);
      const h = await c.health();
      expect([h[A]?.status, h[B]?.status]).toEqual(["down", "ok"]);
      // sealing needs every region
      const err = await caught(c.sealCaKey(randomBytes(32), CTX));
      expect(err.kind).toBe("unavailable");
      expect(err.attempts.map((a) => [a.region, a.outcome])).toEqual([
        [A, "unavailable"],
        [B, "ok"],
      ]);
    });

    it("both regions down (A killed, B paused) => CustodyError unavailable with both attempts, use never called", async () => {
      const c = await custodyFor(p, { attemptTimeoutMs: 600 });
      const { copies } = await sealedEarlier();
      p.b.pause();
      let called = false;
      const started = performance.now();
      const err = await caught(
        c.openCaKey("ca-1", copies, CTX, async () => {
          called = true;
        }),
      );
      expect(performance.now() - started).toBeLessThan(600 + 700);
      expect(called).toBe(false);
      expect(err.kind).toBe("unavailable");
      expect(err.message).toMatch(/retry later/);
      expect(err.attempts.map((a) => [a.region, a.outcome, a.error])).toEqual([
        [A, "unavailable", "network: ECONNREFUSED"],
        [B, "unavailable", "timeout after 600ms"],
      ]);
      p.b.resume();
    });
  });
});
