/**
 * What every route and the issuance code share: the injected parts (store, custody, OIDC verifier,
 * clock, logger) and the signer's own metrics. Built once by `createSignerApp`.
 */
import type { OidcVerifier } from "../core/auth/oidc.ts";
import type { KeyCustody } from "./custody/types.ts";
import type { SignerLogger } from "./log.ts";
import type { SignerMetrics } from "./metrics.ts";
import type { SignerStore } from "./store/types.ts";

export interface SignerDeps {
  store: SignerStore;
  custody: KeyCustody;
  oidc: OidcVerifier;
  /** Defaults to `() => new Date()`. */
  clock?: () => Date;
  /** This signer's region name (reported by /v1/health and in audit rows' detail). */
  region: string;
  logger: SignerLogger;
  /** Nebula listen port suggested to enrolling hosts (default 4242). */
  nebulaListenPort?: number;
}

export interface SignerRuntime {
  store: SignerStore;
  custody: KeyCustody;
  oidc: OidcVerifier;
  clock: () => Date;
  region: string;
  logger: SignerLogger;
  metrics: SignerMetrics;
  nebulaListenPort: number;
}

/** Contract curve names to the certificate library's. */
export function certCurve(curve: "25519" | "P256"): "CURVE25519" | "P256" {
  return curve === "25519" ? "CURVE25519" : "P256";
}

export function wholeSeconds(d: Date): Date {
  return new Date(Math.floor(d.getTime() / 1000) * 1000);
}
