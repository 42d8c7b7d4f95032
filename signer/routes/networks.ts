/**
 * Networks and their CAs: create (with a new sealed CA), list, show, rotate the CA. Creating and
 * rotating a CA needs networks:write and a multi-factor login; reading needs hosts:read. A network of
 * another org reads as not_found.
 */

import { formatCidr, networkOf, parseCidr } from "../../core/cert/ip.ts";
import { CreateNetworkBody, type NetworkView, RotateCaBody } from "../../core/contract/api.ts";
import { parseDuration } from "../../core/duration.ts";
import { KeyholeError } from "../../core/errors.ts";
import type { SignerApp } from "../app.ts";
import { authenticateUser } from "../auth.ts";
import { makeSealedCa } from "../ca.ts";
import { readJsonBody } from "../http.ts";
import { newId } from "../ids.ts";
import type { SignerRuntime } from "../runtime.ts";
import { checkCidrsForVersion } from "../store/addresses.ts";
import type { NetworkRecord } from "../store/types.ts";

export async function networkOfCaller(
  rt: SignerRuntime,
  org: string,
  id: string,
): Promise<NetworkRecord> {
  const network = await rt.store.getNetworkForOrg(org, id);
  if (!network) throw new KeyholeError("not_found", `no network ${JSON.stringify(id)}`);
  return network;
}

function canonicalCidrs(cidrs: string[]): string[] {
  const out: string[] = [];
  for (const [i, text] of cidrs.entries()) {
    let cidr: ReturnType<typeof parseCidr>;
    try {
      cidr = parseCidr(text);
    } catch {
      throw new KeyholeError(
        "invalid_network",
        `cidrs.${i}: ${JSON.stringify(text)} is not a CIDR such as 10.42.0.0/16`,
        {
          field: `cidrs.${i}`,
        },
      );
    }
    const canonical = formatCidr(networkOf(cidr));
    if (out.includes(canonical)) {
      throw new KeyholeError("invalid_network", `cidrs.${i}: ${canonical} is listed twice`, {
        field: `cidrs.${i}`,
      });
    }
    out.push(canonical);
  }
  return out;
}

export function registerNetworkRoutes(app: SignerApp, rt: SignerRuntime): void {
  app.post("/v1/networks", async (c) => {
    const caller = await authenticateUser(rt, c, "networks:write", { mfa: true });
    const body = await readJsonBody(c, CreateNetworkBody);
    const cidrs = canonicalCidrs(body.cidrs);
    checkCidrsForVersion(cidrs, body.certVersion); // before any KMS call: refusals write nothing
    const lifetimeS = parseDuration(body.caLifetime);
    const existing = await rt.store.listNetworks(caller.org);
    if (existing.some((n) => n.name === body.name)) {
      throw new KeyholeError(
        "name_taken",
        `a network named ${JSON.stringify(body.name)} already exists`,
      );
    }
    const networkId = newId("net");
    const sealed = await makeSealedCa(rt, {
      org: caller.org,
      networkId,
      name: body.name,
      curve: body.curve,
      certVersion: body.certVersion,
      lifetimeS,
      cidrs,
      groups: body.groups ?? null,
      audit: { traceId: caller.traceId, actor: caller.actor },
      action: "ca.create",
    });
    const network = await rt.store.createNetwork({
      id: networkId,
      org: caller.org,
      name: body.name,
      cidrs,
      curve: body.curve,
      certVersion: body.certVersion,
      groups: body.groups ?? null,
      ca: sealed.ca,
      audit: sealed.audit,
    });
    return c.json(await rt.store.networkView(network), 201);
  });

  app.get("/v1/networks", async (c) => {
    const caller = await authenticateUser(rt, c, "hosts:read");
    const networks = await rt.store.listNetworks(caller.org);
    const views: NetworkView[] = [];
    for (const n of networks) views.push(await rt.store.networkView(n));
    return c.json({ networks: views });
  });

  app.get("/v1/networks/:id", async (c) => {
    const caller = await authenticateUser(rt, c, "hosts:read");
    const network = await networkOfCaller(rt, caller.org, c.req.param("id"));
    return c.json(await rt.store.networkView(network));
  });

  app.post("/v1/networks/:id/ca-rotations", async (c) => {
    const caller = await authenticateUser(rt, c, "networks:write", { mfa: true });
    const network = await networkOfCaller(rt, caller.org, c.req.param("id"));
    const body = await readJsonBody(c, RotateCaBody);
    const lifetimeS = parseDuration(body.caLifetime ?? "87600h");
    const sealed = await makeSealedCa(rt, {
      org: network.org,
      networkId: network.id,
      name: network.name,
      curve: network.curve,
      certVersion: network.certVersion,
      lifetimeS,
      cidrs: network.cidrs,
      groups: network.groups,
      audit: { traceId: caller.traceId, actor: caller.actor },
      action: "ca.rotate",
    });
    await rt.store.rotateCa({
      networkId: network.id,
      ca: sealed.ca,
      retirePrevious: body.retirePrevious,
      audit: sealed.audit,
    });
    return c.json(await rt.store.networkView(network), 201);
  });
}
