/**
 * Admin and automation commands of the `keyhole` CLI: networks, hosts, direct signing and audit.
 * Each one is a thin call to the API through KeyholeClient; `--json` prints the API's answer as is.
 */
import { readFile } from "node:fs/promises";
import { type ParseArgsConfig, parseArgs } from "node:util";
import type {
  AuditRowView,
  HostView,
  NetworkView,
  RegisterHostResponse,
  SignResponse,
} from "../../core/contract/index.ts";
import { KeyholeClient, reportError } from "../client.ts";

type Options = NonNullable<ParseArgsConfig["options"]>;

const COMMON = {
  json: { type: "boolean", default: false },
  api: { type: "string" },
  token: { type: "string" },
  help: { type: "boolean", short: "h", default: false },
} as const satisfies Options;

function parse<O extends Options>(argv: string[], options: O) {
  return parseArgs({
    args: argv,
    options: { ...COMMON, ...options },
    allowPositionals: true,
    strict: true,
  });
}

function client(values: { api?: string | undefined; token?: string | undefined }): KeyholeClient {
  return new KeyholeClient({
    ...(values.api ? { api: values.api } : {}),
    ...(values.token ? { token: values.token } : {}),
  });
}

function list(value: string | undefined): string[] {
  return value
    ? value
        .split(",")
        .map((s) => s.trim())
        .filter(Boolean)
    : [];
}

function print(json: boolean, value: unknown, human: () => string): void {
  process.stdout.write(json ? `${JSON.stringify(value, null, 2)}\n` : `${human()}\n`);
}

function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length))) ?? [];
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i] ?? 0))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

function describeNetwork(n: NetworkView): string {
  const active = n.cas.find((c) => c.state === "active");
  return [
    `network ${n.name} (${n.id})`,
    `  org ${n.org}, cidrs ${n.cidrs.join(", ")}, curve ${n.curve}, certificate v${n.certVersion}`,
    `  groups ${n.groups ? n.groups.join(", ") : "(unconstrained)"}`,
    `  active CA ${active?.fingerprint ?? "-"} until ${active?.notAfter ?? "-"}; ${n.cas.length} CA(s) in the bundle`,
  ].join("\n");
}

/** Every overlay address of a host; a signer older than dual stack sends only `ip`. */
function hostAddressesText(h: HostView): string {
  const ips: string[] | undefined = h.ips;
  return ips && ips.length > 0 ? ips.join(", ") : h.ip;
}

function describeHost(h: HostView): string {
  const cert = h.certificates.at(-1);
  return [
    `host ${h.name} (${h.id}) ${h.state}${h.lighthouse ? ", lighthouse" : ""}`,
    `  ip ${hostAddressesText(h)}, groups ${h.groups.join(", ") || "-"}${h.staticAddrs.length ? `, underlay ${h.staticAddrs.join(", ")}` : ""}`,
    cert
      ? `  certificate ${cert.fingerprint} until ${cert.notAfter}${cert.revoked ? " (revoked)" : ""}`
      : "  no certificate yet",
  ].join("\n");
}

export async function networkCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  try {
    if (sub === "create") {
      const { values, positionals } = parse(rest, {
        name: { type: "string" },
        cidrs: { type: "string" },
        curve: { type: "string", default: "25519" },
        "cert-version": { type: "string", default: "2" },
        "ca-lifetime": { type: "string", default: "87600h" },
        groups: { type: "string" },
      });
      const name = values.name ?? positionals[0];
      if (!name || !values.cidrs) {
        throw new Error(
          "usage: keyhole network create --name NAME --cidrs 10.1.0.0/16[,fd00:1::/64] [--curve 25519|P256] [--cert-version 1|2] [--groups a,b]",
        );
      }
      const body = {
        name,
        cidrs: list(values.cidrs),
        curve: values.curve,
        certVersion: Number(values["cert-version"]),
        caLifetime: values["ca-lifetime"],
        ...(values.groups ? { groups: list(values.groups) } : {}),
      };
      const n = await client(values).request<NetworkView>("POST", "/v1/networks", body);
      print(values.json, n, () => describeNetwork(n));
      return 0;
    }
    if (sub === "list") {
      const { values } = parse(rest, {});
      const res = await client(values).request<{ networks: NetworkView[] }>("GET", "/v1/networks");
      print(values.json, res, () =>
        table([
          ["ID", "NAME", "CIDRS", "CURVE", "V"],
          ...res.networks.map((n) => [
            n.id,
            n.name,
            n.cidrs.join(","),
            n.curve,
            String(n.certVersion),
          ]),
        ]),
      );
      return 0;
    }
    if (sub === "show" || sub === "rotate-ca") {
      const { values, positionals } = parse(rest, {
        "retire-previous": { type: "boolean", default: false },
      });
      const id = positionals[0];
      if (!id) throw new Error(`usage: keyhole network ${sub} NETWORK_ID`);
      const n =
        sub === "show"
          ? await client(values).request<NetworkView>(
              "GET",
              `/v1/networks/${encodeURIComponent(id)}`,
            )
          : await client(values).request<NetworkView>(
              "POST",
              `/v1/networks/${encodeURIComponent(id)}/ca-rotations`,
              {
                retirePrevious: values["retire-previous"],
              },
            );
      print(values.json, n, () => `${describeNetwork(n)}\n\n${n.caBundle}`);
      return 0;
    }
    throw new Error("usage: keyhole network create|list|show|rotate-ca ...");
  } catch (e) {
    return reportError(e);
  }
}

export async function hostCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  try {
    if (sub === "add") {
      const { values, positionals } = parse(rest, {
        network: { type: "string" },
        name: { type: "string" },
        ip: { type: "string" },
        groups: { type: "string" },
        lighthouse: { type: "boolean", default: false },
        "static-addrs": { type: "string" },
        "code-ttl": { type: "string" },
        "cert-lifetime": { type: "string" },
      });
      const name = values.name ?? positionals[0];
      if (!values.network || !name) {
        throw new Error(
          "usage: keyhole host add --network NETWORK_ID --name NAME [--ip 10.1.0.5] [--groups a,b] [--lighthouse --static-addrs 192.0.2.1:4242]",
        );
      }
      const body = {
        name,
        groups: list(values.groups),
        lighthouse: values.lighthouse,
        staticAddrs: list(values["static-addrs"]),
        ...(values.ip ? { ip: values.ip } : {}),
        ...(values["code-ttl"] ? { codeTtl: values["code-ttl"] } : {}),
        ...(values["cert-lifetime"] ? { certLifetime: values["cert-lifetime"] } : {}),
      };
      const api = client(values);
      const res = await api.request<RegisterHostResponse>(
        "POST",
        `/v1/networks/${encodeURIComponent(values.network)}/hosts`,
        body,
      );
      print(values.json, res, () =>
        [
          describeHost(res.host),
          "",
          `enrollment code (shown once, valid until ${res.codeExpiresAt}):`,
          `  ${res.enrollmentCode}`,
          "",
          "on the host:",
          `  sh scripts/keyhole-enroll.sh --api ${api.api} --code ${res.enrollmentCode} --dir /etc/nebula`,
        ].join("\n"),
      );
      return 0;
    }
    if (sub === "list") {
      const { values } = parse(rest, { network: { type: "string" } });
      if (!values.network) throw new Error("usage: keyhole host list --network NETWORK_ID");
      const res = await client(values).request<{ hosts: HostView[] }>(
        "GET",
        `/v1/networks/${encodeURIComponent(values.network)}/hosts`,
      );
      print(values.json, res, () =>
        table([
          ["ID", "NAME", "IP", "STATE", "GROUPS"],
          ...res.hosts.map((h) => [
            h.id,
            h.name,
            hostAddressesText(h),
            h.state,
            h.groups.join(","),
          ]),
        ]),
      );
      return 0;
    }
    if (sub === "show" || sub === "block") {
      const { values, positionals } = parse(rest, {});
      const id = positionals[0];
      if (!id) throw new Error(`usage: keyhole host ${sub} HOST_ID`);
      const path = `/v1/hosts/${encodeURIComponent(id)}${sub === "block" ? "/block" : ""}`;
      const h = await client(values).request<HostView>(
        sub === "block" ? "POST" : "GET",
        path,
        sub === "block" ? {} : undefined,
      );
      print(values.json, h, () => describeHost(h));
      return 0;
    }
    throw new Error("usage: keyhole host add|list|show|block ...");
  } catch (e) {
    return reportError(e);
  }
}

export async function signCommand(argv: string[]): Promise<number> {
  try {
    const { values } = parse(argv, {
      network: { type: "string" },
      "in-pub": { type: "string" },
      name: { type: "string" },
      networks: { type: "string" },
      groups: { type: "string" },
      "unsafe-networks": { type: "string" },
      duration: { type: "string" },
    });
    if (!values.network || !values["in-pub"] || !values.name || !values.networks) {
      throw new Error(
        "usage: keyhole sign --network NETWORK_ID --in-pub host.pub --name NAME --networks 10.1.0.9/16 [--groups a,b] [--duration 720h]",
      );
    }
    const body = {
      publicKey: await readFile(values["in-pub"], "utf8"),
      name: values.name,
      networks: list(values.networks),
      groups: list(values.groups),
      unsafeNetworks: list(values["unsafe-networks"]),
      ...(values.duration ? { duration: values.duration } : {}),
    };
    const res = await client(values).request<SignResponse>(
      "POST",
      `/v1/networks/${encodeURIComponent(values.network)}/sign`,
      body,
    );
    print(values.json, res, () => res.certificate.trimEnd());
    return 0;
  } catch (e) {
    return reportError(e);
  }
}

export async function auditCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  try {
    if (sub === "list") {
      const { values } = parse(rest, {
        network: { type: "string" },
        trace: { type: "string" },
        since: { type: "string" },
        limit: { type: "string" },
      });
      const q = new URLSearchParams();
      if (values.network) q.set("networkId", values.network);
      if (values.trace) q.set("traceId", values.trace);
      if (values.since) q.set("since", values.since);
      if (values.limit) q.set("limit", values.limit);
      const res = await client(values).request<{ rows: AuditRowView[] }>(
        "GET",
        `/v1/audit${q.size ? `?${q}` : ""}`,
      );
      print(values.json, res, () =>
        table([
          ["SEQ", "AT", "ACTION", "OUTCOME", "ACTOR", "REGION", "KMS REQUESTS", "TRACE"],
          ...res.rows.map((r) => [
            String(r.seq),
            r.at,
            r.action,
            r.outcome,
            r.actor,
            r.region ?? "-",
            String(r.kmsRequestIds.length),
            r.traceId,
          ]),
        ]),
      );
      return 0;
    }
    if (sub === "verify") {
      const { values } = parse(rest, {});
      const res = await client(values).request<{ ok: boolean; rows: number; firstBadSeq?: number }>(
        "GET",
        "/v1/audit/verify",
      );
      print(values.json, res, () =>
        res.ok
          ? `audit chain intact: ${res.rows} rows verified`
          : `AUDIT CHAIN BROKEN at row ${res.firstBadSeq} (${res.rows} rows checked)`,
      );
      return res.ok ? 0 : 1;
    }
    throw new Error(
      "usage: keyhole audit list [--network ID] [--trace TRACE_ID] | keyhole audit verify",
    );
  } catch (e) {
    return reportError(e);
  }
}
