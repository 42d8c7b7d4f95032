/**
 * The end-to-end proof: real Nebula through the real local stack. `startStack` runs the edge in
 * workerd (Miniflare), the signer under Bun behind mutual TLS with the local key custody and a libSQL
 * file, and the dev OIDC issuer. An admin creates a v2 network (IPv4 + IPv6) and a v1 network through
 * the HTTP API; every host enrolls with scripts/keyhole-enroll.sh in the root namespace (the API is
 * on 127.0.0.1), then real nebula (1.11 on v2, Debian's 1.6.1 on v1) runs the config.yml the script
 * wrote, inside the host's own network namespace. The hosts ping each other (IPv4 on both, IPv6 on
 * v2); a renewal swaps a certificate under a live tunnel; a blocked host is cut off once the others
 * renew; after a CA rotation a renewed host (new CA) is refused by a host that trusts only the old
 * CA, and reaches it once that host's bundle holds both CAs while it keeps its old-CA certificate.
 * Phase timings are printed at the end.
 */
import { execFile, execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { freePort } from "../cli/dev/moto.ts";
import { type RunningStack, startStack } from "../cli/stack.ts";
import { stackPaths } from "../cli/stack-state.ts";
import type { HostView, NetworkView, RegisterHostResponse } from "../core/contract/api.ts";
import {
  createUnderlay,
  type NebulaProcess,
  type NetnsHost,
  netnsCapability,
  ping,
  pingSteadily,
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
  REPO_ROOT,
  type Tool,
} from "./support/tools.ts";

const SCRIPT = resolve(REPO_ROOT, "scripts/keyhole-enroll.sh");
const ALL_SCOPES = ["networks:write", "hosts:write", "hosts:read", "certs:sign", "audit:read"];
/** The edge's default per-address limit (10/min) is for the internet; every host here is 127.0.0.1. */
const LOOPBACK_RATE = "1000/60";

/** One Nebula network of the test and the binaries its hosts run. */
interface NetSpec {
  key: "v2" | "v1";
  certVersion: 1 | 2;
  cidrs: string[];
  nebula: Tool;
  nebulaCert: Tool;
  hosts: readonly string[];
}

const NETS: readonly NetSpec[] = [
  {
    key: "v2",
    certVersion: 2,
    cidrs: ["10.71.0.0/24", "fd71::/64"],
    nebula: nebula111,
    nebulaCert: nebulaCert111,
    hosts: ["lh2", "a2", "b2", "c2"],
  },
  {
    key: "v1",
    certVersion: 1,
    cidrs: ["10.72.0.0/24"],
    nebula: nebula16,
    nebulaCert: nebulaCert16,
    hosts: ["lh1", "a1", "b1", "c1"],
  },
];

/** What nebula-cert 1.11 says about a certificate (independently of Keyhole's own decoder). */
interface PrintedCert {
  fingerprint: string;
  issuer: string;
  networks: string[];
}

function printCert(pem: string): PrintedCert {
  const out = execFileSync(nebulaCert111.path, ["print", "-json", "-path", "-"], {
    input: pem,
    encoding: "utf8",
  });
  const parsed = JSON.parse(out) as unknown;
  const first = (Array.isArray(parsed) ? parsed[0] : parsed) as {
    fingerprint: string;
    details: { issuer: string; networks?: string[]; ips?: string[] };
  };
  return {
    fingerprint: first.fingerprint,
    issuer: first.details.issuer,
    networks: first.details.networks ?? first.details.ips ?? [],
  };
}

interface ScriptRun {
  code: number;
  stdout: string;
  stderr: string;
}

function runScript(args: string[], env: Record<string, string>): Promise<ScriptRun> {
  return new Promise((done) => {
    execFile(
      "/bin/sh",
      [SCRIPT, ...args],
      {
        env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: tmpdir(), ...env },
        encoding: "utf8",
        timeout: 60_000,
      },
      (err, stdout, stderr) =>
        done({ code: err ? (typeof err.code === "number" ? err.code : -1) : 0, stdout, stderr }),
    );
  });
}

/** A host of the test: its namespace, its Keyhole record, its files and its nebula. */
interface E2eHost {
  name: string;
  net: NetSpec;
  ns: NetnsHost;
  dir: string;
  view: HostView;
  nebula: NebulaProcess;
}

describeWith(
  [netnsCapability, nebula111, nebulaCert111, nebula16, nebulaCert16],
  "Keyhole end to end: workerd edge + Bun signer (mTLS) + local custody + libSQL, enrolled by the script, tunnels by real nebula 1.11 and 1.6.1",
  () => {
    let dir = "";
    let stack: RunningStack | undefined;
    let underlay: Underlay | undefined;
    let token = "";
    const networks = {} as Record<NetSpec["key"], NetworkView>;
    const hosts = new Map<string, E2eHost>();
    const timings: [string, number][] = [];
    const secrets: string[] = [];
    const outputs: ScriptRun[] = [];

    const host = (name: string): E2eHost => {
      const h = hosts.get(name);
      if (!h) throw new Error(`no host ${name}`);
      return h;
    };
    const v4 = (name: string) => addressOf(host(name), 4);
    const v6 = (name: string) => addressOf(host(name), 6);
    function addressOf(h: E2eHost, family: 4 | 6): string {
      const nets = printCert(readFileSync(join(h.dir, "host.crt"), "utf8")).networks;
      const found = nets.find((n) => (family === 6) === n.includes(":"));
      if (!found) {
        throw new Error(
          `${h.name}'s certificate has no IPv${family} network (it holds ${nets.join(", ")})`,
        );
      }
      return found.split("/")[0] as string;
    }

    async function timed<T>(phase: string, body: () => Promise<T>): Promise<T> {
      const start = performance.now();
      let outcome = " (failed)";
      try {
        const result = await body();
        outcome = "";
        return result;
      } finally {
        timings.push([`${phase}${outcome}`, Math.round(performance.now() - start)]);
      }
    }

    async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
      const res = await fetch(`${stack?.api}${path}`, {
        method,
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      const text = await res.text();
      if (!res.ok) throw new Error(`${method} ${path}: HTTP ${res.status} ${text.slice(0, 300)}`);
      return JSON.parse(text) as T;
    }

    async function script(args: string[], net: NetSpec, env: Record<string, string> = {}) {
      const r = await runScript(args, { NEBULA_CERT: net.nebulaCert.path, ...env });
      outputs.push(r);
      return r;
    }

    /** `--renew --dir`; the script reads the blocklist and sends SIGHUP through nebula.pid. */
    async function renew(name: string): Promise<ScriptRun> {
      const h = host(name);
      const r = await script(["--renew", "--dir", h.dir], h.net);
      expect(r.code, `${name}: ${r.stderr}`).toBe(0);
      expect(r.stderr).toMatch(new RegExp(`nebula \\(pid ${h.nebula.pid}\\) reloaded its config`));
      secrets.push(readFileSync(join(h.dir, "host.token"), "utf8").trim());
      return r;
    }

    /** `--refresh --dir`: same certificate; blocklist and CA bundle fetched with the host token. */
    async function refresh(name: string): Promise<ScriptRun> {
      const h = host(name);
      const r = await script(["--refresh", "--dir", h.dir], h.net);
      expect(r.code, `${name}: ${r.stderr}`).toBe(0);
      expect(r.stderr).toMatch(new RegExp(`nebula \\(pid ${h.nebula.pid}\\) reloaded its config`));
      return r;
    }

    /** Ping until two one-second pings in a row get no reply; fails if it never stops answering. */
    async function expectCutOff(from: string, to: string, timeoutMs = 30_000): Promise<void> {
      const deadline = Date.now() + timeoutMs;
      let silentInARow = 0;
      while (silentInARow < 2) {
        const p = await ping(host(from).ns, v4(to), { count: 1, timeoutSec: 1 });
        silentInARow = p.received === 0 ? silentInARow + 1 : 0;
        if (Date.now() > deadline) {
          throw new Error(
            `${from} still reaches ${to} after ${timeoutMs} ms; ${to}'s nebula log:\n${host(to).nebula.logs().slice(-3000)}`,
          );
        }
      }
    }

    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), "keyhole-e2e-nebula-"));
      stack = await timed("start stack (PKI, issuer, Bun signer, workerd edge)", async () =>
        startStack({
          paths: stackPaths(join(dir, "data")),
          edgePort: await freePort(),
          signerPort: await freePort(),
          issuerPort: await freePort(),
          env: {
            ...process.env,
            KEYHOLE_RATE_ADDRESS: LOOPBACK_RATE,
            KEYHOLE_RATE_SUBJECT: LOOPBACK_RATE,
            KEYHOLE_RATE_NETWORK: LOOPBACK_RATE,
          },
          echoSignerLogs: false,
          log: () => undefined,
        }),
      );
      token = await stack.issuer.mint({ org: "e2e", scope: ALL_SCOPES, amr: ["pwd", "mfa"] });
      secrets.push(token);

      underlay = await timed("namespaces and underlay", async () => {
        const u = await createUnderlay(uniquePrefix("x"), { octet: 7 });
        for (const net of NETS) for (const name of net.hosts) await u.addHost(name);
        return u;
      });
      const nsOf = (name: string) => underlay?.hosts.find((h) => h.name === name) as NetnsHost;

      const registered = await timed("create networks, register hosts (API)", async () => {
        const out: { net: NetSpec; name: string; reg: RegisterHostResponse }[] = [];
        for (const net of NETS) {
          networks[net.key] = await api<NetworkView>("POST", "/v1/networks", {
            name: `e2e-${net.key}`,
            cidrs: net.cidrs,
            curve: "25519",
            certVersion: net.certVersion,
          });
          for (const name of net.hosts) {
            const lighthouse = name.startsWith("lh");
            const reg = await api<RegisterHostResponse>(
              "POST",
              `/v1/networks/${networks[net.key].id}/hosts`,
              {
                name,
                lighthouse,
                ...(lighthouse ? { staticAddrs: [`${nsOf(name).underlayIp}:4242`] } : {}),
              },
            );
            secrets.push(reg.enrollmentCode);
            out.push({ net, name, reg });
          }
        }
        return out;
      });

      const enrolled = await timed("enroll every host with keyhole-enroll.sh", async () => {
        const out: Omit<E2eHost, "nebula">[] = [];
        for (const { net, name, reg } of registered) {
          const hostDir = join(dir, name);
          const r = await script(
            ["--api", stack?.api ?? "", "--dir", hostDir, "--tun-dev", "kh1"],
            net,
            {
              KEYHOLE_ENROLL_CODE: reg.enrollmentCode,
            },
          );
          expect(r.code, `${name}: ${r.stderr}`).toBe(0);
          secrets.push(readFileSync(join(hostDir, "host.token"), "utf8").trim());
          out.push({ name, net, ns: nsOf(name), dir: hostDir, view: reg.host });
        }
        return out;
      });

      await timed("start nebula in every namespace (tun up)", async () => {
        for (const e of enrolled) {
          // The config.yml exactly as the script wrote it; nebula.pid lets --renew send SIGHUP.
          const nebula = startNebula(e.ns, {
            binary: e.net.nebula.path,
            configPath: join(e.dir, "config.yml"),
          });
          writeFileSync(join(e.dir, "nebula.pid"), `${nebula.pid}\n`);
          hosts.set(e.name, { ...e, nebula });
        }
        await Promise.all([...hosts.values()].map((h) => h.nebula.waitForTun(15_000)));
      });
    });

    afterAll(async () => {
      await underlay?.destroy();
      await stack?.stop();
      if (dir) rmSync(dir, { recursive: true, force: true });
      if (timings.length > 0) {
        const width = Math.max(...timings.map(([p]) => p.length));
        process.stdout.write(
          `\ne2e-nebula timings:\n${timings.map(([p, ms]) => `  ${p.padEnd(width)}  ${String(ms).padStart(6)} ms`).join("\n")}\n`,
        );
      }
    });

    it("enrolled certificates carry the registered addresses and chain to the network's CA", () => {
      for (const net of NETS) {
        const ca = networks[net.key].cas.find((c) => c.state === "active");
        for (const name of net.hosts) {
          const h = host(name);
          const cert = printCert(readFileSync(join(h.dir, "host.crt"), "utf8"));
          expect(cert.issuer, name).toBe(ca?.fingerprint);
          expect(cert.networks, name).toContain(h.view.ip);
          expect(readFileSync(join(h.dir, "ca.crt"), "utf8").trim()).toBe(
            networks[net.key].caBundle.trim(),
          );
        }
      }
      expect(readFileSync(join(host("lh2").dir, "config.yml"), "utf8")).toContain(
        "am_lighthouse: true",
      );
      expect(readFileSync(join(host("a1").dir, "config.yml"), "utf8")).toContain(
        `${host("lh1").ns.underlayIp}:4242`,
      );
    });

    it("v2 hosts (nebula 1.11) reach each other over IPv4", async () => {
      await timed("v2 IPv4 pings", async () => {
        for (const [from, to] of [
          ["a2", "b2"],
          ["b2", "a2"],
          ["c2", "a2"],
          ["a2", "lh2"],
        ] as const) {
          await waitForPing(host(from).ns, v4(to), 20_000);
        }
      });
    });

    it("v1 hosts (nebula 1.6.1) reach each other over IPv4", async () => {
      await timed("v1 IPv4 pings", async () => {
        for (const [from, to] of [
          ["a1", "b1"],
          ["b1", "a1"],
          ["a1", "lh1"],
        ] as const) {
          await waitForPing(host(from).ns, v4(to), 20_000);
        }
      });
    });

    it("v2 hosts reach each other over IPv6 (one overlay address per CIDR family)", async () => {
      await timed("v2 IPv6 pings", async () => {
        for (const [from, to] of [
          ["a2", "b2"],
          ["b2", "a2"],
        ] as const) {
          await waitForPing(host(from).ns, v6(to), 20_000);
        }
      });
    });

    for (const [name, peer] of [
      ["a2", "b2"],
      ["a1", "b1"],
    ] as const) {
      it(`--renew gives ${name} a new certificate under a live tunnel to ${peer}`, async () => {
        await waitForPing(host(name).ns, v4(peer), 20_000);
        const before = printCert(readFileSync(join(host(name).dir, "host.crt"), "utf8"));
        // A steady ping across the renewal: the tunnel must carry traffic before and after SIGHUP.
        const during = pingSteadily(host(peer).ns, v4(name), { count: 25, intervalSec: 0.2 });
        await new Promise((r) => setTimeout(r, 1000));
        await timed(`renew ${name} (script + SIGHUP)`, () => renew(name));
        const after = printCert(readFileSync(join(host(name).dir, "host.crt"), "utf8"));
        expect(after.fingerprint).not.toBe(before.fingerprint);
        expect(after.networks).toEqual(before.networks);
        const steady = await during;
        expect(steady.transmitted, steady.output).toBe(25);
        expect(steady.received, steady.output).toBe(25);
        await waitForPing(host(peer).ns, v4(name), 5_000);
        await waitForPing(host(name).ns, v4(peer), 5_000);
        // Keyhole's own record lists the new certificate.
        const view = await api<HostView>("GET", `/v1/hosts/${host(name).view.id}`);
        expect(view.certificates.map((c) => c.fingerprint)).toContain(after.fingerprint);
      });
    }

    for (const [blockedName, others, label] of [
      ["c2", ["lh2", "a2", "b2"], "nebula 1.11, v2"],
      ["c1", ["lh1", "a1", "b1"], "nebula 1.6.1, v1"],
    ] as const) {
      it(`a blocked host is cut off once the others renew (blocklist + SIGHUP; ${label}); the rest still talk`, async () => {
        const [, a, b] = others;
        await waitForPing(host(blockedName).ns, v4(a), 20_000);
        await waitForPing(host(blockedName).ns, v4(b), 20_000);
        const blocked = await api<HostView>("POST", `/v1/hosts/${host(blockedName).view.id}/block`);
        expect(blocked.state).toBe("blocked");
        const blockedFingerprint = printCert(
          readFileSync(join(host(blockedName).dir, "host.crt"), "utf8"),
        ).fingerprint;
        await timed(`renew ${others.join(", ")} after blocking ${blockedName}`, async () => {
          for (const name of others) {
            await renew(name);
            expect(readFileSync(join(host(name).dir, "blocklist"), "utf8")).toContain(
              blockedFingerprint,
            );
          }
        });
        await timed(`${blockedName} cut off from ${a}`, () => expectCutOff(blockedName, a));
        await timed(`${blockedName} cut off from ${b}`, () => expectCutOff(blockedName, b));
        const reverse = await ping(host(a).ns, v4(blockedName), { count: 2, timeoutSec: 1 });
        expect(reverse.received).toBe(0);
        await waitForPing(host(a).ns, v4(b), 10_000);
        await waitForPing(host(b).ns, v4(a), 10_000);
        await waitForPing(host(a).ns, v4(others[0]), 10_000);
        // The blocked host's renewal is refused with its stable code.
        const refused = await script(
          ["--renew", "--dir", host(blockedName).dir],
          host(blockedName).net,
        );
        expect(refused.code).toBe(3);
        expect(refused.stderr).toMatch(/HTTP 403 host_blocked/);
      });
    }

    /**
     * Ping `from` -> `to` once a second until `watched`'s nebula log (from `sinceChar` on) has a line
     * matching `pattern`: traffic is what makes nebula's connection manager look at a tunnel again
     * (and re-handshake when its local certificate changed).
     */
    async function pingUntilLogged(o: {
      from: string;
      to: string;
      watched: string;
      sinceChar: number;
      pattern: RegExp;
      what: string;
      timeoutMs?: number;
    }): Promise<string> {
      const deadline = Date.now() + (o.timeoutMs ?? 45_000);
      for (;;) {
        const line = host(o.watched).nebula.logs().slice(o.sinceChar).match(o.pattern)?.[0];
        if (line !== undefined) return line;
        if (Date.now() > deadline) {
          throw new Error(
            `${o.what}: no such line in ${o.watched}'s nebula log; it ends with:\n${host(o.watched).nebula.logs().slice(-3000)}\n${o.from}'s log ends with:\n${host(o.from).nebula.logs().slice(-2000)}`,
          );
        }
        await ping(host(o.from).ns, v4(o.to), { count: 1, timeoutSec: 1 });
        await new Promise((r) => setTimeout(r, 250));
      }
    }

    it("after a CA rotation a renewed host (new CA) reaches one that has not renewed (old CA) once that one trusts the new CA", async () => {
      const net = networks.v2;
      const oldCa = net.cas.find((c) => c.state === "active")?.fingerprint;
      const rotated = await timed("rotate the v2 CA (API, MFA)", () =>
        api<NetworkView>("POST", `/v1/networks/${net.id}/ca-rotations`, {}),
      );
      const newCa = rotated.cas.find((c) => c.state === "active")?.fingerprint;
      expect(newCa).toBeDefined();
      expect(newCa).not.toBe(oldCa);
      expect(rotated.cas.find((c) => c.fingerprint === oldCa)?.state).toBe("previous");

      // b2 does not renew: old-CA certificate, and a bundle that holds the old CA only.
      const b2Cert = readFileSync(join(host("b2").dir, "host.crt"), "utf8");
      expect(printCert(b2Cert).issuer).toBe(oldCa);
      const b2Bundle = readFileSync(join(host("b2").dir, "ca.crt"), "utf8");
      expect(b2Bundle.match(/BEGIN NEBULA CERTIFICATE/g)).toHaveLength(1);

      await timed("renew lh2 and a2 onto the new CA", async () => {
        for (const name of ["lh2", "a2"]) {
          await renew(name);
          const cert = printCert(readFileSync(join(host(name).dir, "host.crt"), "utf8"));
          expect(cert.issuer, name).toBe(newCa);
          // --renew rewrites ca.crt with the network's bundle: the renewed side trusts both CAs.
          const bundle = readFileSync(join(host(name).dir, "ca.crt"), "utf8");
          expect(bundle.match(/BEGIN NEBULA CERTIFICATE/g)).toHaveLength(2);
        }
      });
      const a2Cert = printCert(readFileSync(join(host("a2").dir, "host.crt"), "utf8"));

      // a2 re-handshakes with its new certificate ("local certificate is not current"); b2, which
      // trusts the old CA only, refuses it.
      const refusal = await timed("old-CA-only host refuses the new-CA certificate", () =>
        pingUntilLogged({
          from: "a2",
          to: "b2",
          watched: "b2",
          sinceChar: 0,
          pattern: new RegExp(
            `^(?=.*Failed to process handshake packet)(?=.*from=${host("a2").ns.underlayIp.replaceAll(".", "\\.")}:)(?=.*could not find ca for the certificate).*$`,
            "m",
          ),
          what: "b2 (old CA only) refusing a2's new certificate",
        }),
      );
      expect(refusal).toContain("verify cert");

      // b2 learns the new CA without renewing: `--refresh` fetches the blocklist and the CA bundle
      // with its host token, rewrites ca.crt and config.yml, and reloads nebula. Its certificate
      // stays the old-CA one.
      const sinceChar = host("b2").nebula.logs().length;
      const refreshed = await timed("refresh b2's CA bundle (script + SIGHUP)", () =>
        refresh("b2"),
      );
      expect(refreshed.stderr).toMatch(/2 trusted CA\(s\)/);
      const b2Trusts = readFileSync(join(host("b2").dir, "ca.crt"), "utf8");
      expect(b2Trusts.match(/BEGIN NEBULA CERTIFICATE/g)).toHaveLength(2);
      expect(b2Trusts.trim()).toBe(
        (await api<NetworkView>("GET", `/v1/networks/${net.id}`)).caBundle.trim(),
      );

      await timed("new-CA host reaches old-CA host", async () => {
        const accepted = await pingUntilLogged({
          from: "a2",
          to: "b2",
          watched: "b2",
          sinceChar,
          pattern: new RegExp(
            `^(?=.*Handshake message received)(?=.*fingerprint=${a2Cert.fingerprint}).*$`,
            "m",
          ),
          what: "b2 (both CAs) taking a handshake with a2's new certificate",
        });
        expect(accepted).toContain(`issuer=${newCa}`);
        await waitForPing(host("a2").ns, v4("b2"), 15_000);
        await waitForPing(host("b2").ns, v4("a2"), 15_000);
        await waitForPing(host("b2").ns, v4("lh2"), 15_000);
      });
      expect(readFileSync(join(host("b2").dir, "host.crt"), "utf8")).toBe(b2Cert);
    });

    it("never printed an enrollment code, a host token or the admin token", () => {
      expect(outputs.length).toBeGreaterThan(8);
      for (const r of outputs) {
        for (const secret of secrets) expect(r.stdout + r.stderr).not.toContain(secret);
      }
    });
  },
);
