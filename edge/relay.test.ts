/**
 * The relay's choices, against real HTTPS upstreams that demand the relay client certificate:
 * nearest region first when the caller's location is known, what counts as "not reached" (a 5xx
 * without a signer error body), a signer's own 5xx kept when every region says it, the deadline of
 * one attempt, and a client without the relay certificate refused by the TLS layer.
 */
import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { makeRelayPki, type RelayPki } from "../cli/dev/pki.ts";
import { isKeyholeError } from "../core/errors.ts";
import type { SignerRegion } from "./config.ts";
import { createUndiciTransport } from "./node.ts";
import { createSignerRelay, type RelayRequest } from "./relay.ts";
import { type MtlsUpstream, startMtlsUpstream } from "./testing/mtls-upstream.ts";

let dir: string;
let pki: RelayPki;
let eu: MtlsUpstream;
let us: MtlsUpstream;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "keyhole-edge-relay-"));
  pki = await makeRelayPki(join(dir, "pki"));
  eu = await startMtlsUpstream(pki);
  us = await startMtlsUpstream(pki);
});

afterAll(async () => {
  await eu?.close();
  await us?.close();
  await rm(dir, { recursive: true, force: true });
});

beforeEach(() => {
  eu.requests.length = 0;
  us.requests.length = 0;
  eu.answer = () => ({ status: 200, body: { region: "eu" } });
  us.answer = () => ({ status: 200, body: { region: "us" } });
});

function transport(clientCert = pki.clientCert, clientKey = pki.clientKey) {
  return createUndiciTransport({
    ca: readFileSync(pki.caCert, "utf8"),
    cert: readFileSync(clientCert, "utf8"),
    key: readFileSync(clientKey, "utf8"),
  });
}

function regions(): SignerRegion[] {
  return [
    { name: "eu", url: eu.url, site: { lat: 50.11, lon: 8.68 } },
    { name: "us", url: us.url, site: { lat: 39.04, lon: -77.49 } },
  ];
}

function request(extra: Partial<RelayRequest> = {}): RelayRequest {
  return {
    method: "POST",
    path: "/v1/enroll",
    headers: new Headers({ "content-type": "application/json", "idempotency-key": "k-00000001" }),
    body: new TextEncoder().encode('{"code":"x"}'),
    ...extra,
  };
}

describe("signer relay", () => {
  it("tries regions in preference order, or the nearest first when the caller's site is known", async () => {
    const relay = createSignerRelay({
      regions: regions(),
      transport: transport(),
      timeoutMs: 3000,
      cooldownMs: 60_000,
    });
    expect((await relay.relay(request())).region).toBe("eu");
    const fromVirginia = await relay.relay(request({ near: { lat: 38.9, lon: -77.0 } }));
    expect(fromVirginia.region).toBe("us");
    const fromParis = await relay.relay(request({ near: { lat: 48.85, lon: 2.35 } }));
    expect(fromParis.region).toBe("eu");
    expect(us.requests[0]?.body).toBe('{"code":"x"}');
  });

  it("treats a 5xx without a signer error body as not reached, and cools that region down", async () => {
    const relay = createSignerRelay({
      regions: regions(),
      transport: transport(),
      timeoutMs: 3000,
      cooldownMs: 60_000,
    });
    eu.answer = () => ({ status: 502, body: "bad gateway" });
    const first = await relay.relay(request());
    expect(first.region).toBe("us");
    expect(first.attempts.map((a) => [a.region, a.status])).toEqual([
      ["eu", 502],
      ["us", 200],
    ]);
    expect(first.attempts[0]?.error).toMatch(/without a signer error body/);
    const second = await relay.relay(request());
    expect(second.attempts.map((a) => a.region)).toEqual(["us"]);
  });

  it("returns the signer's own 5xx when every region says it, after trying each once", async () => {
    const relay = createSignerRelay({
      regions: regions(),
      transport: transport(),
      timeoutMs: 3000,
      cooldownMs: 60_000,
    });
    const kms = {
      status: 503,
      body: { error: { code: "kms_unavailable", message: "both KMS regions down", traceId: "t" } },
    };
    eu.answer = () => kms;
    us.answer = () => kms;
    const result = await relay.relay(request());
    expect(result.response.status).toBe(503);
    expect(((await result.response.json()) as { error: { code: string } }).error.code).toBe(
      "kms_unavailable",
    );
    expect(eu.requests).toHaveLength(1);
    expect(us.requests).toHaveLength(1);
    expect(us.requests[0]?.headers["idempotency-key"]).toBe("k-00000001");
  });

  it("gives up on a region that does not answer within the deadline", async () => {
    const slow = await startMtlsUpstream(pki);
    // A signer stuck on something: it answers only after the relay's deadline has passed.
    slow.answer = () =>
      new Promise((done) => setTimeout(() => done({ status: 200, body: {} }), 1500));
    try {
      const relay = createSignerRelay({
        regions: [
          { name: "slow", url: slow.url },
          { name: "us", url: us.url },
        ],
        transport: transport(),
        timeoutMs: 500,
        cooldownMs: 60_000,
      });
      const started = Date.now();
      const result = await relay.relay(request());
      expect(result.region).toBe("us");
      expect(result.attempts[0]?.error).toMatch(/within 500 ms/);
      expect(Date.now() - started).toBeLessThan(3000);
    } finally {
      await slow.close();
    }
  });

  it("cannot reach a signer without the relay CA's client certificate", async () => {
    const relay = createSignerRelay({
      regions: regions(),
      transport: transport(pki.foreignClientCert, pki.foreignClientKey),
      timeoutMs: 3000,
      cooldownMs: 60_000,
    });
    const failure = await relay.relay(request()).catch((e: unknown) => e);
    expect(isKeyholeError(failure) && failure.code).toBe("signer_unavailable");
    expect(eu.requests).toHaveLength(0);
    expect(us.requests).toHaveLength(0);
  });
});
