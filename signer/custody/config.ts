/**
 * Parsing of custody settings that arrive as text (KEYHOLE_KMS_KEYS, KEYHOLE_KMS_ENDPOINTS) and the
 * defaults for timeouts. The signer's config module calls these once at start; a wrong value is
 * refused with a message that says what the value should look like.
 */
import { CustodyError, type CustodyOptions, DEFAULT_CUSTODY_OPTIONS } from "./types.ts";

const REGION = /^[a-z][a-z0-9-]{0,62}$/;

/**
 * "us-east-1=alias/keyhole,eu-west-1=arn:aws:kms:..." => { "us-east-1": "...", ... } in the order
 * given (the order is the preference order). Whitespace around entries is ignored; a value may hold
 * "=" (only the first one splits).
 */
export function parseRegionMap(text: string, name = "region map"): Record<string, string> {
  const example = `${name} must look like "us-east-1=<value>,eu-west-1=<value>"`;
  if (typeof text !== "string" || text.trim() === "")
    throw new CustodyError("invalid", `${name} is empty: ${example}`);
  const out: Record<string, string> = {};
  for (const raw of text.split(",")) {
    const entry = raw.trim();
    if (entry === "")
      throw new CustodyError("invalid", `${name} has an empty entry (stray comma?): ${example}`);
    const eq = entry.indexOf("=");
    if (eq < 0)
      throw new CustodyError(
        "invalid",
        `${name} entry ${JSON.stringify(entry)} has no "=": ${example}`,
      );
    const region = entry.slice(0, eq).trim();
    const value = entry.slice(eq + 1).trim();
    if (!REGION.test(region)) {
      throw new CustodyError(
        "invalid",
        `${name} region ${JSON.stringify(region)} must be lowercase letters, digits and '-', starting with a letter`,
      );
    }
    if (value === "")
      throw new CustodyError(
        "invalid",
        `${name} gives region ${region} an empty value: ${example}`,
      );
    if (Object.hasOwn(out, region))
      throw new CustodyError("invalid", `${name} names region ${region} twice`);
    out[region] = value;
  }
  return out;
}

/** Fills in defaults and refuses timeouts that make no sense. */
export function resolveOptions(given: Partial<CustodyOptions>): CustodyOptions {
  const attemptTimeoutMs = given.attemptTimeoutMs ?? DEFAULT_CUSTODY_OPTIONS.attemptTimeoutMs;
  const hedgeAfterMs =
    given.hedgeAfterMs === undefined ? DEFAULT_CUSTODY_OPTIONS.hedgeAfterMs : given.hedgeAfterMs;
  if (!Number.isFinite(attemptTimeoutMs) || attemptTimeoutMs < 1 || attemptTimeoutMs > 120_000) {
    throw new CustodyError(
      "invalid",
      `KMS attempt timeout must be 1 to 120000 ms, not ${attemptTimeoutMs}`,
    );
  }
  if (
    hedgeAfterMs !== null &&
    (!Number.isFinite(hedgeAfterMs) || hedgeAfterMs < 0 || hedgeAfterMs >= attemptTimeoutMs)
  ) {
    throw new CustodyError(
      "invalid",
      `KMS hedge delay must be 0 or more and below the attempt timeout (${attemptTimeoutMs} ms), not ${hedgeAfterMs}`,
    );
  }
  const regionCooldownMs = given.regionCooldownMs ?? DEFAULT_CUSTODY_OPTIONS.regionCooldownMs;
  if (!Number.isInteger(regionCooldownMs) || regionCooldownMs < 0 || regionCooldownMs > 3_600_000) {
    throw new CustodyError(
      "invalid",
      `KMS region cool-down must be 0 to 3600000 ms, not ${regionCooldownMs}`,
    );
  }
  return { attemptTimeoutMs, hedgeAfterMs, regionCooldownMs };
}
