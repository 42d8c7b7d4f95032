/**
 * Key custody: the only code in Keyhole that calls KMS or holds a plaintext CA key. The signer gets a
 * KeyCustody from createCustody and does nothing with key material but pass it to `use`.
 */
import { resolveOptions } from "./config.ts";
import { RegionalCustody } from "./custody.ts";
import { DEFAULT_LOCAL_REGIONS, LOCAL_LABEL, prepareLocalRegions } from "./local.ts";
import type { CustodyConfig, KeyCustody } from "./types.ts";

export { parseRegionMap } from "./config.ts";
export { masterKeyPath } from "./local.ts";
export * from "./types.ts";

export async function createCustody(config: CustodyConfig): Promise<KeyCustody> {
  const options = resolveOptions(config);
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
