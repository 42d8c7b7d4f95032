/**
 * Who an OIDC token says the caller is, once every check has passed, and the one place that decides
 * whether that is enough for an operation (scope, and MFA for CA creation and rotation).
 */
import type { Scope } from "../contract/api.ts";
import { KeyholeError } from "../errors.ts";

export interface UserPrincipal {
  kind: "user";
  /** The `iss` of the verified token (one of the allow-listed issuers). */
  issuer: string;
  /** The `sub` of the verified token. */
  subject: string;
  /** The organisation from the configured org claim: the tenant every record and KMS context is bound to. */
  org: string;
  /** Keyhole scopes granted by `scope` (space separated) or `permissions` (array); others are dropped. */
  scopes: ReadonlySet<Scope>;
  /** True when `amr` names a second factor (see MFA_AMR_VALUES). */
  mfa: boolean;
}

export type Principal = UserPrincipal;

/**
 * `amr` values (RFC 8176) that count as multi-factor: an explicit "mfa", or a factor beyond the
 * password (one-time code, hardware or software key proof, SMS code, biometrics).
 */
export const MFA_AMR_VALUES: ReadonlySet<string> = new Set([
  "mfa",
  "otp",
  "hwk",
  "swk",
  "sms",
  "sc",
  "fpt",
  "face",
  "iris",
  "retina",
  "vbm",
]);

export interface RequireScopeOptions {
  /** Also require a second factor (CA creation and rotation). */
  mfa?: boolean;
}

/** Throws insufficient_scope or mfa_required unless the principal may do what `scope` covers. */
export function requireScope(
  principal: Principal,
  scope: Scope,
  options: RequireScopeOptions = {},
): void {
  if (!principal.scopes.has(scope)) {
    throw new KeyholeError(
      "insufficient_scope",
      `this operation needs the "${scope}" scope; ask your identity provider for a token that grants it`,
      { requiredScope: scope },
    );
  }
  if (options.mfa === true && !principal.mfa) {
    throw new KeyholeError(
      "mfa_required",
      "creating or rotating a CA needs a token from a multi-factor login (amr must name a second factor such as mfa, otp or hwk)",
      { requiredScope: scope },
    );
  }
}
