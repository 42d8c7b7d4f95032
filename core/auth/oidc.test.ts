/**
 * OIDC verification against a real issuer over HTTP (the dev issuer: discovery + JWKS on loopback).
 * Each refusal is its own test and must say which check failed.
 */
import { SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type DevIssuer, startDevIssuer } from "../../cli/dev/issuer.ts";
import { freePort } from "../../cli/dev/moto.ts";
import { KeyholeError } from "../errors.ts";
import { bearerCredential } from "./bearer.ts";
import { ConfigError, oidcOptionsFromEnv } from "./env.ts";
import { createOidcVerifier, type FetchLike, type OidcVerifier } from "./oidc.ts";
import { requireScope } from "./principal.ts";

let issuer: DevIssuer;
let verifier: OidcVerifier;
const fetched: string[] = [];

const countingFetch: FetchLike = (input, init) => {
  fetched.push(input);
  return fetch(input, init);
};

beforeAll(async () => {
  issuer = await startDevIssuer({ audience: "keyhole-test" });
  verifier = createOidcVerifier({
    issuers: [issuer.issuer],
    audience: "keyhole-test",
    fetch: countingFetch,
    jwksCooldownMs: 200,
  });
});
afterAll(async () => {
  await issuer?.close();
});

const admin = {
  sub: "alice",
  org: "org-x",
  scope: "networks:write hosts:read",
  amr: ["pwd", "otp"],
};

async function refusal(token: string): Promise<KeyholeError> {
  try {
    await verifier.verify(token);
  } catch (e) {
    expect(e).toBeInstanceOf(KeyholeError);
    return e as KeyholeError;
  }
  throw new Error("token was accepted");
}

function b64url(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString("base64url");
}

function payloadOf(token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString("utf8"));
}

describe("createOidcVerifier", () => {
  it("accepts a good token and reads org, subject, scopes and MFA", async () => {
    const p = await verifier.verify(await issuer.mint(admin));
    expect(p).toMatchObject({
      kind: "user",
      issuer: issuer.issuer,
      subject: "alice",
      org: "org-x",
      mfa: true,
    });
    expect([...p.scopes].sort()).toEqual(["hosts:read", "networks:write"]);
  });

  it("accepts RS256 and EdDSA, and scopes from a permissions array, ignoring unknown scopes", async () => {
    for (const alg of ["RS256", "EdDSA"] as const) {
      const token = await issuer.mint(
        { sub: "ci", org: "org-x", extra: { permissions: ["certs:sign", "admin:everything"] } },
        { alg },
      );
      const p = await verifier.verify(token);
      expect([...p.scopes]).toEqual(["certs:sign"]);
      expect(p.mfa).toBe(false);
    }
  });

  it("caches discovery and the JWKS", async () => {
    const before = fetched.length;
    for (let i = 0; i < 20; i++) await verifier.verify(await issuer.mint(admin));
    expect(fetched.length - before).toBe(0);
    expect(fetched.filter((u) => u.endsWith("/.well-known/openid-configuration"))).toHaveLength(1);
  });

  it("refuses alg none", async () => {
    const claims = payloadOf(await issuer.mint(admin));
    const token = `${b64url({ alg: "none", typ: "JWT" })}.${b64url(claims)}.`;
    const e = await refusal(token);
    expect(e.code).toBe("invalid_token");
    expect(e.message).toMatch(/algorithm "none" is not accepted/);
  });

  it("refuses HS256 signed with the issuer's public key", async () => {
    const jwk = issuer.publicJwks().find((k) => k.alg === "RS256");
    const secret = new TextEncoder().encode(JSON.stringify(jwk));
    const token = await new SignJWT({ org: "org-x", scope: "networks:write" })
      .setProtectedHeader({ alg: "HS256", kid: jwk?.kid ?? "" })
      .setIssuer(issuer.issuer)
      .setAudience("keyhole-test")
      .setSubject("mallory")
      .setExpirationTime("1h")
      .sign(secret);
    const e = await refusal(token);
    expect(e.message).toMatch(/algorithm "HS256" is not accepted/);
  });

  it("refuses an expired token, but allows 30 s of clock skew", async () => {
    expect((await refusal(await issuer.mint({ ...admin, expiresInSec: -120 }))).message).toMatch(
      /expired/,
    );
    await expect(
      verifier.verify(await issuer.mint({ ...admin, expiresInSec: -10 })),
    ).resolves.toBeTruthy();
  });

  it("refuses a token not yet valid", async () => {
    const e = await refusal(await issuer.mint({ ...admin, notBeforeSec: 300 }));
    expect(e.message).toMatch(/not yet valid/);
  });

  it("refuses a token from an issuer not on the allow-list, without fetching from it", async () => {
    const before = fetched.length;
    const e = await refusal(await issuer.mint(admin, { issuer: "https://evil.example" }));
    expect(e.message).toMatch(/issuer is not one this service trusts/);
    expect(fetched.length).toBe(before);
  });

  it("refuses the wrong audience", async () => {
    const e = await refusal(await issuer.mint(admin, { audience: "another-service" }));
    expect(e.message).toMatch(/audience/);
  });

  it("refuses an unknown kid", async () => {
    const e = await refusal(await issuer.mint(admin, { kid: "no-such-key" }));
    expect(e.message).toMatch(/unknown kid/);
  });

  it("refuses a tampered payload", async () => {
    const token = await issuer.mint(admin);
    const [h, , s] = token.split(".");
    const forged = `${h}.${b64url({ ...payloadOf(token), org: "org-y" })}.${s}`;
    expect((await refusal(forged)).message).toMatch(/signature does not verify/);
  });

  it("refuses a token without the org claim", async () => {
    const e = await refusal(await issuer.mint({ sub: "alice", scope: "hosts:read" }));
    expect(e.message).toMatch(/"org" claim/);
  });

  it("refuses an oversized token before parsing it", async () => {
    const token = await issuer.mint({ ...admin, extra: { padding: "x".repeat(9000) } });
    expect((await refusal(token)).message).toMatch(/larger than 8192 bytes/);
  });

  it("refuses garbage", async () => {
    expect((await refusal("not-a-jwt")).message).toMatch(/well-formed/);
    expect((await refusal("a.b.c")).message).toMatch(/well-formed/);
  });

  it("picks up a key rotation at the issuer without a restart", async () => {
    await verifier.verify(await issuer.mint(admin));
    await issuer.rotateKey({ dropOld: true });
    await new Promise((r) => setTimeout(r, 250)); // past the JWKS cool-down
    const p = await verifier.verify(await issuer.mint(admin));
    expect(p.subject).toBe("alice");
  });

  it("refuses an issuer whose discovery document names another issuer", async () => {
    const port = new URL(issuer.issuer).port;
    const v = createOidcVerifier({
      issuers: [`http://localhost:${port}`],
      audience: "keyhole-test",
    });
    const token = await issuer.mint(admin, { issuer: `http://localhost:${port}` });
    await expect(v.verify(token)).rejects.toMatchObject({
      code: "issuer_unavailable",
      message: /discovery document names another issuer/,
      details: { check: "discovery" },
    });
  });
});

describe("an issuer that cannot be read: 503 issuer_unavailable, never a 401 for a good token", () => {
  it("an issuer nobody answers for: the discovery fails, and nothing is cached", async () => {
    const closed = `http://127.0.0.1:${await freePort()}`;
    const v = createOidcVerifier({ issuers: [closed], audience: "keyhole-test" });
    const token = await issuer.mint(admin, { issuer: closed });
    for (let i = 0; i < 2; i++) {
      const e = await v.verify(token).catch((err: unknown) => err);
      expect(e).toBeInstanceOf(KeyholeError);
      expect(e).toMatchObject({ code: "issuer_unavailable", details: { check: "discovery" } });
      expect((e as KeyholeError).message).toContain(closed);
    }
  });

  it("signing keys that cannot be fetched (HTTP 503, connection refused), then the issuer recovers", async () => {
    let keys: "down" | "refused" | "up" = "down";
    const flaky: FetchLike = (url, init) => {
      if (!url.endsWith("/.well-known/openid-configuration")) {
        if (keys === "down") return Promise.resolve(new Response("maintenance", { status: 503 }));
        if (keys === "refused") return Promise.reject(new TypeError("fetch failed"));
      }
      return globalThis.fetch(url, init);
    };
    const v = createOidcVerifier({
      issuers: [issuer.issuer],
      audience: "keyhole-test",
      fetch: flaky,
      jwksCooldownMs: 0,
    });
    const token = await issuer.mint(admin);
    await expect(v.verify(token)).rejects.toMatchObject({
      code: "issuer_unavailable",
      message: /signing keys could not be read/,
      details: { check: "jwks" },
    });
    keys = "refused";
    await expect(v.verify(token)).rejects.toMatchObject({
      code: "issuer_unavailable",
      message: /fetch failed/,
      details: { check: "jwks" },
    });
    keys = "up";
    const p = await v.verify(token);
    expect(p.subject).toBe("alice");
    // A bad signature is still the token's fault once the keys are readable.
    const [h, body] = token.split(".") as [string, string];
    await expect(v.verify(`${h}.${body}.${"A".repeat(342)}`)).rejects.toMatchObject({
      code: "invalid_token",
    });
  });
});

describe("requireScope", () => {
  it("refuses a missing scope with insufficient_scope, and CA writes without MFA with mfa_required", async () => {
    const p = await verifier.verify(
      await issuer.mint({ sub: "bob", org: "org-x", scope: "networks:write" }),
    );
    expect(() => requireScope(p, "hosts:write")).toThrow(
      expect.objectContaining({ code: "insufficient_scope" }),
    );
    expect(() => requireScope(p, "networks:write", { mfa: true })).toThrow(
      expect.objectContaining({ code: "mfa_required" }),
    );
    expect(() => requireScope(p, "networks:write")).not.toThrow();
  });
});

describe("bearerCredential", () => {
  it("reads Bearer credentials and refuses absent, malformed and oversized ones", () => {
    expect(bearerCredential("Bearer abc.def-ghi_")).toBe("abc.def-ghi_");
    expect(() => bearerCredential(undefined)).toThrow(
      expect.objectContaining({ code: "unauthenticated" }),
    );
    expect(() => bearerCredential("Basic dXNlcjpwdw==")).toThrow(
      expect.objectContaining({ code: "invalid_token" }),
    );
    expect(() => bearerCredential("Bearer a b")).toThrow(
      expect.objectContaining({ code: "invalid_token" }),
    );
    expect(() => bearerCredential(`Bearer ${"a".repeat(9000)}`)).toThrow(/larger than 8192/);
  });
});

describe("oidcOptionsFromEnv", () => {
  const ok = {
    KEYHOLE_OIDC_ISSUERS: "https://login.example.com/, http://127.0.0.1:9000",
    KEYHOLE_OIDC_AUDIENCE: "keyhole",
  };
  it("reads the settings", () => {
    expect(oidcOptionsFromEnv({ ...ok, KEYHOLE_ORG_CLAIM: "https://example.com/org" })).toEqual({
      issuers: ["https://login.example.com/", "http://127.0.0.1:9000"],
      audience: ["keyhole"],
      orgClaim: "https://example.com/org",
    });
  });
  it("refuses missing and wrong values with the variable's name", () => {
    expect(() => oidcOptionsFromEnv({ KEYHOLE_OIDC_AUDIENCE: "k" })).toThrow(ConfigError);
    expect(() =>
      oidcOptionsFromEnv({ ...ok, KEYHOLE_OIDC_ISSUERS: "http://login.example.com" }),
    ).toThrow(/KEYHOLE_OIDC_ISSUERS: .*must use https/);
    expect(() => oidcOptionsFromEnv({ ...ok, KEYHOLE_OIDC_ISSUERS: "nope" })).toThrow(/not a URL/);
    expect(() => oidcOptionsFromEnv({ KEYHOLE_OIDC_ISSUERS: "https://a.example" })).toThrow(
      /KEYHOLE_OIDC_AUDIENCE/,
    );
    expect(() => oidcOptionsFromEnv({ ...ok, KEYHOLE_ORG_CLAIM: "bad claim" })).toThrow(
      /KEYHOLE_ORG_CLAIM/,
    );
  });
});
