/**
 * Direct signing (`POST /v1/networks/{id}/sign`, certs:sign), like `nebula-cert sign -in-pub`. A caller
 * whose org does not own the network gets no look at it: the CA key is asked for with the CALLER's
 * KMS context, which KMS refuses (context_denied, audited, not retried).
 */
import { SignBody, type SignResponse } from "../../core/contract/api.ts";
import { parseDuration } from "../../core/duration.ts";
import { KeyholeError } from "../../core/errors.ts";
import type { SignerApp } from "../app.ts";
import { authenticateUser, idempotencyKeyOf, sha256Hex } from "../auth.ts";
import { readJsonBody } from "../http.ts";
import { issueHostCert, openForeignCa, withPrefix } from "../issue.ts";
import type { SignerRuntime } from "../runtime.ts";

export function registerSignRoutes(app: SignerApp, rt: SignerRuntime): void {
  app.post("/v1/networks/:id/sign", async (c) => {
    const caller = await authenticateUser(rt, c, "certs:sign");
    const body = await readJsonBody(c, SignBody);
    const network = await rt.store.getNetwork(c.req.param("id"));
    if (!network)
      throw new KeyholeError("not_found", `no network ${JSON.stringify(c.req.param("id"))}`);
    if (network.org !== caller.org) {
      await openForeignCa(rt, network, {
        org: caller.org,
        traceId: caller.traceId,
        actor: caller.actor,
      });
    }
    const lifetimeS = parseDuration(body.duration);
    if (lifetimeS < 1)
      throw new KeyholeError("invalid_duration", 'duration must be positive, e.g. "720h"');
    const networks = body.networks.map((ip) => withPrefix(network, ip));
    const key = idempotencyKeyOf(c);
    const bodyText = JSON.stringify(body);
    const requestHash = sha256Hex(`${c.req.method} ${c.req.path}\n${bodyText}`);
    if (key) {
      const found = await rt.store.findIdempotentResponse(caller.org, key, requestHash);
      if (found !== null) return c.json(found, 200, { "idempotent-replayed": "true" });
    }
    const outcome = await issueHostCert<SignResponse>(
      rt,
      {
        network,
        contextOrg: caller.org,
        audit: { traceId: caller.traceId, actor: caller.actor },
        hostId: null,
        name: body.name,
        networks,
        unsafeNetworks: body.unsafeNetworks,
        groups: body.groups,
        publicKeyPem: body.publicKey,
        lifetimeS,
        credential: { kind: "direct" },
        idempotency: key ? { org: caller.org, key, requestHash } : undefined,
      },
      async ({ certificate, pem, ca }) => ({
        certificate: pem,
        fingerprint: certificate.fingerprint,
        notBefore: certificate.notBefore.toISOString(),
        notAfter: certificate.notAfter.toISOString(),
        caFingerprint: ca.fingerprint,
      }),
    );
    if (outcome.replayed) return c.json(outcome.response, 200, { "idempotent-replayed": "true" });
    return c.json(outcome.response, 201);
  });
}
