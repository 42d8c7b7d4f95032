/**
 * The development OIDC issuer of the local stack: discovery document and JWKS over HTTP on loopback,
 * and tokens minted on request (`keyhole dev token`). It stands in for a real identity provider so that
 * `npm start` needs no account anywhere; the edge and signer verify its tokens exactly as they would
 * a real provider's (discovery, JWKS, kid, audience, expiry).
 */
import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { dirname } from "node:path";
import { exportJWK, generateKeyPair, importJWK, type JWK, SignJWT } from "jose";

export type DevAlg = "ES256" | "RS256" | "EdDSA";

export interface DevClaims {
  sub?: string;
  org?: string;
  scope?: string | string[];
  amr?: string[];
  /** Lifetime from now (default 3600 s). Negative values make an already-expired token. */
  expiresInSec?: number;
  /** Seconds from now before which the token is not valid (nbf). */
  notBeforeSec?: number;
  /** Any other claims, merged last. */
  extra?: Record<string, unknown>;
}

export interface MintOptions {
  alg?: DevAlg;
  /** Override the kid header (e.g. an unknown one). */
  kid?: string;
  audience?: string;
  issuer?: string;
}

export interface DevIssuer {
  issuer: string;
  audience: string;
  orgClaim: string;
  jwksUrl: string;
  mint(claims?: DevClaims, options?: MintOptions): Promise<string>;
  /** New signing keys (new kids); the old public keys stay in the JWKS unless `dropOld`. */
  rotateKey(options?: { dropOld?: boolean }): Promise<void>;
  /** Public JWKs currently served. */
  publicJwks(): JWK[];
  close(): Promise<void>;
}

export interface DevIssuerOptions {
  /** Port on 127.0.0.1 (0 = any free port). */
  port?: number;
  host?: string;
  /** Where to keep the private keys so tokens survive restarts (JSON, mode 0600). */
  keyFile?: string;
  audience?: string;
  orgClaim?: string;
}

export interface SigningKey {
  kid: string;
  alg: DevAlg;
  privateJwk: JWK;
  publicJwk: JWK;
}

const ALGS: DevAlg[] = ["ES256", "RS256", "EdDSA"];

/** Signs a dev token with the newest key of `alg` in `keys`. Used by the server and, offline, by the CLI. */
export async function mintDevToken(
  keys: readonly SigningKey[],
  defaults: { issuer: string; audience: string; orgClaim: string },
  claims: DevClaims = {},
  options: MintOptions = {},
): Promise<string> {
  const alg = options.alg ?? "ES256";
  const key = [...keys].reverse().find((k) => k.alg === alg);
  if (!key) throw new Error(`dev issuer has no ${alg} key`);
  const now = Math.floor(Date.now() / 1000);
  const scope = Array.isArray(claims.scope) ? claims.scope.join(" ") : claims.scope;
  const payload: Record<string, unknown> = {
    ...(claims.org === undefined ? {} : { [defaults.orgClaim]: claims.org }),
    ...(scope === undefined ? {} : { scope }),
    ...(claims.amr === undefined ? {} : { amr: claims.amr }),
    ...claims.extra,
  };
  const jwt = new SignJWT(payload)
    .setProtectedHeader({ alg: key.alg, kid: options.kid ?? key.kid, typ: "JWT" })
    .setIssuer(options.issuer ?? defaults.issuer)
    .setAudience(options.audience ?? defaults.audience)
    .setSubject(claims.sub ?? "dev-admin")
    .setIssuedAt(now)
    .setJti(randomUUID())
    .setExpirationTime(now + (claims.expiresInSec ?? 3600));
  if (claims.notBeforeSec !== undefined) jwt.setNotBefore(now + claims.notBeforeSec);
  return jwt.sign(await importJWK(key.privateJwk, key.alg));
}

async function newKey(alg: DevAlg): Promise<SigningKey> {
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
  const kid = randomUUID();
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg, use: "sig" };
  const privateJwk = { ...(await exportJWK(privateKey)), kid, alg };
  return { kid, alg, privateJwk, publicJwk };
}

async function newKeySet(): Promise<SigningKey[]> {
  return Promise.all(ALGS.map(newKey));
}

export async function loadOrCreateKeys(keyFile: string | undefined): Promise<SigningKey[]> {
  if (keyFile && existsSync(keyFile)) {
    const parsed = JSON.parse(await readFile(keyFile, "utf8")) as { keys: SigningKey[] };
    if (!Array.isArray(parsed.keys) || parsed.keys.length === 0) {
      throw new Error(`dev issuer key file ${keyFile} is not valid: delete it to make new keys`);
    }
    return parsed.keys;
  }
  const keys = await newKeySet();
  if (keyFile) await saveKeys(keyFile, keys);
  return keys;
}

async function saveKeys(keyFile: string, keys: SigningKey[]): Promise<void> {
  await mkdir(dirname(keyFile), { recursive: true });
  await writeFile(keyFile, JSON.stringify({ keys }), { mode: 0o600 });
  await chmod(keyFile, 0o600);
}

export async function startDevIssuer(options: DevIssuerOptions = {}): Promise<DevIssuer> {
  const host = options.host ?? "127.0.0.1";
  const audience = options.audience ?? "keyhole";
  const orgClaim = options.orgClaim ?? "org";
  let keys = await loadOrCreateKeys(options.keyFile);

  let issuer = "";
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    const send = (status: number, body: unknown) => {
      res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" });
      res.end(JSON.stringify(body));
    };
    if (req.method !== "GET") return send(405, { error: "method not allowed" });
    if (path === "/.well-known/openid-configuration") {
      return send(200, {
        issuer,
        jwks_uri: `${issuer}/jwks.json`,
        id_token_signing_alg_values_supported: ALGS,
        response_types_supported: ["id_token"],
        subject_types_supported: ["public"],
      });
    }
    if (path === "/jwks.json") return send(200, { keys: keys.map((k) => k.publicJwk) });
    return send(404, { error: "not found" });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, host, () => resolve());
  });
  const address = server.address();
  if (!address || typeof address === "string")
    throw new Error("dev issuer did not bind a TCP port");
  issuer = `http://${host.includes(":") ? `[${host}]` : host}:${address.port}`;

  return {
    issuer,
    audience,
    orgClaim,
    jwksUrl: `${issuer}/jwks.json`,
    mint: (claims = {}, mintOptions = {}) =>
      mintDevToken(keys, { issuer, audience, orgClaim }, claims, mintOptions),
    async rotateKey(rotate = {}) {
      const fresh = await newKeySet();
      keys = rotate.dropOld ? fresh : [...keys, ...fresh];
      if (options.keyFile) await saveKeys(options.keyFile, keys);
    },
    publicJwks: () => keys.map((k) => k.publicJwk),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
