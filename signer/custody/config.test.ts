/**
 * The text forms of custody settings (KEYHOLE_KMS_KEYS, KEYHOLE_KMS_ENDPOINTS, timeouts) and the
 * canonical context encoding that the local backend binds as associated data.
 */
import { describe, expect, it } from "vitest";
import { statusOf } from "../../core/contract/errors.ts";
import { resolveOptions } from "./config.ts";
import { checkContext, encodeContext } from "./context.ts";
import { CustodyError, createCustody, keyholeErrorOf, parseRegionMap } from "./index.ts";

function refusal(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(CustodyError);
    expect((e as CustodyError).kind).toBe("invalid");
    return (e as Error).message;
  }
  throw new Error("expected a refusal");
}

describe("parseRegionMap", () => {
  it("keeps the order given (the preference order) and trims spaces", () => {
    const map = parseRegionMap(
      " us-east-1 = alias/keyhole , eu-west-1=arn:aws:kms:eu-west-1:1:key/abc ",
      "KEYHOLE_KMS_KEYS",
    );
    expect(Object.entries(map)).toEqual([
      ["us-east-1", "alias/keyhole"],
      ["eu-west-1", "arn:aws:kms:eu-west-1:1:key/abc"],
    ]);
  });

  it("splits on the first '=' only, so URLs with queries survive", () => {
    expect(parseRegionMap("a=http://127.0.0.1:5000/?x=1")).toEqual({
      a: "http://127.0.0.1:5000/?x=1",
    });
  });

  it("refuses malformed maps with a message naming the variable and the expected form", () => {
    const name = "KEYHOLE_KMS_KEYS";
    expect(refusal(() => parseRegionMap("", name))).toMatch(
      /KEYHOLE_KMS_KEYS is empty: .*us-east-1=<value>/,
    );
    expect(refusal(() => parseRegionMap("us-east-1", name))).toMatch(/has no "="/);
    expect(refusal(() => parseRegionMap("us-east-1=k,", name))).toMatch(/empty entry/);
    expect(refusal(() => parseRegionMap("us-east-1=", name))).toMatch(/empty value/);
    expect(refusal(() => parseRegionMap("=k", name))).toMatch(/region ""/);
    expect(refusal(() => parseRegionMap("US East=k", name))).toMatch(/lowercase/);
    expect(refusal(() => parseRegionMap("a=1,a=2", name))).toMatch(/names region a twice/);
  });
});

describe("custody options", () => {
  it("defaults to a 2 s attempt timeout, no hedge and a 5 s cool-down for a failed region", () => {
    expect(resolveOptions({})).toEqual({
      attemptTimeoutMs: 2000,
      hedgeAfterMs: null,
      regionCooldownMs: 5000,
    });
  });

  it("refuses a hedge that would never fire before the timeout, and absurd timeouts", () => {
    expect(refusal(() => resolveOptions({ attemptTimeoutMs: 500, hedgeAfterMs: 500 }))).toMatch(
      /below the attempt timeout/,
    );
    expect(refusal(() => resolveOptions({ attemptTimeoutMs: 0 }))).toMatch(/1 to 120000/);
    expect(refusal(() => resolveOptions({ attemptTimeoutMs: Number.NaN }))).toMatch(/1 to 120000/);
    expect(refusal(() => resolveOptions({ regionCooldownMs: -1 }))).toMatch(/cool-down/);
    expect(refusal(() => resolveOptions({ regionCooldownMs: 1.5 }))).toMatch(/cool-down/);
  });

  it("refuses fewer than two regions, an endpoint for an unknown region, a malformed endpoint", async () => {
    await expect(createCustody({ backend: "aws", keys: { "us-east-1": "k" } })).rejects.toThrow(
      /sealed twice/,
    );
    await expect(
      createCustody({ backend: "local", dataDir: "/nonexistent", regions: ["solo"] }),
    ).rejects.toThrow(/at least two regions/);
    await expect(createCustody({ backend: "aws", keys: {} })).rejects.toThrow(
      /at least two regions/,
    );
    await expect(
      createCustody({
        backend: "aws",
        keys: { "us-east-1": "k", "us-west-2": "k2" },
        endpoints: { "eu-west-1": "http://127.0.0.1:1" },
      }),
    ).rejects.toThrow(/eu-west-1, which has no key/);
    await expect(
      createCustody({
        backend: "aws",
        keys: { "us-east-1": "k", "us-west-2": "k2" },
        endpoints: { "us-east-1": "127.0.0.1:1" },
      }),
    ).rejects.toThrow(/must be an http\(s\) URL/);
  });
});

describe("encryption context", () => {
  it("encodes unambiguously: shifting characters between fields changes the bytes", () => {
    const a = encodeContext({ org: "ab", network: "c", ca: "d" });
    const b = encodeContext({ org: "a", network: "bc", ca: "d" });
    const c = encodeContext({ org: "d", network: "c", ca: "ab" });
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(false);
    expect(Buffer.from(a).equals(Buffer.from(c))).toBe(false);
    // key order of the object does not matter
    expect(encodeContext({ ca: "d", network: "c", org: "ab" })).toEqual(a);
  });

  it("refuses empty, oversized, non-string and extra fields", () => {
    expect(refusal(() => checkContext({ org: "", network: "n", ca: "c" }))).toMatch(/"org"/);
    expect(refusal(() => checkContext({ org: "o", network: "n".repeat(257), ca: "c" }))).toMatch(
      /"network"/,
    );
    expect(
      refusal(() => checkContext({ org: "o", network: "n", ca: 7 as unknown as string })),
    ).toMatch(/"ca"/);
    expect(
      refusal(() => checkContext({ org: "o", network: "n", ca: "c", tenant: "t" } as never)),
    ).toMatch(/unknown fields tenant/);
  });
});

describe("keyholeErrorOf", () => {
  it("maps denied to 403 context_denied, unavailable to 503 kms_unavailable, invalid to 500, without KMS detail", () => {
    const attempts = [
      {
        region: "us-east-1",
        keyId: "arn:k",
        operation: "decrypt" as const,
        requestId: "r",
        outcome: "denied" as const,
        latencyMs: 1,
      },
    ];
    const cases = [
      ["denied", "context_denied", 403],
      ["unavailable", "kms_unavailable", 503],
      ["invalid", "internal", 500],
    ] as const;
    for (const [kind, code, status] of cases) {
      const source = new CustodyError(kind, "us-east-1: InvalidCiphertextException", attempts);
      const mapped = keyholeErrorOf(source);
      expect([mapped.code, statusOf(mapped.code)]).toEqual([code, status]);
      expect(mapped.message).not.toMatch(/us-east-1|arn:|InvalidCiphertext/);
      expect(mapped.cause).toBe(source);
    }
  });
});
