/**
 * Key custody on the local (development) backend, with real files: seal in both regions, open,
 * zeroing, failover when a region's master key file is gone or unreadable, a hung region (a FIFO
 * that never yields its key) for timeouts and the hedge, context tampering, bad key files, and
 * coalescing of concurrent opens.
 */

import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  chmodSync,
  closeSync,
  constants,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  COALESCE_UNDER_LOAD_MS,
  createCustody,
  type KeyCustody,
  masterKeyPath,
  type SealedCopy,
  SHARE_WINDOW_MS,
} from "./index.ts";

import { CTX, caught, openAndKeep } from "./testing.ts";

let dataDir: string;
const opened: KeyCustody[] = [];

beforeEach(() => {
  dataDir = mkdtempSync(join(tmpdir(), "keyhole-custody-"));
});
afterEach(async () => {
  for (const c of opened.splice(0)) await c.close();
  rmSync(dataDir, { recursive: true, force: true });
});

async function custody(
  options: {
    attemptTimeoutMs?: number;
    hedgeAfterMs?: number | null;
    regionCooldownMs?: number;
  } = {},
): Promise<KeyCustody> {
  const c = await createCustody({ backend: "local", dataDir, ...options });
  opened.push(c);
  return c;
}

async function sealed(
  c: KeyCustody,
  key = randomBytes(64),
): Promise<{ key: Uint8Array; copies: SealedCopy[] }> {
  const { copies } = await c.sealCaKey(key, CTX);
  return { key: new Uint8Array(key), copies };
}

describe("local custody: seal and open", () => {
  it("seals in both regions under independent keys, files 0600 and 32 bytes, labelled for development", async () => {
    const c = await custody();
    expect(c.backend).toBe("local");
    expect(c.label).toMatch(/development/);
    expect(c.regions).toEqual(["local-a", "local-b"]);
    const key = randomBytes(64);
    const { copies, attempts } = await c.sealCaKey(key, CTX);
    expect(copies.map((s) => s.region)).toEqual(["local-a", "local-b"]);
    expect(copies[0]?.keyId).not.toBe(copies[1]?.keyId);
    expect(
      Buffer.from(copies[0]?.ciphertext ?? []).equals(Buffer.from(copies[1]?.ciphertext ?? [])),
    ).toBe(false);
    expect(attempts.map((a) => [a.region, a.operation, a.outcome])).toEqual([
      ["local-a", "encrypt", "ok"],
      ["local-b", "encrypt", "ok"],
    ]);
    for (const a of attempts) expect(a.requestId).toMatch(/^[0-9a-f-]{36}$/);
    for (const region of c.regions) {
      const st = statSync(masterKeyPath(dataDir, region));
      expect(st.mode & 0o777).toBe(0o600);
      expect(st.size).toBe(32);
    }
    // the plaintext is nowhere in what gets stored
    for (const s of copies) expect(Buffer.from(s.ciphertext).includes(key)).toBe(false);
    expect(key.some((b) => b !== 0)).toBe(true); // the caller's buffer is the caller's to zero
  });

  it("opens in the first region, zeroes the buffer after use, and decrypts again for a later open", async () => {
    const c = await custody();
    const { key, copies } = await sealed(c);
    const first = await openAndKeep(c, copies);
    expect(first.seen).toEqual(key);
    expect(first.buffer.length).toBe(64);
    expect(first.buffer.every((b) => b === 0)).toBe(true);
    expect(first.result).toMatchObject({ value: "signed", region: "local-a", shared: false });
    expect(first.result.attempts).toHaveLength(1);
    const second = await openAndKeep(c, copies);
    expect(second.seen).toEqual(key);
    expect(second.buffer).not.toBe(first.buffer);
    expect(c.stats().decryptCalls).toEqual({ "local-a": 2, "local-b": 0 });
  });

  it("zeroes the buffer when use throws, and passes the error through", async () => {
    const c = await custody();
    const { copies } = await sealed(c);
    let buffer: Uint8Array = new Uint8Array();
    await expect(
      c.openCaKey("ca-1", copies, CTX, async (plaintext) => {
        buffer = plaintext;
        throw new Error("signing failed");
      }),
    ).rejects.toThrow("signing failed");
    expect(buffer.length).toBe(64);
    expect(buffer.every((b) => b === 0)).toBe(true);
  });

  it("opens the same CA under a restarted custody (keys persist in the data folder)", async () => {
    const first = await custody();
    const { key, copies } = await sealed(first);
    await first.close();
    const again = await custody();
    expect((await openAndKeep(again, copies)).seen).toEqual(key);
  });
});

describe("local custody: regions down", () => {
  it("fails over to region B when A's key file is deleted; attempts show both", async () => {
    const c = await custody();
    const { key, copies } = await sealed(c);
    rmSync(masterKeyPath(dataDir, "local-a"));
    const { result, seen } = await openAndKeep(c, copies);
    expect(seen).toEqual(key);
    expect(result.region).toBe("local-b");
    expect(result.attempts.map((a) => [a.region, a.outcome, a.error])).toEqual([
      ["local-a", "unavailable", "master key file unreadable (ENOENT)"],
      ["local-b", "ok", undefined],
    ]);
    expect(result.attempts[0]?.requestId).toMatch(/^[0-9a-f-]{36}$/);
    expect(c.stats().failovers).toBe(1);
    const health = await c.health();
    expect(health["local-a"]?.status).toBe("down");
    expect(health["local-b"]?.status).toBe("ok");
  });

  it("asks region B first while A cools down after a failure, and A first again once it is over", async () => {
    const c = await custody({ regionCooldownMs: 200 });
    const { key, copies } = await sealed(c);
    const regionsAsked = async () =>
      (await openAndKeep(c, copies)).result.attempts.map((a) => `${a.region}:${a.outcome}`);
    rmSync(masterKeyPath(dataDir, "local-a"));
    expect(await regionsAsked()).toEqual(["local-a:unavailable", "local-b:ok"]);
    expect(await regionsAsked()).toEqual(["local-b:ok"]);
    expect(await regionsAsked()).toEqual(["local-b:ok"]);
    await new Promise((r) => setTimeout(r, 250));
    expect(await regionsAsked()).toEqual(["local-a:unavailable", "local-b:ok"]);
    // A cooling region is still asked when the other fails.
    const bKey = readFileSync(masterKeyPath(dataDir, "local-b"));
    rmSync(masterKeyPath(dataDir, "local-b"));
    const both = await caught(c.openCaKey("ca-1", copies, CTX, async () => undefined));
    expect(both.attempts?.map((a) => `${a.region}:${a.outcome}`)).toEqual([
      "local-b:unavailable",
      "local-a:unavailable",
    ]);
    writeFileSync(masterKeyPath(dataDir, "local-b"), bKey, { mode: 0o600 });
    expect((await openAndKeep(c, copies)).seen).toEqual(key);
  });

  it("keeps the configured order after failures when the cool-down is 0", async () => {
    const c = await custody({ regionCooldownMs: 0 });
    const { copies } = await sealed(c);
    rmSync(masterKeyPath(dataDir, "local-a"));
    for (let i = 0; i < 2; i++) {
      const { result } = await openAndKeep(c, copies);
      expect(result.attempts.map((a) => a.region)).toEqual(["local-a", "local-b"]);
    }
  });

  it("fails over when A's key file is unreadable (a directory in its place)", async () => {
    const c = await custody();
    const { key, copies } = await sealed(c);
    const path = masterKeyPath(dataDir, "local-a");
    rmSync(path);
    mkdirSync(path);
    const { result, seen } = await openAndKeep(c, copies);
    expect(seen).toEqual(key);
    expect(result.attempts.map((a) => a.outcome)).toEqual(["unavailable", "ok"]);
    expect(result.attempts[0]?.error).toMatch(/unreadable/);
  });

  it("fails over when A's key was replaced by another key (the sealing key is not in that region)", async () => {
    const c = await custody();
    const { key, copies } = await sealed(c);
    writeFileSync(masterKeyPath(dataDir, "local-a"), randomBytes(32), { mode: 0o600 });
    const { result, seen } = await openAndKeep(c, copies);
    expect(seen).toEqual(key);
    expect(result.attempts.map((a) => [a.outcome, a.error])).toEqual([
      ["unavailable", "NotFoundException: the sealing key is not in this region"],
      ["ok", undefined],
    ]);
  });

  it("both regions down => CustodyError unavailable carrying both attempts", async () => {
    const c = await custody();
    const { copies } = await sealed(c);
    rmSync(masterKeyPath(dataDir, "local-a"));
    rmSync(masterKeyPath(dataDir, "local-b"));
    let called = false;
    const err = await caught(
      c.openCaKey("ca-1", copies, CTX, async () => {
        called = true;
      }),
    );
    expect(called).toBe(false);
    expect(err.kind).toBe("unavailable");
    expect(err.attempts.map((a) => [a.region, a.outcome])).toEqual([
      ["local-a", "unavailable"],
      ["local-b", "unavailable"],
    ]);
  });

  it("sealing with one region down fails: a CA must be sealed in every region", async () => {
    const c = await custody();
    rmSync(masterKeyPath(dataDir, "local-b"));
    const err = await caught(c.sealCaKey(randomBytes(64), CTX));
    expect(err.kind).toBe("unavailable");
    expect(err.message).toMatch(/local-b/);
    expect(err.attempts.map((a) => [a.region, a.outcome])).toEqual([
      ["local-a", "ok"],
      ["local-b", "unavailable"],
    ]);
  });
});

describe("local custody: a hung region (its key file is a FIFO nobody writes)", () => {
  function hang(region: string): () => void {
    const path = masterKeyPath(dataDir, region);
    rmSync(path);
    execFileSync("mkfifo", ["-m", "600", path]);
    // Unblocks the reader stuck in open(): open the write end, then close it (the reader sees EOF).
    return () => {
      try {
        closeSync(openSync(path, constants.O_WRONLY | constants.O_NONBLOCK));
      } catch {
        // no reader left
      }
    };
  }

  it("without a hedge: answers from B once A's attempt times out", async () => {
    const c = await custody({ attemptTimeoutMs: 300 });
    const { key, copies } = await sealed(c);
    const release = hang("local-a");
    try {
      const started = performance.now();
      const { result, seen } = await openAndKeep(c, copies);
      const ms = performance.now() - started;
      expect(seen).toEqual(key);
      expect(ms).toBeGreaterThanOrEqual(290);
      expect(ms).toBeLessThan(300 + 500);
      expect(result.attempts.map((a) => [a.region, a.outcome, a.error])).toEqual([
        ["local-a", "unavailable", "timeout after 300ms"],
        ["local-b", "ok", undefined],
      ]);
    } finally {
      release();
    }
  });

  it("with a hedge: asks B after hedgeAfterMs and answers well before the timeout", async () => {
    const c = await custody({ attemptTimeoutMs: 2000, hedgeAfterMs: 50 });
    const { key, copies } = await sealed(c);
    const release = hang("local-a");
    try {
      const started = performance.now();
      const { result, seen } = await openAndKeep(c, copies);
      const ms = performance.now() - started;
      expect(seen).toEqual(key);
      expect(ms).toBeLessThan(1000);
      expect(result.region).toBe("local-b");
      expect(result.attempts).toHaveLength(2);
      expect(result.attempts[0]).toMatchObject({ region: "local-a", outcome: "unavailable" });
      expect(result.attempts[0]?.error).toMatch(/abandoned/);
      expect(result.attempts[1]).toMatchObject({ region: "local-b", outcome: "ok", hedged: true });
      expect(c.stats().hedges).toBe(1);
    } finally {
      release();
    }
  });
});

describe("local custody: refusals", () => {
  it("a different org's context is denied after exactly one attempt, with no failover", async () => {
    const c = await custody();
    const { copies } = await sealed(c);
    const err = await caught(
      c.openCaKey("ca-1", copies, { ...CTX, org: "org-y" }, async () => "never"),
    );
    expect(err.kind).toBe("denied");
    expect(err.attempts).toHaveLength(1);
    expect(err.attempts[0]).toMatchObject({ region: "local-a", outcome: "denied" });
    expect(err.attempts[0]?.error).toMatch(/InvalidCiphertextException/);
    expect(c.stats()).toMatchObject({
      decryptCalls: { "local-a": 1, "local-b": 0 },
      denials: 1,
      failovers: 0,
    });
  });

  it("each context field is bound: network and ca swapped or changed are denied", async () => {
    const c = await custody();
    const { copies } = await sealed(c);
    for (const ctx of [
      { ...CTX, network: "net-2" },
      { ...CTX, ca: "ca-2" },
      { org: CTX.org, network: CTX.ca, ca: CTX.network },
    ]) {
      expect((await caught(c.openCaKey("ca-1", copies, ctx, async () => 0))).kind).toBe("denied");
    }
  });

  it("a tampered ciphertext or a copy naming another key is denied, not failed over", async () => {
    const c = await custody();
    const { copies } = await sealed(c);
    const [a, b] = copies as [SealedCopy, SealedCopy];
    const flipped = new Uint8Array(a.ciphertext);
    flipped[flipped.length - 1] = (flipped[flipped.length - 1] as number) ^ 1;
    const e1 = await caught(
      c.openCaKey("ca-1", [{ ...a, ciphertext: flipped }, b], CTX, async () => 0),
    );
    expect([e1.kind, e1.attempts.length]).toEqual(["denied", 1]);
    const e2 = await caught(c.openCaKey("ca-1", [{ ...a, keyId: b.keyId }, b], CTX, async () => 0));
    expect([e2.kind, e2.attempts.length]).toEqual(["denied", 1]);
    expect(e2.attempts[0]?.error).toMatch(/IncorrectKeyException/);
  });

  it("refuses a master key of the wrong size or mode with a message that says what to do", async () => {
    mkdirSync(join(dataDir, "kms"), { recursive: true });
    const path = masterKeyPath(dataDir, "local-a");
    writeFileSync(path, randomBytes(16), { mode: 0o600 });
    const wrongSize = await caught(createCustody({ backend: "local", dataDir }));
    expect(wrongSize.kind).toBe("invalid");
    expect(wrongSize.message).toContain(`${path} is 16 bytes, not 32`);
    expect(wrongSize.message).not.toMatch(/[0-9a-f]{32}/); // nothing of the key
    writeFileSync(path, randomBytes(32));
    chmodSync(path, 0o644);
    const wrongMode = await caught(createCustody({ backend: "local", dataDir }));
    expect(wrongMode.message).toContain(`chmod 600 ${path}`);
  });

  it("a key file broken after start fails that region over with the reason in the attempt", async () => {
    const c = await custody();
    const { key, copies } = await sealed(c);
    writeFileSync(masterKeyPath(dataDir, "local-a"), randomBytes(31));
    const { result, seen } = await openAndKeep(c, copies);
    expect(seen).toEqual(key);
    expect(result.attempts[0]).toMatchObject({ outcome: "error" });
    expect(result.attempts[0]?.error).toMatch(/31 bytes, not 32/);
  });

  it("refuses bad input before any KMS call", async () => {
    const c = await custody();
    const { copies } = await sealed(c);
    expect(
      (await caught(c.openCaKey("ca-1", copies, { ...CTX, org: "" }, async () => 0))).kind,
    ).toBe("invalid");
    expect((await caught(c.openCaKey("ca-1", [], CTX, async () => 0))).message).toMatch(
      /no sealed copy/,
    );
    expect((await caught(c.sealCaKey(new Uint8Array(0), CTX))).kind).toBe("invalid");
    expect(c.stats().decryptCalls).toEqual({ "local-a": 0, "local-b": 0 });
  });
});

describe("local custody: coalescing", () => {
  it("under concurrent load a new decrypt waits COALESCE_UNDER_LOAD_MS for company; alone or one by one it never waits", async () => {
    const c = await custody();
    const { key, copies } = await sealed(c);
    const calls = () => c.stats().decryptCalls["local-a"] ?? 0;
    // One caller after another: every open decrypts at once.
    for (let i = 0; i < 3; i++) await openAndKeep(c, copies);
    expect(c.stats().coalescingWaits).toBe(0);
    // A shared opening (five callers at once)...
    await Promise.all(Array.from({ length: 5 }, () => openAndKeep(c, copies)));
    const before = calls();
    // ...so the next decrypt waits, and a caller arriving 2 ms later rides along.
    const started = performance.now();
    const first = openAndKeep(c, copies);
    await new Promise((r) => setTimeout(r, 2));
    const second = openAndKeep(c, copies);
    const [a, b] = await Promise.all([first, second]);
    expect(performance.now() - started).toBeGreaterThanOrEqual(COALESCE_UNDER_LOAD_MS - 1);
    expect(a.seen).toEqual(key);
    expect(b.seen).toEqual(key);
    expect(b.result.shared).toBe(true);
    expect(calls() - before).toBe(1);
    expect(c.stats().coalescingWaits).toBe(1);
    // Once SHARE_WINDOW_MS has passed since, an open decrypts at once again.
    await new Promise((r) => setTimeout(r, SHARE_WINDOW_MS + 20));
    await openAndKeep(c, copies);
    expect(c.stats().coalescingWaits).toBe(1);
  });

  it("100 concurrent opens of one CA share one decrypt; every use sees the key; zeroed afterwards", async () => {
    const c = await custody();
    const { key, copies } = await sealed(c);
    const buffers = new Set<Uint8Array>();
    const seen: Uint8Array[] = [];
    const results = await Promise.all(
      Array.from({ length: 100 }, () =>
        c.openCaKey("ca-1", copies, CTX, async (plaintext) => {
          buffers.add(plaintext);
          await new Promise((r) => setTimeout(r, 1));
          seen.push(new Uint8Array(plaintext));
          return 1;
        }),
      ),
    );
    expect(c.stats()).toMatchObject({
      decryptCalls: { "local-a": 1, "local-b": 0 },
      opens: 100,
      sharedOpens: 99,
    });
    expect(results.filter((r) => r.shared)).toHaveLength(99);
    expect(seen).toHaveLength(100);
    for (const s of seen) expect(s).toEqual(key);
    expect(buffers.size).toBe(1);
    for (const b of buffers) expect(b.every((x) => x === 0)).toBe(true);
    for (const r of results) expect(r.attempts).toEqual(results[0]?.attempts);
    // not kept for later: the next open decrypts again
    await c.openCaKey("ca-1", copies, CTX, async () => 0);
    expect(c.stats().decryptCalls["local-a"]).toBe(2);
  });

  it("callers arriving while an opened key is still signing join it, within SHARE_WINDOW_MS only; zeroed after the last", async () => {
    const c = await custody();
    const { key, copies } = await sealed(c);
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    let release!: () => void;
    const held = new Promise<void>((r) => {
      release = r;
    });
    let firstBuffer: Uint8Array | undefined;
    const first = c.openCaKey("ca-1", copies, CTX, async (p) => {
      firstBuffer = p;
      await held;
      return 1;
    });
    await sleep(20); // the decrypt has finished; `first` is still using the key
    const joined = await c.openCaKey("ca-1", copies, CTX, async (p) => {
      expect(p).toBe(firstBuffer);
      return new Uint8Array(p);
    });
    expect(joined.shared).toBe(true);
    expect(joined.value).toEqual(key);
    expect(c.stats().decryptCalls["local-a"]).toBe(1);
    expect(firstBuffer?.every((x) => x === 0)).toBe(false); // still in use by `first`
    await sleep(SHARE_WINDOW_MS + 50); // past the window: a newcomer decrypts afresh
    const late = await c.openCaKey("ca-1", copies, CTX, async (p) => {
      expect(p).not.toBe(firstBuffer);
      return 2;
    });
    expect(late.shared).toBe(false);
    expect(c.stats().decryptCalls["local-a"]).toBe(2);
    release();
    await first;
    expect(firstBuffer?.every((x) => x === 0)).toBe(true);
  });

  it("a concurrent open with another org's context does not ride along: it is denied by its own attempt", async () => {
    const c = await custody();
    const { copies } = await sealed(c);
    const [good, bad] = await Promise.allSettled([
      c.openCaKey("ca-1", copies, CTX, async (p) => new Uint8Array(p)),
      c.openCaKey("ca-1", copies, { ...CTX, org: "org-y" }, async (p) => new Uint8Array(p)),
    ]);
    expect(good.status).toBe("fulfilled");
    expect(bad.status).toBe("rejected");
    expect((bad as PromiseRejectedResult).reason).toMatchObject({ kind: "denied" });
    expect(c.stats()).toMatchObject({ sharedOpens: 0, decryptCalls: { "local-a": 2 } });
  });

  it("joiners of a failed decrypt all get the error with the same attempts", async () => {
    const c = await custody();
    const { copies } = await sealed(c);
    rmSync(masterKeyPath(dataDir, "local-a"));
    rmSync(masterKeyPath(dataDir, "local-b"));
    const settled = await Promise.allSettled(
      Array.from({ length: 5 }, () => c.openCaKey("ca-1", copies, CTX, async () => 0)),
    );
    expect(settled.every((s) => s.status === "rejected")).toBe(true);
    expect(c.stats().decryptCalls).toEqual({ "local-a": 1, "local-b": 1 });
    for (const s of settled) expect((s as PromiseRejectedResult).reason.attempts).toHaveLength(2);
  });
});

describe("local custody: nothing secret leaks", () => {
  it("errors and attempts never contain the master key or the CA key", async () => {
    const c = await custody();
    const { key, copies } = await sealed(c);
    const master = readFileSync(masterKeyPath(dataDir, "local-a"));
    const err = await caught(c.openCaKey("ca-1", copies, { ...CTX, org: "org-y" }, async () => 0));
    const text = JSON.stringify({ message: err.message, attempts: err.attempts, stack: err.stack });
    for (const secret of [master, Buffer.from(key)]) {
      expect(text.includes(secret.toString("hex"))).toBe(false);
      expect(text.includes(secret.toString("base64"))).toBe(false);
    }
  });
});
