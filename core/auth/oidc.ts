/**
 * OIDC access-token verification shared by the edge and the signer. Runtime-agnostic (jose and an
 * injected fetch only), so the same checks run in workerd, Bun and Node. Each refusal names the check
 * that failed; nothing about the token's contents beyond that is echoed back.
 */
import {
  createRemoteJWKSet,
  customFetch,
  decodeJwt,
  decodeProtectedHeader,
  type JWTPayload,
  errors as joseErrors,
  jwtVerify,
} from "jose";
import { MAX_CREDENTIAL_BYTES, SCOPES, type Scope } from "../contract/api.ts";
import { KeyholeError } from "../errors.ts";
import { MFA_AMR_VALUES, type UserPrincipal } from "./principal.ts";

/** Asymmetric algorithms only: never "none", never HS* (which would let a public key sign). */
export const ACCEPTED_ALGORITHMS = ["RS256", "PS256", "ES256", "ES384", "EdDSA"] as const;
/** Allowed clock difference for exp / nbf / iat. */
export const CLOCK_TOLERANCE_SEC = 30;
export const DEFAULT_ORG_CLAIM = "org";

export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

export interface OidcVerifierOptions {
  /** Exact `iss` values accepted. https, or http for loopback hosts only. */
  issuers: readonly string[];
  /** Accepted `aud` value(s). */
  audience: string | readonly string[];
  /** Claim holding the organisation id (default "org"). */
  orgClaim?: string;
  /** fetch used for discovery and JWKS (default globalThis.fetch). */
  fetch?: FetchLike;
  /** No JWKS refetch sooner than this after the last one, even for an unknown kid (default 30 000). */
  jwksCooldownMs?: number;
  /** How long a fetched JWKS is trusted before it is fetched again (default 10 minutes). */
  jwksMaxAgeMs?: number;
  /** Timeout of each discovery or JWKS request (default 5 000). */
  fetchTimeoutMs?: number;
  /** Clock (tests). */
  now?: () => Date;
}

export interface OidcVerifier {
  /** Verifies a bearer JWT and returns the principal; throws KeyholeError invalid_token, or issuer_unavailable when the issuer cannot be read. */
  verify(token: string): Promise<UserPrincipal>;
}

interface IssuerKeys {
  jwks: ReturnType<typeof createRemoteJWKSet>;
}

/** An org id: 1 to 128 characters, none of them a control character. */
function isOrgValue(value: unknown): value is string {
  if (typeof value !== "string" || value.length === 0 || value.length > 128) return false;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return false;
  }
  return true;
}

export function isLoopbackHost(hostname: string): boolean {
  const h = hostname.toLowerCase();
  return h === "localhost" || h === "[::1]" || h === "::1" || /^127(\.\d{1,3}){3}$/.test(h);
}

/** Throws a plain Error (a configuration mistake) unless `url` is an acceptable issuer or JWKS URL. */
export function checkIssuerUrl(text: string, what = "issuer"): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new Error(`${what} ${JSON.stringify(text)} is not a URL; use https://host[/path]`);
  }
  if (url.protocol !== "https:" && !(url.protocol === "http:" && isLoopbackHost(url.hostname))) {
    throw new Error(
      `${what} ${JSON.stringify(text)} must use https (http is accepted only for 127.0.0.1, ::1 and localhost)`,
    );
  }
  if (url.search !== "" || url.hash !== "" || url.username !== "" || url.password !== "") {
    throw new Error(
      `${what} ${JSON.stringify(text)} must not carry a query, fragment or credentials`,
    );
  }
  return url;
}

function invalid(check: string): KeyholeError {
  return new KeyholeError("invalid_token", `token refused: ${check}`, { check });
}

export function createOidcVerifier(options: OidcVerifierOptions): OidcVerifier {
  if (options.issuers.length === 0) throw new Error("at least one OIDC issuer is required");
  for (const issuer of options.issuers) checkIssuerUrl(issuer);
  const audience =
    typeof options.audience === "string" ? [options.audience] : [...options.audience];
  if (audience.length === 0 || audience.some((a) => a === "")) {
    throw new Error("an OIDC audience is required");
  }
  const orgClaim = options.orgClaim ?? DEFAULT_ORG_CLAIM;
  const doFetch: FetchLike = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
  const timeoutMs = options.fetchTimeoutMs ?? 5_000;
  const allowed = new Set(options.issuers);
  const keysByIssuer = new Map<string, Promise<IssuerKeys>>();

  async function discover(issuer: string): Promise<IssuerKeys> {
    const base = issuer.endsWith("/") ? issuer.slice(0, -1) : issuer;
    const res = await doFetch(`${base}/.well-known/openid-configuration`, {
      signal: AbortSignal.timeout(timeoutMs),
      headers: { accept: "application/json" },
    });
    if (!res.ok) throw new Error(`discovery answered HTTP ${res.status}`);
    const doc = (await res.json()) as { issuer?: unknown; jwks_uri?: unknown };
    if (doc.issuer !== issuer) throw new Error("discovery document names another issuer");
    if (typeof doc.jwks_uri !== "string") throw new Error("discovery document has no jwks_uri");
    const jwksUrl = checkIssuerUrl(doc.jwks_uri, "jwks_uri");
    const jwks = createRemoteJWKSet(jwksUrl, {
      cooldownDuration: options.jwksCooldownMs ?? 30_000,
      cacheMaxAge: options.jwksMaxAgeMs ?? 600_000,
      timeoutDuration: timeoutMs,
      [customFetch]: (url: string, init: RequestInit) => doFetch(url, init),
    });
    return { jwks };
  }

  function keysFor(issuer: string): Promise<IssuerKeys> {
    let keys = keysByIssuer.get(issuer);
    if (keys === undefined) {
      keys = discover(issuer);
      keysByIssuer.set(issuer, keys);
      // A failed discovery is not cached: the next request tries again.
      keys.catch(() => keysByIssuer.delete(issuer));
    }
    return keys;
  }

  async function verify(token: string): Promise<UserPrincipal> {
    if (token.length > MAX_CREDENTIAL_BYTES) {
      throw invalid(`larger than ${MAX_CREDENTIAL_BYTES} bytes`);
    }
    let alg: unknown;
    let unverified: JWTPayload;
    try {
      alg = decodeProtectedHeader(token).alg;
      unverified = decodeJwt(token);
    } catch {
      throw invalid("not a well-formed JWT");
    }
    if (typeof alg !== "string" || !(ACCEPTED_ALGORITHMS as readonly string[]).includes(alg)) {
      throw invalid(
        `algorithm ${JSON.stringify(alg)} is not accepted (${ACCEPTED_ALGORITHMS.join(", ")})`,
      );
    }
    const issuer = unverified.iss;
    if (typeof issuer !== "string" || !allowed.has(issuer)) {
      throw invalid("issuer is not one this service trusts");
    }
    let keys: IssuerKeys;
    try {
      keys = await keysFor(issuer);
    } catch (e) {
      throw issuerUnavailable(
        issuer,
        "discovery",
        `its discovery document could not be read (${reasonOf(e)})`,
      );
    }
    let payload: JWTPayload;
    try {
      const now = options.now?.();
      const result = await jwtVerify(token, keys.jwks, {
        issuer,
        audience,
        algorithms: [...ACCEPTED_ALGORITHMS],
        clockTolerance: CLOCK_TOLERANCE_SEC,
        requiredClaims: ["exp", "sub"],
        ...(now ? { currentDate: now } : {}),
      });
      payload = result.payload;
    } catch (e) {
      throw refusal(e, issuer);
    }

    const org = payload[orgClaim];
    if (!isOrgValue(org)) {
      throw invalid(`the "${orgClaim}" claim (organisation) is missing or not a short string`);
    }
    const subject = payload.sub;
    if (typeof subject !== "string" || subject === "") throw invalid("the sub claim is missing");
    const amr = payload.amr;
    const mfa =
      Array.isArray(amr) && amr.some((v) => typeof v === "string" && MFA_AMR_VALUES.has(v));
    return { kind: "user", issuer, subject, org, scopes: scopesOf(payload), mfa };
  }

  return { verify };
}

function scopesOf(payload: JWTPayload): ReadonlySet<Scope> {
  const granted: string[] = [];
  if (typeof payload.scope === "string") granted.push(...payload.scope.split(" "));
  const permissions = payload.permissions;
  if (Array.isArray(permissions)) {
    for (const p of permissions) if (typeof p === "string") granted.push(p);
  }
  const known = new Set<Scope>();
  for (const s of granted) if ((SCOPES as readonly string[]).includes(s)) known.add(s as Scope);
  return known;
}

/**
 * The issuer, not the token, is the problem: its discovery document or signing keys could not be
 * fetched or were unusable. 503: the caller should try again later, not get a new token.
 */
function issuerUnavailable(issuer: string, check: "discovery" | "jwks", why: string): KeyholeError {
  return new KeyholeError(
    "issuer_unavailable",
    `the token could not be checked: its issuer ${issuer} is unavailable (${why}); try again shortly`,
    { check, issuer },
  );
}

function reasonOf(e: unknown): string {
  if (e instanceof Error && e.name === "TimeoutError") return "timed out";
  const message = e instanceof Error ? e.message : String(e);
  return message.slice(0, 120) || "error";
}

/** jose's own words when the key set's HTTP answer is not a usable key set. */
const JWKS_FETCH_FAILURE = /JSON Web Key Set HTTP response/;

function refusal(e: unknown, issuer: string): KeyholeError {
  if (e instanceof joseErrors.JWTExpired) return invalid("expired");
  if (e instanceof joseErrors.JWTClaimValidationFailed) {
    if (e.claim === "nbf") return invalid("not yet valid (nbf is in the future)");
    if (e.claim === "iat") return invalid("issued in the future (iat)");
    if (e.claim === "aud") return invalid("audience is not this service");
    if (e.claim === "iss") return invalid("issuer is not one this service trusts");
    return invalid(`the ${e.claim} claim is missing or wrong`);
  }
  if (e instanceof joseErrors.JWKSNoMatchingKey)
    return invalid("signed by a key the issuer does not publish (unknown kid)");
  if (e instanceof joseErrors.JWKSMultipleMatchingKeys) return invalid("signature does not verify");
  if (e instanceof joseErrors.JWSSignatureVerificationFailed)
    return invalid("signature does not verify");
  if (e instanceof joseErrors.JOSEAlgNotAllowed) return invalid("algorithm is not accepted");
  if (e instanceof joseErrors.JWKSTimeout) {
    return issuerUnavailable(issuer, "jwks", "its signing keys could not be fetched in time");
  }
  if (e instanceof joseErrors.JWTInvalid || e instanceof joseErrors.JWSInvalid) {
    return invalid("not a well-formed JWT");
  }
  if (e instanceof joseErrors.JWKSInvalid) {
    return issuerUnavailable(issuer, "jwks", "its key set is malformed");
  }
  if (e instanceof joseErrors.JOSEError) {
    if (JWKS_FETCH_FAILURE.test(e.message)) {
      return issuerUnavailable(issuer, "jwks", `its signing keys could not be read: ${e.message}`);
    }
    return invalid(`verification failed (${e.code})`);
  }
  // Not jose's: the fetch of the key set itself failed (connection refused, reset, DNS).
  return issuerUnavailable(
    issuer,
    "jwks",
    `its signing keys could not be fetched (${reasonOf(e)})`,
  );
}
