// Dual stack over real libSQL files: one address per network CIDR through the store, a database made
// by the first migration only upgraded with host_addresses backfilled (keys computed in SQL equal the
// allocator's), and a real enrollment through the signer app issuing a certificate with both networks.
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "@libsql/client";
import { drizzle } from "drizzle-orm/libsql";
import { migrate } from "drizzle-orm/libsql/migrator";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { parseCertificatesPem } from "../../core/cert/index.ts";
import { formatCidr } from "../../core/cert/ip.ts";
import { isKeyholeError } from "../../core/errors.ts";
import { MIGRATIONS_FOLDER } from "../../db/client.ts";
import { hostPublicKeyPem, startTestSigner, type TestSigner } from "../testing.ts";
import { keyOfAddress } from "./addresses.ts";
import { openSignerStore } from "./index.ts";
import { auditEvent, networkInput, openTestStore, type TestStore } from "./testing.ts";
import type { RegisterHostInput } from "./types.ts";

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (isKeyholeError(e)) return e.code;
    throw e;
  }
  return "no error";
}

function hostInput(networkId: string, name: string, extra: Partial<RegisterHostInput> = {}) {
  return {
    networkId,
    name,
    groups: [],
    lighthouse: false,
    staticAddrs: [],
    certLifetimeS: 86400,
    codeTtlS: 3600,
    audit: [auditEvent("org-a", "host.register")],
    ...extra,
  };
}

describe("dual-stack store", () => {
  let t: TestStore;
  afterEach(async () => {
    await t?.cleanup();
  });

  it("gives each host one address per CIDR; explicit v6, taken, outside and full", async () => {
    t = await openTestStore();
    const { store } = t;
    const net = await store.createNetwork(
      networkInput("org-a", "dual", ["10.77.0.0/16", "fd77::/64"], t.clock.now),
    );
    const a = await store.registerHost(hostInput(net.id, "a", { lighthouse: true }));
    expect(a.host.ips).toEqual(["10.77.0.1/16", "fd77::1/64"]);
    expect(a.host.ip).toBe("10.77.0.1/16");
    const b = await store.registerHost(hostInput(net.id, "b", { ip: "fd77::b" }));
    expect(b.host.ips).toEqual(["10.77.0.2/16", "fd77::b/64"]);
    const c = await store.registerHost(hostInput(net.id, "c"));
    expect(c.host.ips).toEqual(["10.77.0.3/16", "fd77::2/64"]);
    expect(await codeOf(store.registerHost(hostInput(net.id, "d", { ip: "fd77::B/64" })))).toBe(
      "ip_taken",
    );
    expect(await codeOf(store.registerHost(hostInput(net.id, "d", { ip: "10.77.0.3" })))).toBe(
      "ip_taken",
    );
    expect(await codeOf(store.registerHost(hostInput(net.id, "d", { ip: "fd78::1" })))).toBe(
      "ip_outside_network",
    );
    // every read of a host carries all its addresses
    expect((await store.getHost(b.host.id))?.ips).toEqual(["10.77.0.2/16", "fd77::b/64"]);
    const listed = (await store.listHosts(net.id)).sort((x, y) => x.name.localeCompare(y.name));
    expect(listed.map((h) => h.ips)).toEqual([a.host.ips, b.host.ips, c.host.ips]);
    expect((await store.listLighthouses(net.id)).map((h) => h.name)).toEqual(["a"]);
    const cred = await store.authenticateEnrollmentCode(b.enrollmentCode);
    expect(cred.host.ips).toEqual(b.host.ips);
    expect((await store.hostView(b.host)).ips).toEqual(b.host.ips);

    const tiny = await store.createNetwork(
      networkInput("org-a", "tiny", ["10.8.0.0/30", "fd08::/127"], t.clock.now),
    );
    expect((await store.registerHost(hostInput(tiny.id, "t1"))).host.ips).toEqual([
      "10.8.0.1/30",
      "fd08::/127",
    ]);
    expect((await store.registerHost(hostInput(tiny.id, "t2"))).host.ips).toEqual([
      "10.8.0.2/30",
      "fd08::1/127",
    ]);
    const rows = await t.store.database.readClient.execute("SELECT count(*) AS n FROM hosts");
    expect(await codeOf(store.registerHost(hostInput(tiny.id, "t3")))).toBe("network_full");
    const after = await t.store.database.readClient.execute("SELECT count(*) AS n FROM hosts");
    expect(after.rows[0]?.n).toBe(rows.rows[0]?.n);
  });

  it("refuses a v1 network with IPv6 or several CIDRs (invalid_network), writing nothing", async () => {
    t = await openTestStore();
    for (const cidrs of [
      ["fd01::/64"],
      ["10.1.0.0/16", "fd01::/64"],
      ["10.1.0.0/16", "10.2.0.0/16"],
    ]) {
      const input = { ...networkInput("org-a", "v1", cidrs, t.clock.now), certVersion: 1 as const };
      expect(await codeOf(t.store.createNetwork(input)), cidrs.join(",")).toBe("invalid_network");
    }
    expect(await t.store.listNetworks("org-a")).toEqual([]);
  });
});

describe("migration of a database made by the first schema", () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it("backfills host_addresses from hosts.ip with the allocator's keys; allocation continues", async () => {
    const dir = mkdtempSync(join(tmpdir(), "keyhole-migrate-"));
    dirs.push(dir);
    // The first migration alone, as a database of the previous release has it.
    const first = join(dir, "migrations");
    mkdirSync(join(first, "meta"), { recursive: true });
    copyFileSync(join(MIGRATIONS_FOLDER, "0000_init.sql"), join(first, "0000_init.sql"));
    writeFileSync(
      join(first, "meta", "_journal.json"),
      JSON.stringify({
        version: "7",
        dialect: "sqlite",
        entries: [
          { idx: 0, version: "6", when: 1796413922657, tag: "0000_init", breakpoints: true },
        ],
      }),
    );
    const url = `file:${join(dir, "old.db")}`;
    const old = createClient({ url });
    await migrate(drizzle(old), { migrationsFolder: first });
    await old.execute(
      `INSERT INTO networks (id, org, name, cidrs, curve, cert_version, groups)
       VALUES ('net_old', 'org-a', 'old', '["10.5.0.0/16","fd05::/16"]', '25519', 2, NULL)`,
    );
    // The previous allocator gave each host one address; some in the IPv6 CIDR. Random IPv6 addresses
    // (with runs of zero groups, so "::" lands everywhere) check the SQL key against the JS one.
    const ips = ["10.5.0.1/16", "10.5.0.2/16", "10.5.0.4/16", "10.5.1.255/16", "fd05::1/16"];
    for (let i = 0; i < 300; i++) {
      const bytes = new Uint8Array(16);
      bytes[0] = 0xfd;
      bytes[1] = 0x05;
      for (let g = 1; g < 8; g++) {
        if (Math.random() < 0.5) continue;
        bytes[2 * g] = Math.random() < 0.5 ? 0 : Math.floor(Math.random() * 256);
        bytes[2 * g + 1] = Math.floor(Math.random() * 256);
      }
      const text = formatCidr({ family: 6, bytes, prefix: 16 });
      if (!ips.includes(text)) ips.push(text);
    }
    for (const [i, ip] of ips.entries()) {
      await old.execute({
        sql: `INSERT INTO hosts (id, network_id, name, ip, groups, lighthouse, static_addrs, state, cert_lifetime_s)
              VALUES (?, 'net_old', ?, ?, '[]', 0, '[]', 'pending', 86400)`,
        args: [`host_old${i}`, `old-${i}`, ip],
      });
    }
    old.close();

    const store = await openSignerStore({ url });
    try {
      const rows = await store.database.readClient.execute(
        "SELECT host_id, address, key, position FROM host_addresses ORDER BY host_id",
      );
      expect(rows.rows).toHaveLength(ips.length);
      const byHost = new Map(rows.rows.map((r) => [String(r.host_id), r]));
      for (const [i, ip] of ips.entries()) {
        const row = byHost.get(`host_old${i}`);
        expect(row?.address, ip).toBe(ip);
        expect(row?.key, ip).toBe(keyOfAddress(ip));
        expect(Number(row?.position)).toBe(0);
      }
      expect((await store.getHost("host_old0"))?.ips).toEqual(["10.5.0.1/16"]);
      // New hosts get one address per CIDR, the lowest free of each (gaps of the old data reused).
      const reg = await store.registerHost({ ...hostInput("net_old", "new-1"), audit: [] });
      expect(reg.host.ips).toEqual(["10.5.0.3/16", "fd05::2/16"]);
      const next = await store.registerHost({ ...hostInput("net_old", "new-2"), audit: [] });
      expect(next.host.ips[0]).toBe("10.5.0.5/16");
    } finally {
      await store.close();
    }
  });
});

describe("enrollment in a dual-stack network (signer app, real local custody)", () => {
  let s: TestSigner;
  let admin: string;
  beforeAll(async () => {
    s = await startTestSigner();
    admin = await s.token();
  });
  afterAll(async () => {
    await s?.close();
  });

  it("issues a certificate holding both networks, at enrollment and at renewal", async () => {
    const net = await s.call("POST", "/v1/networks", {
      token: admin,
      body: { name: "dual", cidrs: ["10.77.0.0/16", "fd77::/64"], certVersion: 2 },
    });
    expect(net.status, JSON.stringify(net.body)).toBe(201);
    const lh = await s.call("POST", `/v1/networks/${net.body.id}/hosts`, {
      token: admin,
      body: { name: "lh", lighthouse: true, staticAddrs: ["192.0.2.1:4242"] },
    });
    expect(lh.status, JSON.stringify(lh.body)).toBe(201);
    const reg = await s.call("POST", `/v1/networks/${net.body.id}/hosts`, {
      token: admin,
      body: { name: "web", ip: "fd77::80" },
    });
    expect(reg.status, JSON.stringify(reg.body)).toBe(201);
    expect(reg.body.host.ips).toEqual(["10.77.0.2/16", "fd77::80/64"]);
    expect(reg.body.host.ip).toBe("10.77.0.2/16");
    const enrolled = await s.call("POST", "/v1/enroll", {
      body: { code: reg.body.enrollmentCode, publicKey: await hostPublicKeyPem() },
    });
    expect(enrolled.status, JSON.stringify(enrolled.body)).toBe(201);
    const cert = parseCertificatesPem(enrolled.body.certificate)[0];
    expect(cert?.networks).toEqual(["10.77.0.2/16", "fd77::80/64"]);
    expect(enrolled.body.config.lighthouses).toEqual([
      { ip: "10.77.0.1", staticAddrs: ["192.0.2.1:4242"] },
    ]);
    const renewed = await s.call("POST", "/v1/renew", {
      token: enrolled.body.hostToken,
      body: {},
    });
    expect(renewed.status, JSON.stringify(renewed.body)).toBe(201);
    expect(parseCertificatesPem(renewed.body.certificate)[0]?.networks).toEqual([
      "10.77.0.2/16",
      "fd77::80/64",
    ]);
    const view = await s.call("GET", `/v1/hosts/${reg.body.host.id}`, { token: admin });
    expect(view.body.ips).toEqual(["10.77.0.2/16", "fd77::80/64"]);
  });

  it("refuses a v1 network with an IPv6 range or two ranges: invalid_network, no network made", async () => {
    for (const cidrs of [
      ["fd01::/64"],
      ["10.61.0.0/16", "fd61::/64"],
      ["10.61.0.0/16", "10.62.0.0/16"],
    ]) {
      const res = await s.call("POST", "/v1/networks", {
        token: admin,
        body: { name: `v1-${cidrs.length}-${cidrs[0]}`, cidrs, certVersion: 1 },
      });
      expect(res.status, JSON.stringify(res.body)).toBe(400);
      expect(res.body.error.code).toBe("invalid_network");
      expect(res.body.error.message).toMatch(/v1|version 1/);
    }
    const list = await s.call("GET", "/v1/networks", { token: admin });
    expect(list.body.networks.map((n: { name: string }) => n.name)).toEqual(["dual"]);
  });
});
