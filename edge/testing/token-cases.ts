/**
 * Test instrument: the bad tokens every edge test suite must see refused with 401, each made from a
 * running dev issuer (real keys, real JWKS), so the same list runs against the app on Node, Bun and
 * in workerd.
 */
import { exportSPKI, importJWK, SignJWT } from "jose";
import type { DevIssuer } from "../../cli/dev/issuer.ts";
import { MAX_CREDENTIAL_BYTES } from "../../core/contract/index.ts";

const ALL_SCOPES = ["networks:write", "hosts:write", "hosts:read", "certs:sign", "audit:read"];

function b64url(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString("base64url");
}

export interface BadTokenCase {
  name: string;
  /** What the refusal's message must say (the check that failed). */
  reason: RegExp;
  make(issuer: DevIssuer): Promise<string>;
}

const good = { org: "acme", scope: ALL_SCOPES, amr: ["pwd", "mfa"] };

function rawClaims(issuer: DevIssuer): Record<string, unknown> {
  const now = Math.floor(Date.now() / 1000);
  return {
    iss: issuer.issuer,
    aud: issuer.audience,
    sub: "mallory",
    org: "acme",
    scope: ALL_SCOPES.join(" "),
    iat: now,
    exp: now + 600,
  };
}

/** Each bad token, made fresh from the issuer when the test runs. */
export const BAD_TOKEN_CASES: readonly BadTokenCase[] = [
  {
    name: "alg none",
    reason: /algorithm/,
    make: async (issuer) => `${b64url({ alg: "none", typ: "JWT" })}.${b64url(rawClaims(issuer))}.`,
  },
  {
    name: "HS256 signed with the issuer's public key",
    reason: /algorithm/,
    async make(issuer) {
      const rsa = issuer.publicJwks().find((k) => k.alg === "RS256");
      if (!rsa?.kid) throw new Error("dev issuer serves no RS256 key");
      const publicPem = await exportSPKI((await importJWK(rsa, "RS256")) as CryptoKey);
      return new SignJWT(rawClaims(issuer))
        .setProtectedHeader({ alg: "HS256", kid: rsa.kid, typ: "JWT" })
        .sign(new TextEncoder().encode(publicPem));
    },
  },
  {
    name: "expired",
    reason: /expired/,
    make: (issuer) => issuer.mint({ ...good, expiresInSec: -600 }),
  },
  {
    name: "not yet valid",
    reason: /not yet valid/,
    make: (issuer) => issuer.mint({ ...good, notBeforeSec: 600 }),
  },
  {
    name: "wrong issuer",
    reason: /issuer/,
    make: (issuer) => issuer.mint(good, { issuer: "http://127.0.0.1:9/not-the-issuer" }),
  },
  {
    name: "wrong audience",
    reason: /audience/,
    make: (issuer) => issuer.mint(good, { audience: "someone-else" }),
  },
  {
    name: "unknown kid",
    reason: /unknown kid/,
    make: (issuer) => issuer.mint(good, { kid: "no-such-key" }),
  },
  {
    name: "tampered payload",
    reason: /signature/,
    async make(issuer) {
      const valid = await issuer.mint(good);
      const [h, p, s] = valid.split(".") as [string, string, string];
      const payload = JSON.parse(Buffer.from(p, "base64url").toString()) as Record<string, unknown>;
      return `${h}.${b64url({ ...payload, org: "someone-else" })}.${s}`;
    },
  },
  {
    name: "missing org claim",
    reason: /org/,
    make: (issuer) => issuer.mint({ scope: ALL_SCOPES, amr: ["mfa"] }),
  },
  {
    name: "oversized token",
    reason: /larger than/,
    make: (issuer) => issuer.mint({ ...good, extra: { pad: "x".repeat(MAX_CREDENTIAL_BYTES) } }),
  },
];

export { ALL_SCOPES };
