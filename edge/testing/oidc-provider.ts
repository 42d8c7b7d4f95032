/**
 * Test instrument: a real OpenID provider (the `oidc-provider` package) on loopback that issues JWT
 * access tokens by the client-credentials grant, with Keyhole's audience, scopes and org claim, so
 * edge and signer are proven against an identity provider that is not our own dev issuer.
 */
import { createServer, type Server } from "node:http";
import { exportJWK, generateKeyPair } from "jose";
import Provider from "oidc-provider";
import { freePort } from "../../cli/dev/moto.ts";

export interface TestOpenIdProvider {
  issuer: string;
  /** An access token for the client-credentials grant with these scopes (and, when set, org/amr). */
  token(scopes: string[]): Promise<string>;
  close(): Promise<void>;
}

export interface TestOpenIdProviderOptions {
  audience: string;
  org: string;
  amr?: string[];
}

const RESOURCE = "urn:keyhole:api";
const ALL = "networks:write hosts:write hosts:read certs:sign audit:read";

export async function startTestOpenIdProvider(
  options: TestOpenIdProviderOptions,
): Promise<TestOpenIdProvider> {
  const { privateKey } = await generateKeyPair("ES256", { extractable: true });
  const jwk = { ...(await exportJWK(privateKey)), alg: "ES256", use: "sig", kid: "op-es256" };
  let server: Server | undefined;
  const listening = await freePort();
  const issuer = `http://127.0.0.1:${listening}`;
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: "keyhole-ci",
        client_secret: "not-a-real-secret-only-for-this-test",
        grant_types: ["client_credentials"],
        redirect_uris: [],
        response_types: [],
        scope: ALL,
        id_token_signed_response_alg: "ES256",
      },
    ],
    jwks: { keys: [jwk] },
    scopes: ALL.split(" "),
    ttl: { ClientCredentials: 600 },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => RESOURCE,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: ALL,
          audience: options.audience,
          accessTokenFormat: "jwt",
          accessTokenTTL: 600,
          jwt: { sign: { alg: "ES256" } },
        }),
      },
    },
    extraTokenClaims: () => ({
      org: options.org,
      ...(options.amr ? { amr: options.amr } : {}),
    }),
  });
  server = createServer(provider.callback());
  await new Promise<void>((ok) => server?.listen(listening, "127.0.0.1", () => ok()));

  return {
    issuer,
    async token(scopes) {
      const res = await fetch(`${issuer}/token`, {
        method: "POST",
        headers: {
          "content-type": "application/x-www-form-urlencoded",
          authorization: `Basic ${Buffer.from("keyhole-ci:not-a-real-secret-only-for-this-test").toString("base64")}`,
        },
        body: new URLSearchParams({
          grant_type: "client_credentials",
          resource: RESOURCE,
          scope: scopes.join(" "),
        }),
      });
      const body = (await res.json()) as { access_token?: string; error_description?: string };
      if (!res.ok || !body.access_token) {
        throw new Error(`oidc-provider refused a token: ${res.status} ${body.error_description}`);
      }
      return body.access_token;
    },
    close: () =>
      new Promise<void>((ok) => {
        server?.closeAllConnections();
        server?.close(() => ok());
      }),
  };
}
