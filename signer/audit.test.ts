/** The operator's audit-chain check, through the route and through the function the CLI calls. */
import { createClient } from "@libsql/client";
import { afterAll, beforeAll, expect, it } from "vitest";
import { verifyAuditChainAt } from "./audit.ts";
import { hostPublicKeyPem, startTestSigner, type TestSigner } from "./testing.ts";

let s: TestSigner;
beforeAll(async () => {
  s = await startTestSigner();
});
afterAll(async () => {
  await s?.close();
});

it("verifies an intact chain, and finds a row edited behind the signer's back", async () => {
  const admin = await s.token();
  const net = await s.call("POST", "/v1/networks", {
    token: admin,
    body: { name: "audit", cidrs: ["10.90.0.0/16"] },
  });
  const reg = await s.call("POST", `/v1/networks/${net.body.id}/hosts`, {
    token: admin,
    body: { name: "h" },
  });
  const enrolled = await s.call("POST", "/v1/enroll", {
    body: { code: reg.body.enrollmentCode, publicKey: await hostPublicKeyPem() },
  });
  expect(enrolled.status).toBe(201);
  const ok = await s.call("GET", "/v1/audit/verify", { token: admin });
  expect(ok.body).toMatchObject({ ok: true });
  const rows = ok.body.rows as number;
  expect(await verifyAuditChainAt({ url: `file:${s.dbPath}` })).toMatchObject({ ok: true, rows });
  const forbidden = await s.call("GET", "/v1/audit/verify", {
    token: await s.token({ scope: "hosts:read" }),
  });
  expect(forbidden.body.error.code).toBe("insufficient_scope");

  const db = createClient({ url: `file:${s.dbPath}` });
  const victim = await db.execute(
    "select seq from audit_events where action = 'cert.sign' limit 1",
  );
  const seq = Number(victim.rows[0]?.seq);
  await db.execute({
    sql: "update audit_events set actor = 'someone-else' where seq = ?",
    args: [seq],
  });
  db.close();
  const broken = await s.call("GET", "/v1/audit/verify", { token: admin });
  expect(broken.body).toMatchObject({ ok: false, firstBadSeq: seq });
  expect(await verifyAuditChainAt({ url: `file:${s.dbPath}` })).toMatchObject({
    ok: false,
    firstBadSeq: seq,
  });
});
