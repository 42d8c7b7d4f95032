/**
 * Invariant 1 end to end: the CA private key handed to custody for sealing, and the one custody hands
 * to the signing code, are all zeros once the request is answered; and the key's bytes appear nowhere
 * in the database file, its WAL, the logs or any response. Real local custody and libSQL file.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createCustody } from "./custody/index.ts";
import type { KeyCustody } from "./custody/types.ts";
import { hostPublicKeyPem, startTestSigner, type TestSigner } from "./testing.ts";

const handed: Uint8Array[] = [];
const copies: Uint8Array[] = [];
let s: TestSigner;

/** Real local custody; records the plaintext buffers it is given and gives out (and a copy of each). */
async function watchedCustody(dir: string): Promise<KeyCustody> {
  const real = await createCustody({ backend: "local", dataDir: join(dir, "custody") });
  return Object.assign(Object.create(real) as KeyCustody, {
    sealCaKey(plaintext: Uint8Array, context: Parameters<KeyCustody["sealCaKey"]>[1]) {
      handed.push(plaintext);
      copies.push(plaintext.slice());
      return real.sealCaKey(plaintext, context);
    },
    openCaKey<T>(...args: Parameters<KeyCustody["openCaKey"]>) {
      const [caId, sealed, context, use] = args;
      return real.openCaKey<T>(caId, sealed, context, async (plaintext) => {
        handed.push(plaintext);
        copies.push(plaintext.slice());
        return (await use(plaintext)) as T;
      });
    },
  });
}

beforeAll(async () => {
  s = await startTestSigner({ custody: watchedCustody });
});
afterAll(async () => {
  await s?.close();
});

function contains(haystack: Uint8Array, needle: Uint8Array): boolean {
  return Buffer.from(haystack).indexOf(Buffer.from(needle)) >= 0;
}

it("zeroes the CA key after sealing and after signing, and never stores, logs or returns it", async () => {
  const admin = await s.token();
  const net = await s.call("POST", "/v1/networks", {
    token: admin,
    body: { name: "keys", cidrs: ["10.80.0.0/16"] },
  });
  expect(net.status).toBe(201);
  const reg = await s.call("POST", `/v1/networks/${net.body.id}/hosts`, {
    token: admin,
    body: { name: "h" },
  });
  const enrolled = await s.call("POST", "/v1/enroll", {
    body: { code: reg.body.enrollmentCode, publicKey: await hostPublicKeyPem() },
  });
  expect(enrolled.status).toBe(201);
  expect(handed.length).toBeGreaterThanOrEqual(2);
  for (const buffer of handed) expect(buffer.every((b) => b === 0)).toBe(true);
  // Ed25519 CA keys are seed || public key: look for the secret half.
  const secrets = copies.map((c) => c.slice(0, 32));
  expect(secrets.every((k) => k.some((b) => b !== 0))).toBe(true);
  const stored = [readFileSync(s.dbPath)];
  try {
    stored.push(readFileSync(`${s.dbPath}-wal`));
  } catch {
    // no WAL right now
  }
  const logs = new TextEncoder().encode(JSON.stringify(s.logs.lines));
  const replies = new TextEncoder().encode(JSON.stringify([net.body, reg.body, enrolled.body]));
  for (const secret of secrets) {
    for (const file of stored) expect(contains(file, secret)).toBe(false);
    expect(contains(logs, secret)).toBe(false);
    expect(contains(replies, secret)).toBe(false);
    const b64 = new TextEncoder().encode(Buffer.from(secret).toString("base64").slice(0, 40));
    expect(contains(logs, b64) || contains(replies, b64)).toBe(false);
  }
});
