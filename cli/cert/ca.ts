/**
 * `keyhole cert ca`: a self-signed Nebula CA, as `nebula-cert ca` makes it (same flags, defaults and
 * files). The CA private key exists in this process only while it signs its own certificate, and is
 * written mode 0600, encrypted with Argon2id + AES-256-GCM under -encrypt.
 */
import {
  certificateToPem,
  DEFAULT_ARGON2,
  encryptPrivateKeyPem,
  generateCaKeyPair,
  privateKeyToPem,
  signCertificate,
  signerFromPrivateKey,
} from "../../core/cert/index.ts";
import { splitList, usageError } from "../args.ts";
import { defineSubcommand } from "./command.ts";
import {
  nowSeconds,
  parseCurve,
  parseNetworkList,
  parseVersion,
  refuseIpv6InV1,
} from "./details.ts";
import { certCliError, readPassphrase, refuseExisting, StdioClaims, writeOutput } from "./io.ts";

const UINT32_MAX = 0xffff_ffff;

const flags = {
  name: { kind: "string", usage: "Required: name of the certificate authority" },
  version: {
    kind: "uint",
    usage: "Optional: version of the certificate format to use",
    default: 2,
  },
  duration: {
    kind: "duration",
    usage:
      'Optional: amount of time the certificate should be valid for. Valid time units are seconds: "s", minutes: "m", hours: "h"',
    default: 8760 * 3600,
  },
  "out-key": {
    kind: "string",
    usage: "Optional: path to write the private key to",
    default: "ca.key",
  },
  "out-crt": {
    kind: "string",
    usage: "Optional: path to write the certificate to",
    default: "ca.crt",
  },
  "out-qr": {
    kind: "string",
    usage: "Not supported by keyhole cert (use nebula-cert print -out-qr)",
  },
  groups: {
    kind: "string",
    usage:
      "Optional: comma separated list of groups. This will limit which groups subordinate certs can use",
  },
  networks: {
    kind: "string",
    usage:
      "Optional: comma separated list of ip address and network in CIDR notation. This will limit which ip addresses and networks subordinate certs can use in networks",
  },
  "unsafe-networks": {
    kind: "string",
    usage:
      "Optional: comma separated list of ip address and network in CIDR notation. This will limit which ip addresses and networks subordinate certs can use in unsafe networks",
  },
  // Smaller than nebula-cert's default (2 GiB, 1 pass): Argon2 runs in JavaScript here, where 2 GiB
  // takes about a minute and that much memory on every open. nebula-cert reads keys made with these.
  "argon-memory": {
    kind: "uint",
    usage:
      "Optional: Argon2 memory parameter (in KiB) used for encrypted private key passphrase (nebula-cert's default is 2097152)",
    default: DEFAULT_ARGON2.memoryKiB,
  },
  "argon-parallelism": {
    kind: "uint",
    usage: "Optional: Argon2 parallelism parameter used for encrypted private key passphrase",
    default: DEFAULT_ARGON2.parallelism,
  },
  "argon-iterations": {
    kind: "uint",
    usage:
      "Optional: Argon2 iterations parameter used for encrypted private key passphrase (nebula-cert's default is 1)",
    default: DEFAULT_ARGON2.iterations,
  },
  encrypt: {
    kind: "bool",
    usage:
      "Optional: ask for a passphrase (KEYHOLE_CA_PASSPHRASE, the terminal, or the first line of stdin) and write out-key in an encrypted format",
  },
  curve: { kind: "string", usage: "EdDSA/ECDSA Curve (25519, P256)", default: "25519" },
  ips: { kind: "string", usage: "Deprecated, see -networks" },
  subnets: { kind: "string", usage: "Deprecated, see -unsafe-networks" },
} as const;

export const caCommand = defineSubcommand({
  summary: "ca <flags>: create a self signed certificate authority",
  flags,
  async run(f, _given, io) {
    if (!f.name) throw usageError("-name is required");
    if (!f["out-key"]) throw usageError("-out-key is required");
    if (!f["out-crt"]) throw usageError("-out-crt is required");
    if (f["out-qr"])
      throw certCliError(
        "-out-qr is not supported: make the QR code with nebula-cert print -out-qr",
      );
    const argon = f.encrypt ? argonParameters(f) : undefined;
    if (f.duration <= 0) throw usageError("-duration must be greater than 0");
    const groups = splitList(f.groups);
    const version = parseVersion(f.version, false) as 1 | 2;
    const networks = parseNetworkList(f.networks || f.ips, "networks");
    const unsafeNetworks = parseNetworkList(f["unsafe-networks"] || f.subnets, "unsafe-networks");
    if (version === 1) {
      refuseIpv6InV1(networks, "networks");
      refuseIpv6InV1(unsafeNetworks, "unsafe-networks");
    }
    const claims = new StdioClaims();
    claims.claimOutput("out-key", f["out-key"]);
    claims.claimOutput("out-crt", f["out-crt"]);
    const curve = parseCurve(f.curve);

    await refuseExisting(f["out-key"], "CA key");
    await refuseExisting(f["out-crt"], "CA cert");

    let passphrase = "";
    if (argon) {
      passphrase = await readPassphrase(io, { stdinClaimedBy: "", purpose: "for -encrypt" });
      if (!passphrase) {
        throw certCliError(
          "no passphrase specified, remove -encrypt flag to write out-key in plaintext",
        );
      }
    }

    const keys = await generateCaKeyPair(curve);
    try {
      const signer = await signerFromPrivateKey(curve, keys.privateKey);
      const notBefore = nowSeconds();
      const ca = await signCertificate(
        {
          version,
          name: f.name,
          networks: networks.all,
          unsafeNetworks: unsafeNetworks.all,
          groups,
          isCA: true,
          notBefore,
          notAfter: new Date(notBefore.getTime() + f.duration * 1000),
          publicKey: keys.publicKey,
          curve,
        },
        null,
        signer,
      );
      const keyPem = argon
        ? await encryptPrivateKeyPem(curve, keys.privateKey, passphrase, argon)
        : privateKeyToPem(curve, keys.privateKey, true);
      await writeOutput(io, "out-key", f["out-key"], keyPem, true);
      await writeOutput(io, "out-crt", f["out-crt"], certificateToPem(ca), true);
    } finally {
      keys.privateKey.fill(0);
    }
  },
});

function argonParameters(f: {
  "argon-memory": number;
  "argon-parallelism": number;
  "argon-iterations": number;
}): { memoryKiB: number; iterations: number; parallelism: number } {
  const memoryKiB = f["argon-memory"];
  const parallelism = f["argon-parallelism"];
  const iterations = f["argon-iterations"];
  if (memoryKiB <= 0 || memoryKiB > UINT32_MAX) {
    throw usageError(`-argon-memory must be greater than 0 and no more than ${UINT32_MAX} KiB`);
  }
  if (parallelism <= 0 || parallelism > 255) {
    throw usageError("-argon-parallelism must be greater than 0 and no more than 255");
  }
  if (iterations <= 0 || iterations > UINT32_MAX) {
    throw usageError(`-argon-iterations must be greater than 0 and no more than ${UINT32_MAX}`);
  }
  return { memoryKiB, iterations, parallelism };
}
