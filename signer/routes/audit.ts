/** `GET /v1/audit` (the caller org's rows, filtered) and `GET /v1/audit/verify` (the hash chain), audit:read. */
import { AuditQuery } from "../../core/contract/api.ts";
import type { SignerApp } from "../app.ts";
import { checkAuditChain } from "../audit.ts";
import { authenticateUser } from "../auth.ts";
import { validate } from "../http.ts";
import type { SignerRuntime } from "../runtime.ts";

export function registerAuditRoutes(app: SignerApp, rt: SignerRuntime): void {
  app.get("/v1/audit", async (c) => {
    const caller = await authenticateUser(rt, c, "audit:read");
    const q = validate(AuditQuery, c.req.query());
    const rows = await rt.store.listAudit(caller.org, {
      networkId: q.networkId,
      traceId: q.traceId,
      since: q.since ? new Date(q.since) : undefined,
      until: q.until ? new Date(q.until) : undefined,
      limit: q.limit,
    });
    return c.json({ rows });
  });

  app.get("/v1/audit/verify", async (c) => {
    await authenticateUser(rt, c, "audit:read");
    return c.json(await checkAuditChain(rt.store));
  });
}
