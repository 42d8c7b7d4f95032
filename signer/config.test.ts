/** The signer's environment: defaults, both custody backends, and each refusal naming its variable. */
import { describe, expect, it } from "vitest";
import { signerConfigFromEnv } from "./config.ts";

const base = {
  KEYHOLE_REGION: "eu-west-1",
  KEYHOLE_TLS_CERT: "/tls/signer.crt",
  KEYHOLE_TLS_KEY: "/tls/signer.key",
  KEYHOLE_TLS_CLIENT_CA: "/tls/relay-ca.crt",
  KEYHOLE_OIDC_ISSUERS: "https://login.example.com/",
  KEYHOLE_OIDC_AUDIENCE: "keyhole",
};

describe("signerConfigFromEnv", () => {
  it("reads a local-custody configuration with defaults", () => {
    const c = signerConfigFromEnv(base);
    expect(c).toMatchObject({
      region: "eu-west-1",
      db: { url: "file:.keyhole/keyhole.db" },
      custody: {
        backend: "local",
        dataDir: ".keyhole/data",
        attemptTimeoutMs: 2000,
        hedgeAfterMs: null,
      },
      listen: { host: "127.0.0.1", port: 8443 },
      tls: {
        certFile: "/tls/signer.crt",
        keyFile: "/tls/signer.key",
        clientCaFile: "/tls/relay-ca.crt",
      },
      nebulaListenPort: 4242,
    });
    expect(c.oidc.issuers).toEqual(["https://login.example.com/"]);
  });

  it("reads an aws configuration with endpoints, timeout and hedge", () => {
    const c = signerConfigFromEnv({
      ...base,
      KEYHOLE_DB_URL: "libsql://db.example.turso.io",
      KEYHOLE_DB_AUTH_TOKEN: "secret-token",
      KEYHOLE_KMS: "aws",
      KEYHOLE_KMS_KEYS: "us-east-1=alias/a,eu-west-1=alias/b",
      KEYHOLE_KMS_ENDPOINTS: "us-east-1=http://127.0.0.1:5001,eu-west-1=http://127.0.0.1:5002",
      KEYHOLE_KMS_TIMEOUT_MS: "500",
      KEYHOLE_KMS_HEDGE_MS: "150",
      KEYHOLE_KMS_COOLDOWN_MS: "0",
      KEYHOLE_SIGNER_PORT: "9443",
    });
    expect(c.custody).toEqual({
      backend: "aws",
      keys: { "us-east-1": "alias/a", "eu-west-1": "alias/b" },
      endpoints: { "us-east-1": "http://127.0.0.1:5001", "eu-west-1": "http://127.0.0.1:5002" },
      attemptTimeoutMs: 500,
      hedgeAfterMs: 150,
      regionCooldownMs: 0,
    });
    expect(c.db).toEqual({ url: "libsql://db.example.turso.io", authToken: "secret-token" });
    expect(c.listen.port).toBe(9443);
  });

  it("refuses wrong values, naming the variable", () => {
    const bad: [Record<string, string>, RegExp][] = [
      [{ KEYHOLE_REGION: "" }, /KEYHOLE_REGION: not set/],
      [{ KEYHOLE_REGION: "EU West" }, /KEYHOLE_REGION/],
      [{ KEYHOLE_DB_URL: "postgres://x" }, /KEYHOLE_DB_URL/],
      [{ KEYHOLE_KMS: "vault" }, /KEYHOLE_KMS: "vault" is not a backend/],
      [{ KEYHOLE_KMS: "aws" }, /KEYHOLE_KMS_KEYS: not set/],
      [{ KEYHOLE_KMS: "aws", KEYHOLE_KMS_KEYS: "us-east-1=k" }, /two regions/],
      [{ KEYHOLE_KMS: "aws", KEYHOLE_KMS_KEYS: "us-east-1" }, /KEYHOLE_KMS_KEYS/],
      [
        { KEYHOLE_KMS: "aws", KEYHOLE_KMS_KEYS: "a=1,b=2", KEYHOLE_KMS_ENDPOINTS: "c=http://x" },
        /KEYHOLE_KMS_ENDPOINTS: region c/,
      ],
      [{ KEYHOLE_KMS_TIMEOUT_MS: "fast" }, /KEYHOLE_KMS_TIMEOUT_MS/],
      [{ KEYHOLE_SIGNER_PORT: "70000" }, /KEYHOLE_SIGNER_PORT/],
      [
        { KEYHOLE_TLS_CLIENT_CA: "" },
        /KEYHOLE_TLS_CLIENT_CA: not set; the signer serves only mutual TLS/,
      ],
      [{ KEYHOLE_OIDC_ISSUERS: "http://login.example.com" }, /KEYHOLE_OIDC_ISSUERS/],
    ];
    for (const [change, message] of bad) {
      expect(() => signerConfigFromEnv({ ...base, ...change }), JSON.stringify(change)).toThrow(
        message,
      );
    }
  });

  it("never puts the database token in an error message", () => {
    expect(() =>
      signerConfigFromEnv({ ...base, KEYHOLE_DB_AUTH_TOKEN: "tok-123", KEYHOLE_KMS: "nope" }),
    ).toThrow(expect.objectContaining({ message: expect.not.stringContaining("tok-123") }));
  });
});
