/**
 * Key custody: the only code in Keyhole that calls KMS or holds a plaintext CA key. The signer gets a
 * KeyCustody from createCustody and does nothing with key material but pass it to `use`.
 *
 *   types.ts    the interface, CustodyError, config and option types
 *   custody.ts  timeouts, failover, hedge, coalescing, zeroing, counters (backend-independent)
 *   aws.ts      one KMSClient per region; SDK errors sorted into denied / unavailable / error
 *   local.ts    development backend: AES-256-GCM master key files standing for regions
 *   context.ts  the {org, network, ca} context: checks and canonical encoding
 *   config.ts   parseRegionMap for KEYHOLE_KMS_KEYS / KEYHOLE_KMS_ENDPOINTS, option defaults
 */
import { KeyholeError } from "../../core/errors.ts";
import { resolveOptions } from "./config.ts";
import { RegionalCustody } from "./custody.ts";
import { DEFAULT_LOCAL_REGIONS, LOCAL_LABEL, prepareLocalRegions } from "./local.ts";
import { type CustodyConfig, CustodyError, type KeyCustody } from "./types.ts";

export { parseRegionMap } from "./config.ts";
export { COALESCE_UNDER_LOAD_MS, SHARE_WINDOW_MS } from "./custody.ts";
export { masterKeyPath } from "./local.ts";
export * from "./types.ts";

export async function createCustody(config: CustodyConfig): Promise<KeyCustody> {
  const options = resolveOptions(config);
  const regionCount =
    config.backend === "local"
      ? (config.regions ?? DEFAULT_LOCAL_REGIONS).length
      : Object.keys(config.keys).length;
  if (regionCount < 2) {
    throw new CustodyError(
      "invalid",
      `key custody needs at least two regions, each with its own key: every CA key is sealed twice (got ${regionCount})`,
    );
  }
  if (config.backend === "local") {
    const regions = config.regions ?? [...DEFAULT_LOCAL_REGIONS];
    return new RegionalCustody(
      "local",
      LOCAL_LABEL,
      await prepareLocalRegions(config.dataDir, regions),
      options,
    );
  }
  const { prepareAwsRegions, AWS_LABEL } = await import("./aws.ts");
  return new RegionalCustody("aws", AWS_LABEL, prepareAwsRegions(config, options), options);
}

/**
 * The API error for a custody failure: denied => 403 context_denied, unavailable => 503
 * kms_unavailable, invalid => 500 internal. The client message names no region, key or KMS detail;
 * those stay in the attempts for the audit log (the CustodyError is kept as `cause`).
 */
export function keyholeErrorOf(e: CustodyError): KeyholeError {
  switch (e.kind) {
    case "denied":
      return new KeyholeError(
        "context_denied",
        "KMS refused to open this network's CA key for your organization; the attempt was audited",
        undefined,
        { cause: e },
      );
    case "unavailable":
      return new KeyholeError(
        "kms_unavailable",
        "no KMS region could open the CA key right now; retry later",
        undefined,
        {
          cause: e,
        },
      );
    case "invalid":
      return new KeyholeError(
        "internal",
        "key custody could not use this CA's sealed key",
        undefined,
        { cause: e },
      );
  }
}
