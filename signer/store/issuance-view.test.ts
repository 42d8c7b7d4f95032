// The per-network issuance view (active CA, CA bundle, lighthouses, blocklist) kept in memory by
// each store: kept while the network is unchanged, read again after every change that moves the
// network's revision (CA rotation, a lighthouse registered, a host blocked, a reused token), also
// when the change was made by another signer on the same database, and time-dependent parts
// computed on every call.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { openDatabase } from "../../db/client.ts";
import { createSignerStore, type SignerStoreHandle } from "./index.ts";
import {
  auditEvent,
  certFor,
  hostInput,
  networkInput,
  newCa,
  openTestStore,
  STATEMENT_MODES,
  type TestStore,
} from "./testing.ts";
import type { NetworkRecord, RegisterHostInput, SignerStore } from "./types.ts";

describe.each(STATEMENT_MODES)("issuance view, statements %s", (mode) => {
  let t: TestStore;
  let store: SignerStore;
  let other: SignerStoreHandle;
  let net: NetworkRecord;

  beforeEach(async () => {
    t = await openTestStore({ statements: mode });
    store = t.store;
    // A second signer on the same database, with a view cache of its own.
    other = createSignerStore(await openDatabase({ url: t.url }), { clock: () => t.clock.now });
    net = await store.createNetwork(networkInput("org-a", "n", ["10.5.0.0/16"], t.clock.now));
  });
  afterEach(async () => {
    await other.close();
    await t.cleanup();
  });

  /** The network as a credential check reads it: with its current revision. */
  async function fresh(s: SignerStore = store): Promise<NetworkRecord> {
    const n = await s.getNetwork(net.id);
    if (!n) throw new Error("network gone");
    return n;
  }

  async function enroll(name: string, extra: Partial<RegisterHostInput> = {}) {
    const reg = await store.registerHost(hostInput(net.id, name, extra));
    const ca = (await store.issuanceView(await fresh())).activeCa;
    const cert = certFor(net.id, ca.id, reg.host.id, t.clock.now);
    const res = await store.recordIssuance({
      certificate: cert,
      credential: { kind: "enrollment_code", code: reg.enrollmentCode },
      audit: [auditEvent("org-a", "cert.sign")],
    });
    if (res.replayed || !res.hostToken) throw new Error("not issued");
    return { host: reg.host, token: res.hostToken, fingerprint: cert.fingerprint };
  }

  it("is kept while the network is unchanged: registrations and issuances leave the revision alone", async () => {
    const first = await store.issuanceView(await fresh());
    const revision = (await fresh()).revision;
    await enroll("a");
    await enroll("b");
    expect((await fresh()).revision).toBe(revision);
    const again = await store.issuanceView(await fresh());
    // The same record, not read again.
    expect(again.activeCa).toBe(first.activeCa);
    expect(again.caBundle()).toBe(await store.caBundle(net.id));
    expect(again.blocklist()).toEqual([]);
  });

  it("follows a CA rotation: the new CA signs and both are in the bundle", async () => {
    const before = await store.issuanceView(await fresh());
    const rotated = await store.rotateCa({
      networkId: net.id,
      ca: newCa(t.clock.now),
      retirePrevious: false,
      audit: [auditEvent("org-a", "ca.rotate")],
    });
    const after = await store.issuanceView(await fresh());
    expect(after.activeCa.id).toBe(rotated.id);
    expect(after.activeCa.sealedKeys).toHaveLength(2);
    expect(after.caBundle()).toContain(rotated.certificate.trim());
    expect(after.caBundle()).toContain(before.activeCa.certificate.trim());
    expect(after.caBundle()).toBe(await store.caBundle(net.id));
  });

  it("follows a lighthouse registered and a host blocked", async () => {
    await store.issuanceView(await fresh());
    const lighthouse = await store.registerHost(
      hostInput(net.id, "lh", { lighthouse: true, staticAddrs: ["192.0.2.1:4242"] }),
    );
    const withLighthouse = await store.issuanceView(await fresh());
    expect(withLighthouse.lighthouses.map((h) => h.id)).toEqual([lighthouse.host.id]);

    const victim = await enroll("victim");
    await store.blockHost(victim.host.id, [auditEvent("org-a", "host.block")]);
    const blocked = await store.issuanceView(await fresh());
    expect(blocked.blocklist()).toEqual([victim.fingerprint]);
    expect(blocked.blocklist()).toEqual(await store.blocklist(net.id));

    await store.blockHost(lighthouse.host.id, [auditEvent("org-a", "host.block")]);
    const lighthouseBlocked = await store.issuanceView(await fresh());
    expect(lighthouseBlocked.lighthouses.map((h) => h.state)).toEqual(["blocked"]);
  });

  it("follows a host blocked for presenting a rotated token again", async () => {
    const { host, token } = await enroll("reuse");
    const renewed = await store.recordIssuance({
      certificate: certFor(net.id, (await store.getActiveCa(net.id)).id, host.id, t.clock.now),
      credential: { kind: "host_token", token },
      audit: [auditEvent("org-a", "cert.sign")],
    });
    if (renewed.replayed) throw new Error("unexpected replay");
    await store.issuanceView(await fresh());
    await store.authenticateHostToken(token, { traceId: "1".repeat(32) }).catch((e: unknown) => e);
    const view = await store.issuanceView(await fresh());
    expect(view.blocklist()).toEqual(await store.blocklist(net.id));
    expect(view.blocklist().length).toBe(2);
  });

  it("follows changes another signer made on the same database", async () => {
    const mine = await other.issuanceView(await fresh(other));
    const rotated = await store.rotateCa({
      networkId: net.id,
      ca: newCa(t.clock.now),
      retirePrevious: true,
      audit: [auditEvent("org-a", "ca.rotate")],
    });
    const victim = await enroll("victim");
    await store.blockHost(victim.host.id, [auditEvent("org-a", "host.block")]);
    const theirs = await other.issuanceView(await fresh(other));
    expect(theirs.activeCa.id).toBe(rotated.id);
    expect(theirs.activeCa.id).not.toBe(mine.activeCa.id);
    expect(theirs.caBundle()).not.toContain(mine.activeCa.certificate.trim());
    expect(theirs.blocklist()).toEqual([victim.fingerprint]);
  });

  it("drops expired revocations and CAs as time passes, without a change to the network", async () => {
    const victim = await enroll("victim");
    await store.blockHost(victim.host.id, [auditEvent("org-a", "host.block")]);
    const view = await store.issuanceView(await fresh());
    expect(view.blocklist()).toEqual([victim.fingerprint]);
    t.clock.advance(31 * 86400); // past the revoked certificate's end (30 days)
    const later = await store.issuanceView(await fresh());
    expect(later.activeCa).toBe(view.activeCa);
    expect(later.blocklist()).toEqual([]);
    expect(later.blocklist()).toEqual(await store.blocklist(net.id));
    t.clock.advance(400 * 86400); // past the CA's end
    expect(later.caBundle()).toBe("");
  });
});
