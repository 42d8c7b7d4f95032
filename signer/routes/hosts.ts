/**
 * Hosts: register (address allocated or checked, one-time enrollment code returned once), list, show,
 * block (its certificates join the network's blocklist), and the blocklist itself, which a host may
 * read with its host token as well as an admin with hosts:read.
 */

import { bearerCredential } from "../../core/auth/bearer.ts";
import { requireScope } from "../../core/auth/principal.ts";
import {
  type BlocklistResponse,
  RegisterHostBody,
  type RegisterHostResponse,
} from "../../core/contract/api.ts";
import { parseDuration } from "../../core/duration.ts";
import { KeyholeError } from "../../core/errors.ts";
import type { SignerApp } from "../app.ts";
import { authenticateUser, looksLikeJwt } from "../auth.ts";
import { readJsonBody } from "../http.ts";
import { type checkHostCertRequest, withPrefix } from "../issue.ts";
import type { SignerRuntime } from "../runtime.ts";
import type { HostRecord } from "../store/types.ts";
import { networkOfCaller } from "./networks.ts";

async function hostOfCaller(rt: SignerRuntime, org: string, id: string): Promise<HostRecord> {
  const host = await rt.store.getHost(id);
  if (!host || host.org !== org || !(await rt.store.getNetworkForOrg(org, host.networkId))) {
    throw new KeyholeError("not_found", `no host ${JSON.stringify(id)}`);
  }
  return host;
}

export function registerHostRoutes(app: SignerApp, rt: SignerRuntime): void {
  app.post("/v1/networks/:id/hosts", async (c) => {
    const caller = await authenticateUser(rt, c, "hosts:write");
    const network = await networkOfCaller(rt, caller.org, c.req.param("id"));
    const body = await readJsonBody(c, RegisterHostBody);
    const certLifetimeS = parseDuration(body.certLifetime);
    const codeTtlS = parseDuration(body.codeTtl);
    if (certLifetimeS < 60)
      throw new KeyholeError("invalid_duration", 'certLifetime must be at least "1m"');
    if (codeTtlS < 60) throw new KeyholeError("invalid_duration", 'codeTtl must be at least "1m"');
    let ip: string | undefined;
    if (body.ip !== undefined) {
      try {
        ip = withPrefix(network, body.ip);
      } catch (e) {
        if (e instanceof KeyholeError) throw e;
        throw new KeyholeError(
          "invalid_network",
          `ip: ${JSON.stringify(body.ip)} is not an IP address`,
          { field: "ip" },
        );
      }
    }
    // Groups and address are checked as issuance will check them, so a code never fails at enrollment.
    if (network.groups !== null || ip !== undefined) {
      checkGroupsAndIp(network, body.groups, ip);
    }
    const registered = await rt.store.registerHost({
      networkId: network.id,
      name: body.name,
      ip,
      groups: body.groups,
      lighthouse: body.lighthouse,
      staticAddrs: body.staticAddrs,
      certLifetimeS,
      codeTtlS,
      audit: [
        {
          traceId: caller.traceId,
          actor: caller.actor,
          org: network.org,
          networkId: network.id,
          action: "host.register",
          outcome: "ok",
          detail: { name: body.name, groups: body.groups, lighthouse: body.lighthouse },
        },
      ],
    });
    const response: RegisterHostResponse = {
      host: await rt.store.hostView(registered.host),
      enrollmentCode: registered.enrollmentCode,
      codeExpiresAt: registered.codeExpiresAt.toISOString(),
    };
    return c.json(response, 201);
  });

  app.get("/v1/networks/:id/hosts", async (c) => {
    const caller = await authenticateUser(rt, c, "hosts:read");
    const network = await networkOfCaller(rt, caller.org, c.req.param("id"));
    const hosts = await rt.store.listHosts(network.id);
    const views = [];
    for (const h of hosts) views.push(await rt.store.hostView(h));
    return c.json({ hosts: views });
  });

  app.get("/v1/hosts/:id", async (c) => {
    const caller = await authenticateUser(rt, c, "hosts:read");
    const host = await hostOfCaller(rt, caller.org, c.req.param("id"));
    return c.json(await rt.store.hostView(host));
  });

  app.post("/v1/hosts/:id/block", async (c) => {
    const caller = await authenticateUser(rt, c, "hosts:write");
    const host = await hostOfCaller(rt, caller.org, c.req.param("id"));
    const result = await rt.store.blockHost(host.id, [
      {
        traceId: caller.traceId,
        actor: caller.actor,
        org: host.org,
        networkId: host.networkId,
        action: "host.block",
        outcome: "ok",
        detail: { hostId: host.id, name: host.name },
      },
    ]);
    return c.json(await rt.store.hostView(result.host));
  });

  app.get("/v1/networks/:id/blocklist", async (c) => {
    const id = c.req.param("id");
    const credential = bearerCredential(c.req.header("authorization"));
    let networkId: string;
    if (looksLikeJwt(credential)) {
      const principal = await rt.oidc.verify(credential);
      requireScope(principal, "hosts:read");
      networkId = (await networkOfCaller(rt, principal.org, id)).id;
    } else {
      // A host token reads its own network's blocklist only; the token is not rotated by reading.
      const cred = await rt.store.authenticateHostToken(credential, { traceId: c.get("traceId") });
      if (cred.network.id !== id)
        throw new KeyholeError("not_found", `no network ${JSON.stringify(id)}`);
      networkId = id;
    }
    const view: BlocklistResponse = {
      networkId,
      fingerprints: await rt.store.blocklist(networkId),
      caBundle: await rt.store.caBundle(networkId),
    };
    return c.json(view);
  });
}

function checkGroupsAndIp(
  network: Parameters<typeof checkHostCertRequest>[0],
  groups: string[],
  ip: string | undefined,
) {
  if (network.groups !== null) {
    const allowed = new Set(network.groups);
    const unknown = groups.filter((g) => !allowed.has(g));
    if (unknown.length > 0) {
      throw new KeyholeError(
        "unknown_group",
        `the network's CA allows only the groups ${network.groups.join(", ") || "(none)"}; not ${unknown.join(", ")}`,
        { field: "groups", unknown },
      );
    }
  }
  if (ip !== undefined) withPrefix(network, ip);
}
