/** The edge's configuration is refused at start with a message naming the variable and the fix. */
import { describe, expect, it } from "vitest";
import { ConfigError } from "../core/auth/index.ts";
import { edgeConfigFromEnv } from "./config.ts";

const base = { KEYHOLE_SIGNERS: "eu=https://10.0.0.5:8443,us=https://signer-us.example.com" };

function refusal(env: Record<string, string>): ConfigError {
  try {
    edgeConfigFromEnv(env);
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  throw new Error("configuration was accepted");
}

describe("edge configuration", () => {
  it("reads regions in order, sites, rates and defaults", () => {
    const config = edgeConfigFromEnv({
      ...base,
      KEYHOLE_SIGNER_SITES: "us=39.04:-77.49,eu=50.11:8.68",
      KEYHOLE_RATE_ADDRESS: "5/10",
    });
    expect(config.signers.map((s) => [s.name, s.url])).toEqual([
      ["eu", "https://10.0.0.5:8443"],
      ["us", "https://signer-us.example.com"],
    ]);
    expect(config.signers[1]?.site).toEqual({ lat: 39.04, lon: -77.49 });
    expect(config.rates.address).toEqual({ limit: 5, periodSec: 10 });
    expect(config.rates.subject).toEqual({ limit: 120, periodSec: 60 });
    expect(config.signerTimeoutMs).toBe(10_000);
  });

  it.each([
    [{}, "KEYHOLE_SIGNERS", /not set/],
    [{ KEYHOLE_SIGNERS: "eu=http://10.0.0.5:8443" }, "KEYHOLE_SIGNERS", /https/],
    [{ KEYHOLE_SIGNERS: "https://10.0.0.5:8443" }, "KEYHOLE_SIGNERS", /region=https/],
    [{ KEYHOLE_SIGNERS: "eu=https://a:1,eu=https://b:2" }, "KEYHOLE_SIGNERS", /twice/],
    [{ KEYHOLE_SIGNERS: "eu=https://a:1/v1" }, "KEYHOLE_SIGNERS", /just https/],
    [{ ...base, KEYHOLE_SIGNER_SITES: "mars=1:2" }, "KEYHOLE_SIGNER_SITES", /does not list/],
    [{ ...base, KEYHOLE_SIGNER_SITES: "eu=91:2" }, "KEYHOLE_SIGNER_SITES", /±90/],
    [{ ...base, KEYHOLE_RATE_ADDRESS: "ten" }, "KEYHOLE_RATE_ADDRESS", /10\/60/],
    [{ ...base, KEYHOLE_SIGNER_TIMEOUT_MS: "0" }, "KEYHOLE_SIGNER_TIMEOUT_MS", /milliseconds/],
    [{ ...base, KEYHOLE_TRUST_PROXY: "yes" }, "KEYHOLE_TRUST_PROXY", /1 or 0/],
  ])("refuses %j naming %s", (env, variable, message) => {
    const e = refusal(env as Record<string, string>);
    expect(e.variable).toBe(variable);
    expect(e.message).toMatch(message);
  });
});
