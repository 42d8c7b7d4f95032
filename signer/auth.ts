/**
 * How the signer knows who is calling, per route: an OIDC JWT it verifies itself (never trusting the
 * edge), with the scope the route needs; or a host token. The actor string that audit rows carry is
 * made here.
 */
import type { Context } from "hono";
import { bearerCredential } from "../core/auth/bearer.ts";
import { requireScope, type UserPrincipal } from "../core/auth/principal.ts";
import type { Scope } from "../core/contract/api.ts";
import { KeyholeError } from "../core/errors.ts";
import type { SignerRuntime } from "./runtime.ts";

export interface UserCaller {
  principal: UserPrincipal;
  org: string;
  /** "user:<issuer>#<subject>" */
  actor: string;
  traceId: string;
}

export async function authenticateUser(
  rt: SignerRuntime,
  c: Context,
  scope: Scope,
  options: { mfa?: boolean } = {},
): Promise<UserCaller> {
  const token = bearerCredential(c.req.header("authorization"));
  const principal = await rt.oidc.verify(token);
  requireScope(principal, scope, options);
  return {
    principal,
    org: principal.org,
    actor: `user:${principal.issuer}#${principal.subject}`,
    traceId: c.get("traceId") as string,
  };
}

/** A JWT has three dot-separated parts; host tokens and codes have none. */
export function looksLikeJwt(credential: string): boolean {
  return credential.split(".").length === 3;
}

/** SHA-256 of UTF-8 text, hex (request hashes, credential scopes): the store's own hashing. */
export { hashSecret as sha256Hex } from "./store/secrets.ts";

/** The Idempotency-Key header, checked: printable, at most 255 characters. */
export function idempotencyKeyOf(c: Context): string | undefined {
  const key = c.req.header("idempotency-key");
  if (key === undefined || key === "") return undefined;
  if (key.length > 255 || !/^[\x21-\x7e]+$/.test(key)) {
    throw new KeyholeError(
      "invalid_request",
      "Idempotency-Key must be 1 to 255 printable ASCII characters without spaces",
      { field: "Idempotency-Key" },
    );
  }
  return key;
}
