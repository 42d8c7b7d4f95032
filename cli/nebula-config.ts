/**
 * The nebula config.yml that scripts/keyhole-enroll.sh writes, built in TypeScript for `keyhole enroll`
 * and for tests that run real nebula daemons from certificates they made themselves. Keep the two in
 * step: the enrollment test checks that both write the same file for the same hints. The YAML is accepted by nebula
 * 1.6.1 and 1.11 alike (no keys that one of them refuses).
 */

export interface NebulaFirewallRule {
  port: "any" | number | string;
  proto: "any" | "tcp" | "udp" | "icmp";
  host?: "any" | string;
  /** Matches the remote's overlay address, e.g. the network's CIDR. */
  cidr?: string;
}

export interface NebulaConfigOptions {
  /** Paths of the PKI files (absolute: nebula resolves relative paths against its working folder). */
  caPath: string;
  certPath: string;
  keyPath: string;
  /** Overlay address (no prefix) => underlay "host:port" list. */
  staticHostMap?: Record<string, string[]>;
  isLighthouse?: boolean;
  /** Overlay addresses of the lighthouses (ignored on a lighthouse itself). */
  lighthouses?: string[];
  listenHost?: string;
  listenPort?: number;
  tunDev?: string;
  /** Certificate fingerprints nebula must refuse (`pki.blocklist`). */
  blocklist?: string[];
  /** The network's overlay CIDRs: inbound traffic of any kind is allowed from them. */
  overlayCidrs?: string[];
  /** Replace the default inbound rules (ICMP from any host, anything from `overlayCidrs`). */
  inbound?: NebulaFirewallRule[];
  logLevel?: "debug" | "info" | "warning" | "error";
}

/** Bare overlay address: "10.1.0.1/24" => "10.1.0.1". */
export function overlayAddress(ipWithPrefix: string): string {
  const slash = ipWithPrefix.indexOf("/");
  return slash === -1 ? ipWithPrefix : ipWithPrefix.slice(0, slash);
}

/** A YAML double-quoted scalar; JSON's string syntax is a subset of YAML's. */
function q(value: string): string {
  return JSON.stringify(value);
}

function ruleYaml(rule: NebulaFirewallRule): string {
  const lines = [
    `    - port: ${typeof rule.port === "number" ? rule.port : q(rule.port)}`,
    `      proto: ${q(rule.proto)}`,
  ];
  if (rule.host !== undefined) lines.push(`      host: ${q(rule.host)}`);
  if (rule.cidr !== undefined) lines.push(`      cidr: ${q(rule.cidr)}`);
  return lines.join("\n");
}

export function defaultInboundRules(overlayCidrs: string[]): NebulaFirewallRule[] {
  return [
    { port: "any", proto: "icmp", host: "any" },
    ...overlayCidrs.map((cidr): NebulaFirewallRule => ({ port: "any", proto: "any", cidr })),
  ];
}

export function nebulaConfigYaml(opts: NebulaConfigOptions): string {
  const isLighthouse = opts.isLighthouse ?? false;
  const lighthouses = isLighthouse ? [] : (opts.lighthouses ?? []).map(overlayAddress);
  const staticHostMap = Object.entries(opts.staticHostMap ?? {});
  const blocklist = opts.blocklist ?? [];
  const inbound = opts.inbound ?? defaultInboundRules(opts.overlayCidrs ?? []);
  const list = (items: string[], indent: string) =>
    items.length === 0 ? " []" : `\n${items.map((i) => `${indent}- ${q(i)}`).join("\n")}`;

  return `# nebula config written by Keyhole enrollment; regenerated on renewal.
pki:
  ca: ${q(opts.caPath)}
  cert: ${q(opts.certPath)}
  key: ${q(opts.keyPath)}
  # Drop tunnels whose certificate became invalid or blocklisted when the config is reloaded (SIGHUP).
  disconnect_invalid: true
  blocklist:${list(blocklist, "    ")}
static_host_map:${
    staticHostMap.length === 0
      ? " {}"
      : `\n${staticHostMap.map(([ip, addrs]) => `  ${q(overlayAddress(ip))}:${list(addrs, "    ")}`).join("\n")}`
  }
lighthouse:
  am_lighthouse: ${isLighthouse}
  interval: 60
  hosts:${list(lighthouses, "    ")}
listen:
  host: ${q(opts.listenHost ?? "0.0.0.0")}
  port: ${opts.listenPort ?? 4242}
punchy:
  punch: true
tun:
  disabled: false
  dev: ${q(opts.tunDev ?? "nebula1")}
  drop_local_broadcast: false
  drop_multicast: false
  tx_queue: 500
  mtu: 1300
logging:
  level: ${opts.logLevel ?? "info"}
  format: text
firewall:
  outbound:
${ruleYaml({ port: "any", proto: "any", host: "any" })}
  inbound:${inbound.length === 0 ? " []" : `\n${inbound.map(ruleYaml).join("\n")}`}
`;
}

/** The config for an enrolled host from the API's hints, as keyhole-enroll.sh writes it. */
export function configFromHints(
  hints: {
    isLighthouse: boolean;
    listenPort: number;
    lighthouses: { ip: string; staticAddrs: string[] }[];
    staticHostMap: Record<string, string[]>;
    blocklist: string[];
    network: { cidrs: string[] };
  },
  files: { caPath: string; certPath: string; keyPath: string },
  options: { tunDev?: string; listenPort?: number } = {},
): string {
  // static_host_map: the server's map, plus lighthouses' underlay addresses it does not already name.
  const staticHostMap: Record<string, string[]> = { ...hints.staticHostMap };
  for (const lh of hints.lighthouses) {
    const ip = overlayAddress(lh.ip);
    if (!(ip in staticHostMap) && lh.staticAddrs.length > 0) staticHostMap[ip] = lh.staticAddrs;
  }
  return nebulaConfigYaml({
    ...files,
    isLighthouse: hints.isLighthouse,
    lighthouses: hints.lighthouses.map((l) => l.ip),
    staticHostMap,
    listenPort: options.listenPort ?? hints.listenPort,
    tunDev: options.tunDev ?? "nebula1",
    blocklist: hints.blocklist,
    overlayCidrs: hints.network.cidrs,
  });
}
