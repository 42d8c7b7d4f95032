/**
 * Proves the tunnel harness with real parts only: certificates from the real nebula-cert, real nebula
 * daemons (1.11 with v2 IPv4+IPv6 certificates, Debian's 1.6.1 with v1 certificates) in three network
 * namespaces (a lighthouse and two hosts), real ping over the overlay, and revocation through
 * pki.blocklist + SIGHUP, which is how Keyhole's blocklist reaches running hosts.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { nebulaConfigYaml, overlayAddress } from "./support/nebula-config.ts";
import {
  createUnderlay,
  type NebulaProcess,
  type NetnsHost,
  netnsCapability,
  ping,
  startNebula,
  type Underlay,
  uniquePrefix,
  waitForPing,
} from "./support/netns.ts";
import {
  describeWith,
  nebula16,
  nebula111,
  nebulaCert16,
  nebulaCert111,
  type Tool,
} from "./support/tools.ts";

interface SuiteOptions {
  title: string;
  nebula: Tool;
  nebulaCert: Tool;
  certVersion: 1 | 2;
  /** Overlay networks of the lighthouse, a and b (IPv4 first, then IPv6 when present). */
  networks: Record<"lighthouse" | "a" | "b", string[]>;
  octet: number;
}

/** Fingerprint as nebula itself prints it (1.11 prints a JSON array, 1.6 one object). */
function fingerprintOf(nebulaCert: string, certPath: string): string {
  const printed = JSON.parse(
    execFileSync(nebulaCert, ["print", "-json", "-path", certPath], { encoding: "utf8" }),
  );
  const cert = Array.isArray(printed) ? printed[0] : printed;
  if (typeof cert?.fingerprint !== "string")
    throw new Error(`no fingerprint in nebula-cert print output`);
  return cert.fingerprint;
}

function tunnelSuite(o: SuiteOptions): void {
  describeWith([netnsCapability, o.nebula, o.nebulaCert], o.title, () => {
    const names = ["lighthouse", "a", "b"] as const;
    let dir = "";
    let underlay: Underlay | undefined;
    const hosts = {} as Record<(typeof names)[number], NetnsHost>;
    const daemons = {} as Record<(typeof names)[number], NebulaProcess>;
    const ips = (name: (typeof names)[number]) => o.networks[name].map(overlayAddress);
    const v4 = (name: (typeof names)[number]) => ips(name)[0] as string;

    const writeConfig = (name: (typeof names)[number], blocklist: string[]) => {
      const lh = hosts.lighthouse;
      writeFileSync(
        join(dir, name, "config.yml"),
        nebulaConfigYaml({
          caPath: join(dir, "ca.crt"),
          certPath: join(dir, name, "host.crt"),
          keyPath: join(dir, name, "host.key"),
          isLighthouse: name === "lighthouse",
          lighthouses: name === "lighthouse" ? [] : [v4("lighthouse")],
          staticHostMap: { [v4("lighthouse")]: [`${lh.underlayIp}:4242`] },
          listenPort: 4242,
          tunDev: "nebula1",
          blocklist,
          overlayCidrs: o.certVersion === 2 ? ["10.42.0.0/24", "fd42::/64"] : ["10.43.0.0/24"],
        }),
      );
    };

    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), "keyhole-netns-"));
      const cert = o.nebulaCert.path;
      const v = o.certVersion === 2 ? ["-version", "2"] : [];
      execFileSync(cert, [
        "ca",
        "-name",
        "harness",
        ...v,
        "-out-crt",
        join(dir, "ca.crt"),
        "-out-key",
        join(dir, "ca.key"),
      ]);
      underlay = await createUnderlay(uniquePrefix("h"), { octet: o.octet });
      for (const name of names) {
        hosts[name] = await underlay.addHost(name);
        const hostDir = join(dir, name);
        execFileSync("mkdir", ["-p", hostDir]);
        const ipFlag =
          o.certVersion === 2
            ? ["-networks", o.networks[name].join(",")]
            : ["-ip", o.networks[name].join(",")];
        execFileSync(cert, [
          "sign",
          ...v,
          "-name",
          name,
          ...ipFlag,
          "-ca-crt",
          join(dir, "ca.crt"),
          "-ca-key",
          join(dir, "ca.key"),
          "-out-crt",
          join(hostDir, "host.crt"),
          "-out-key",
          join(hostDir, "host.key"),
        ]);
      }
      for (const name of names) writeConfig(name, []);
      for (const name of names) {
        daemons[name] = startNebula(hosts[name], {
          binary: o.nebula.path,
          configPath: join(dir, name, "config.yml"),
        });
      }
      await Promise.all(names.map((n) => daemons[n].waitForTun()));
    });

    afterAll(async () => {
      await underlay?.destroy();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    it("hosts reach each other through the lighthouse over the overlay", async () => {
      for (const [from, to] of [
        ["a", "b"],
        ["b", "a"],
      ] as const) {
        for (const ip of ips(to)) {
          const r = await waitForPing(hosts[from], ip, 15_000);
          expect(r.received, `${from} -> ${to} ${ip}`).toBeGreaterThanOrEqual(1);
        }
      }
      // A burst after the handshake: no loss on a healthy tunnel.
      const burst = await ping(hosts.a, v4("b"), { count: 3, timeoutSec: 1 });
      expect(burst.received, burst.output).toBe(3);
      // The replies came through a nebula handshake (the underlay has no route to the overlay).
      expect(daemons.a.logs()).toMatch(/Handshake message (received|sent)/);
    });

    it("a blocklisted host loses its tunnels once the others reload their config", async () => {
      await waitForPing(hosts.b, v4("a"), 15_000);
      const fp = fingerprintOf(o.nebulaCert.path, join(dir, "b", "host.crt"));
      expect(fp).toMatch(/^[0-9a-f]{64}$/);
      writeConfig("a", [fp]);
      writeConfig("lighthouse", [fp]);
      daemons.a.sighup();
      daemons.lighthouse.sighup();

      // The tunnel is torn down on the connection manager's next check; poll until pings stop.
      const deadline = Date.now() + 25_000;
      let failuresInARow = 0;
      while (failuresInARow < 2) {
        const r = await ping(hosts.b, v4("a"), { count: 1, timeoutSec: 1 });
        failuresInARow = r.received === 0 ? failuresInARow + 1 : 0;
        if (Date.now() > deadline)
          throw new Error(
            `b still reaches a after blocklist + SIGHUP:\n${daemons.a.logs().slice(-3000)}`,
          );
      }
      for (const ip of ips("a"))
        expect((await ping(hosts.b, ip, { count: 2, timeoutSec: 1 })).received).toBe(0);
      for (const ip of ips("b"))
        expect((await ping(hosts.a, ip, { count: 2, timeoutSec: 1 })).received).toBe(0);
      // ...while a, which is not blocklisted, still reaches the lighthouse.
      await waitForPing(hosts.a, v4("lighthouse"), 10_000);
    });
  });
}

tunnelSuite({
  title: "netns harness: nebula 1.11, v2 certificates, IPv4 and IPv6 overlay",
  nebula: nebula111,
  nebulaCert: nebulaCert111,
  certVersion: 2,
  networks: {
    lighthouse: ["10.42.0.1/24", "fd42::1/64"],
    a: ["10.42.0.2/24", "fd42::2/64"],
    b: ["10.42.0.3/24", "fd42::3/64"],
  },
  octet: 1,
});

tunnelSuite({
  title: "netns harness: nebula 1.6.1, v1 certificates, IPv4 overlay",
  nebula: nebula16,
  nebulaCert: nebulaCert16,
  certVersion: 1,
  networks: { lighthouse: ["10.43.0.1/24"], a: ["10.43.0.2/24"], b: ["10.43.0.3/24"] },
  octet: 2,
});
