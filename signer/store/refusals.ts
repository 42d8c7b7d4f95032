/** Refusals shared by the store and the issuance path. */
import { KeyholeError } from "../../core/errors.ts";

/**
 * Two issuances would make byte-identical certificates (same key, names, addresses and validity:
 * the same second). Nothing is written for the second one; the caller may ask again a second later.
 */
export function sameCertificateTooSoon(cause?: unknown): KeyholeError {
  return new KeyholeError(
    "rate_limited",
    "an identical certificate for this key was issued within the last second; try again in a second",
    { retryAfterSeconds: 1 },
    cause === undefined ? undefined : { cause },
  );
}
