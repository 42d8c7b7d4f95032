/**
 * OIDC settings from the environment, shared by the edge and the signer so both accept exactly the
 * same tokens. Read once at start; a wrong value stops the process with a message saying what to set.
 *
 * - KEYHOLE_OIDC_ISSUERS   comma-separated issuer URLs, exactly as in the tokens' `iss` (required;
 *                          https, or http for 127.0.0.1 / ::1 / localhost only)
 * - KEYHOLE_OIDC_AUDIENCE  comma-separated accepted `aud` values (required)
 * - KEYHOLE_ORG_CLAIM      claim that holds the organisation id (default "org")
 * - KEYHOLE_OIDC_JWKS_COOLDOWN_MS  least time between two JWKS fetches of one issuer (default 30000)
 */
import { checkIssuerUrl, DEFAULT_ORG_CLAIM, type OidcVerifierOptions } from "./oidc.ts";

/** A configuration value is missing or wrong; the message names the variable and what it wants. */
export class ConfigError extends Error {
  readonly variable: string;
  constructor(variable: string, message: string) {
    super(`${variable}: ${message}`);
    this.name = "ConfigError";
    this.variable = variable;
  }
}

const CLAIM_NAME = /^[A-Za-z_][A-Za-z0-9_:./-]{0,127}$/;

function list(text: string): string[] {
  return text
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

export function oidcOptionsFromEnv(env: Record<string, string | undefined>): OidcVerifierOptions {
  const issuersText = env.KEYHOLE_OIDC_ISSUERS ?? "";
  const issuers = list(issuersText);
  if (issuers.length === 0) {
    throw new ConfigError(
      "KEYHOLE_OIDC_ISSUERS",
      "set it to the URL of your identity provider (comma-separated for several), e.g. https://login.example.com/",
    );
  }
  for (const issuer of issuers) {
    try {
      checkIssuerUrl(issuer);
    } catch (e) {
      throw new ConfigError("KEYHOLE_OIDC_ISSUERS", (e as Error).message);
    }
  }
  const audience = list(env.KEYHOLE_OIDC_AUDIENCE ?? "");
  if (audience.length === 0) {
    throw new ConfigError(
      "KEYHOLE_OIDC_AUDIENCE",
      "set it to the audience your identity provider puts in Keyhole's tokens, e.g. keyhole",
    );
  }
  const orgClaim = env.KEYHOLE_ORG_CLAIM?.trim() || DEFAULT_ORG_CLAIM;
  if (!CLAIM_NAME.test(orgClaim)) {
    throw new ConfigError(
      "KEYHOLE_ORG_CLAIM",
      `${JSON.stringify(orgClaim)} is not a claim name (letters, digits, _ : . / -)`,
    );
  }
  const options: OidcVerifierOptions = { issuers, audience, orgClaim };
  const cooldown = env.KEYHOLE_OIDC_JWKS_COOLDOWN_MS?.trim();
  if (cooldown) {
    const ms = Number(cooldown);
    if (!Number.isInteger(ms) || ms < 0 || ms > 3_600_000) {
      throw new ConfigError(
        "KEYHOLE_OIDC_JWKS_COOLDOWN_MS",
        "a whole number of milliseconds, 0 to 3600000",
      );
    }
    options.jwksCooldownMs = ms;
  }
  return options;
}
