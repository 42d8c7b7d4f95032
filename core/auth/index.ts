/** Caller authentication shared by the edge and the signer: OIDC tokens, bearer headers, scopes. */
export { bearerCredential } from "./bearer.ts";
export { ConfigError, oidcOptionsFromEnv } from "./env.ts";
export {
  ACCEPTED_ALGORITHMS,
  CLOCK_TOLERANCE_SEC,
  checkIssuerUrl,
  createOidcVerifier,
  DEFAULT_ORG_CLAIM,
  type FetchLike,
  isLoopbackHost,
  type OidcVerifier,
  type OidcVerifierOptions,
} from "./oidc.ts";
export {
  MFA_AMR_VALUES,
  type Principal,
  type RequireScopeOptions,
  requireScope,
  type UserPrincipal,
} from "./principal.ts";
