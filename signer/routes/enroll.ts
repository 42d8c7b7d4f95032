/**
 * Host bootstrap: `POST /v1/enroll` (one-time code + public key => certificate, CA bundle, host token,
 * config hints) and `POST /v1/renew` (host token => new certificate and the next token; an old token
 * presented again blocks the host). The KMS context's org is the org of the network the credential
 * belongs to, found by the signer from the credential itself.
 */
import type { Context } from "hono";
import { bearerCredential } from "../../core/auth/bearer.ts";
import { parseCertificatesPem, publicKeyToPem } from "../../core/cert/index.ts";
import {
  EnrollBody,
  type IssuedCertificate,
  type NebulaConfigHints,
  RenewBody,
} from "../../core/contract/api.ts";
import { KeyholeError } from "../../core/errors.ts";
import type { SignerApp } from "../app.ts";
import { idempotencyKeyOf, sha256Hex } from "../auth.ts";
import { readJsonBody } from "../http.ts";
import { issueHostCert } from "../issue.ts";
import type { SignerRuntime } from "../runtime.ts";
import type { HostCredential, IssuanceCredential, IssuanceView } from "../store/types.ts";

type StoredIssued = Omit<IssuedCertificate, "hostToken">;

export function configHints(
  rt: SignerRuntime,
  cred: HostCredential,
  view: IssuanceView,
): NebulaConfigHints {
  // Only the lighthouses are kept (an index holds just them): enrollment cost does not grow with hosts.
  const lighthouses = view.lighthouses
    .filter((h) => h.lighthouse && h.state !== "blocked" && h.id !== cred.host.id)
    .map((h) => ({ ip: h.ip.split("/")[0] ?? h.ip, staticAddrs: h.staticAddrs }));
  const staticHostMap: Record<string, string[]> = {};
  for (const lh of lighthouses)
    if (lh.staticAddrs.length > 0) staticHostMap[lh.ip] = lh.staticAddrs;
  return {
    network: { id: cred.network.id, name: cred.network.name, cidrs: cred.network.cidrs },
    isLighthouse: cred.host.lighthouse,
    listenPort: rt.nebulaListenPort,
    lighthouses,
    staticHostMap,
    blocklist: view.blocklist(),
  };
}

async function issueToHost(
  rt: SignerRuntime,
  c: Context,
  cred: HostCredential,
  publicKeyPem: string,
  credential: IssuanceCredential,
  scope: string,
  bodyText: string,
): Promise<Response> {
  const key = idempotencyKeyOf(c);
  const idempotency = key
    ? {
        org: scope,
        key,
        requestHash: sha256Hex(`${c.req.method} ${c.req.path}\n${bodyText}`),
      }
    : undefined;
  const outcome = await issueHostCert<StoredIssued>(
    rt,
    {
      network: cred.network,
      contextOrg: cred.network.org,
      audit: {
        traceId: c.get("traceId"),
        actor: `${credential.kind === "enrollment_code" ? "code" : "host"}:${cred.host.id}`,
      },
      hostId: cred.host.id,
      name: cred.host.name,
      networks: cred.host.ips,
      unsafeNetworks: [],
      groups: cred.host.groups,
      publicKeyPem,
      lifetimeS: cred.host.certLifetimeS,
      credential,
      idempotency,
    },
    async ({ certificate, pem, view }) => ({
      hostId: cred.host.id,
      certificate: pem,
      fingerprint: certificate.fingerprint,
      notAfter: certificate.notAfter.toISOString(),
      caBundle: view.caBundle(),
      config: configHints(rt, cred, view),
    }),
  );
  if (outcome.replayed) {
    // The first response is replayed without its host token (only its hash was ever stored).
    return c.json({ ...outcome.response, hostToken: "" }, 200, { "idempotent-replayed": "true" });
  }
  const reply: IssuedCertificate = { ...outcome.response, hostToken: outcome.hostToken ?? "" };
  return c.json(reply, 201);
}

async function replayed(
  c: Context,
  rt: SignerRuntime,
  scope: string,
  bodyText: string,
): Promise<Response | null> {
  const key = idempotencyKeyOf(c);
  if (!key) return null;
  const hash = sha256Hex(`${c.req.method} ${c.req.path}\n${bodyText}`);
  const found = await rt.store.findIdempotentResponse(scope, key, hash);
  if (found === null) return null;
  return c.json({ ...(found as object), hostToken: "" }, 200, { "idempotent-replayed": "true" });
}

export function registerEnrollRoutes(app: SignerApp, rt: SignerRuntime): void {
  app.post("/v1/enroll", async (c) => {
    const body = await readJsonBody(c, EnrollBody);
    const bodyText = JSON.stringify(body);
    // Idempotent replies are scoped to the credential: only its holder can replay them. A reply is
    // stored in the transaction that uses the code, so while the code is unused there is none, and
    // the store is asked for one only when the code is refused (reading a code has no side effects;
    // a host token's does, which is why /v1/renew looks for its reply first).
    const scope = `code:${sha256Hex(body.code)}`;
    let cred: HostCredential;
    try {
      cred = await rt.store.authenticateEnrollmentCode(body.code);
    } catch (e) {
      if (!(e instanceof KeyholeError && e.code === "invalid_enrollment_code")) throw e;
      const replay = await replayed(c, rt, scope, bodyText);
      if (replay) return replay;
      throw e;
    }
    return issueToHost(
      rt,
      c,
      cred,
      body.publicKey,
      { kind: "enrollment_code", code: body.code },
      scope,
      bodyText,
    );
  });

  app.post("/v1/renew", async (c) => {
    const token = bearerCredential(c.req.header("authorization"));
    const body = await readJsonBody(c, RenewBody);
    const bodyText = JSON.stringify(body);
    const scope = `token:${sha256Hex(token)}`;
    const replay = await replayed(c, rt, scope, bodyText);
    if (replay) return replay;
    const cred = await rt.store.authenticateHostToken(token, { traceId: c.get("traceId") });
    let publicKeyPem: string;
    if (body.publicKey !== undefined) {
      publicKeyPem = body.publicKey;
    } else {
      const certs = await rt.store.listCertificates(cred.host.id);
      const latest = [...certs].sort((a, b) => b.notBefore.getTime() - a.notBefore.getTime())[0];
      const cert = latest ? parseCertificatesPem(latest.pem)[0] : undefined;
      if (!cert) {
        throw new KeyholeError(
          "invalid_request",
          "publicKey: this host has no certificate yet; send its public key",
        );
      }
      publicKeyPem = publicKeyToPem(cert.curve, cert.publicKey);
    }
    return issueToHost(rt, c, cred, publicKeyPem, { kind: "host_token", token }, scope, bodyText);
  });
}
