/**
 * Reads the bearer credential (OIDC JWT, enrollment code or host token) from an Authorization header,
 * refusing absent, malformed and oversized values before anything parses them.
 */
import { MAX_CREDENTIAL_BYTES } from "../contract/api.ts";
import { KeyholeError } from "../errors.ts";

const BEARER = /^Bearer[ ]+([A-Za-z0-9\-._~+/]+=*)[ ]*$/i;

/** The credential of `Authorization: Bearer <credential>`. */
export function bearerCredential(header: string | null | undefined): string {
  if (header === null || header === undefined || header.trim() === "") {
    throw new KeyholeError("unauthenticated", "send a credential: Authorization: Bearer <token>");
  }
  if (header.length > MAX_CREDENTIAL_BYTES + 16) {
    throw new KeyholeError(
      "invalid_token",
      `the credential is larger than ${MAX_CREDENTIAL_BYTES} bytes; ask for a smaller token`,
    );
  }
  const match = BEARER.exec(header);
  const credential = match?.[1];
  if (credential === undefined) {
    throw new KeyholeError("invalid_token", 'the Authorization header must be "Bearer <token>"');
  }
  if (credential.length > MAX_CREDENTIAL_BYTES) {
    throw new KeyholeError(
      "invalid_token",
      `the credential is larger than ${MAX_CREDENTIAL_BYTES} bytes; ask for a smaller token`,
    );
  }
  return credential;
}
