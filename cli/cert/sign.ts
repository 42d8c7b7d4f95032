/**
 * `keyhole cert sign`: a host certificate signed by a CA key on disk (plain or encrypted), as
 * `nebula-cert sign` makes it: same flags and defaults (version of the CA, validity until one second
 * before the CA expires, out files named after -name), same refusals. The CA key is zeroed after use.
 */
import {
  type CaSigner,
  type Curve,
  certificateToPem,
  decryptPrivateKeyPem,
  generateHostKeyPair,
  isEncryptedPrivateKeyPem,
  type NebulaCertificate,
  parseCertificatesPem,
  parsePrivateKeyPem,
  parsePublicKeyPem,
  privateKeyToPem,
  signCertificate,
  signerFromPrivateKey,
} from "../../core/cert/index.ts";
import { splitList, usageError } from "../args.ts";
import { defineSubcommand } from "./command.ts";
import { nowSeconds, parseNetworkList, parseVersion } from "./details.ts";
import {
  type CertIo,
  certCliError,
  readInput,
  readPassphrase,
  refuseExisting,
  StdioClaims,
  writeOutput,
} from "./io.ts";

const flags = {
  version: {
    kind: "uint",
    usage:
      "Optional: version of the certificate format to use. The default is to match the version of the signing CA",
  },
  "ca-key": { kind: "string", usage: "Optional: path to the signing CA key", default: "ca.key" },
  "ca-crt": { kind: "string", usage: "Optional: path to the signing CA cert", default: "ca.crt" },
  name: { kind: "string", usage: "Required: name of the cert, usually a hostname" },
  networks: {
    kind: "string",
    usage:
      "Required: comma separated list of ip address and network in CIDR notation to assign to this cert",
  },
  "unsafe-networks": {
    kind: "string",
    usage:
      "Optional: comma separated list of ip address and network in CIDR notation. Unsafe networks this cert can route for",
  },
  duration: {
    kind: "duration",
    usage:
      'Optional: how long the cert should be valid for. The default is 1 second before the signing cert expires. Valid time units are seconds: "s", minutes: "m", hours: "h"',
  },
  "in-pub": {
    kind: "string",
    usage: "Optional (if out-key not set): path to read a previously generated public key",
  },
  "out-key": {
    kind: "string",
    usage: "Optional (if in-pub not set): path to write the private key to",
  },
  "out-crt": { kind: "string", usage: "Optional: path to write the certificate to" },
  "out-qr": {
    kind: "string",
    usage: "Not supported by keyhole cert (use nebula-cert print -out-qr)",
  },
  groups: { kind: "string", usage: "Optional: comma separated list of groups" },
  ip: { kind: "string", usage: "Deprecated, see -networks" },
  subnets: { kind: "string", usage: "Deprecated, see -unsafe-networks" },
} as const;

export const signCommand = defineSubcommand({
  summary: "sign <flags>: create and sign a certificate",
  flags,
  async run(f, _given, io) {
    if (!f["ca-key"]) throw usageError("-ca-key is required");
    if (!f["ca-crt"]) throw usageError("-ca-crt is required");
    if (!f.name) throw usageError("-name is required");
    if (f["in-pub"] && f["out-key"]) throw usageError("cannot set both -in-pub and -out-key");
    if (f["out-qr"]) {
      throw certCliError(
        "-out-qr is not supported: make the QR code with nebula-cert print -out-qr",
      );
    }
    const networksText = f.networks || f.ip;
    if (!networksText) throw usageError("-networks is required");
    const requestedVersion = parseVersion(f.version, true);
    const outKey = f["out-key"] || `${f.name}.key`;
    const outCrt = f["out-crt"] || `${f.name}.crt`;

    const claims = new StdioClaims();
    claims.claimInput("ca-key", f["ca-key"]);
    claims.claimInput("ca-crt", f["ca-crt"]);
    if (f["in-pub"]) claims.claimInput("in-pub", f["in-pub"]);
    if (!f["in-pub"]) claims.claimOutput("out-key", outKey);
    claims.claimOutput("out-crt", outCrt);

    const caKeyPem = await readInput(io, "ca-key", f["ca-key"], "ca-key");
    const caKey = await openCaKey(io, caKeyPem, claims.stdinClaimedBy);
    let hostPrivateKey: Uint8Array | undefined;
    try {
      const caCertPem = await readInput(io, "ca-crt", f["ca-crt"], "ca-crt");
      const ca = firstCertificate(caCertPem);
      if (ca.curve !== caKey.signer.curve || !sameBytes(ca.publicKey, caKey.signer.publicKey)) {
        throw certCliError("refusing to sign, root certificate does not match private key");
      }
      const now = nowSeconds();
      if (ca.notAfter.getTime() < now.getTime()) throw certCliError("ca certificate is expired");
      const version = requestedVersion === 0 ? ca.version : requestedVersion;
      const notAfter =
        f.duration > 0
          ? new Date(now.getTime() + f.duration * 1000)
          : new Date(ca.notAfter.getTime() - 1000);

      const networks = parseNetworkList(networksText, "networks");
      const unsafeNetworks = parseNetworkList(f["unsafe-networks"] || f.subnets, "unsafe-networks");
      const groups = splitList(f.groups);

      let publicKey: Uint8Array;
      if (f["in-pub"]) {
        publicKey = await readHostPublicKey(io, f["in-pub"], ca.curve);
      } else {
        const keys = await generateHostKeyPair(ca.curve);
        publicKey = keys.publicKey;
        hostPrivateKey = keys.privateKey;
      }

      await refuseExisting(outCrt, "cert");
      if (hostPrivateKey) await refuseExisting(outKey, "key");

      let networkList = networks.all;
      let unsafeList = unsafeNetworks.all;
      if (version === 1) {
        if (networks.v4.length !== 1) {
          throw usageError(
            "invalid -networks definition: v1 certificates can only have a single ipv4 address",
          );
        }
        if (networks.v6.length > 0) {
          throw usageError(
            "invalid -networks definition: v1 certificates can only contain ipv4 addresses",
          );
        }
        if (unsafeNetworks.v6.length > 0) {
          throw usageError(
            "invalid -unsafe-networks definition: v1 certificates can only contain ipv4 addresses",
          );
        }
      } else {
        // nebula-cert lists IPv4 before IPv6, each family in the order given.
        networkList = [...networks.v4, ...networks.v6];
        unsafeList = [...unsafeNetworks.v4, ...unsafeNetworks.v6];
      }

      let cert: NebulaCertificate;
      try {
        cert = await signCertificate(
          {
            version,
            name: f.name,
            networks: networkList,
            unsafeNetworks: unsafeList,
            groups,
            isCA: false,
            notBefore: now,
            notAfter,
            publicKey,
            curve: ca.curve,
          },
          ca,
          caKey.signer,
        );
      } catch (e) {
        throw certCliError(`error while signing: ${(e as Error).message}`, e);
      }
      if (hostPrivateKey) {
        const keyPem = privateKeyToPem(ca.curve, hostPrivateKey, false);
        await writeOutput(io, "out-key", outKey, keyPem, true);
      }
      await writeOutput(io, "out-crt", outCrt, certificateToPem(cert), true);
    } finally {
      caKey.privateKey.fill(0);
      hostPrivateKey?.fill(0);
    }
  },
});

async function readHostPublicKey(io: CertIo, path: string, caCurve: Curve): Promise<Uint8Array> {
  const pem = await readInput(io, "in-pub", path, "in-pub");
  let parsed: { curve: Curve; publicKey: Uint8Array };
  try {
    parsed = parsePublicKeyPem(pem);
  } catch (e) {
    throw certCliError(`error while parsing in-pub: ${(e as Error).message}`, e);
  }
  if (parsed.curve !== caCurve) throw certCliError("curve of in-pub does not match ca");
  return parsed.publicKey;
}

/**
 * A signer over the CA key, decrypting it first when it is encrypted. The caller zeroes `privateKey`
 * once it has signed (a signer may keep a reference to it).
 */
async function openCaKey(
  io: CertIo,
  pem: string,
  stdinClaimedBy: string,
): Promise<{ signer: CaSigner; privateKey: Uint8Array }> {
  let curve: Curve;
  let privateKey: Uint8Array;
  if (isEncryptedPrivateKeyPem(pem)) {
    const passphrase = await readPassphrase(io, {
      stdinClaimedBy,
      purpose: "for the encrypted -ca-key",
    });
    if (!passphrase) throw certCliError("cannot open encrypted ca-key without passphrase");
    try {
      ({ curve, privateKey } = await decryptPrivateKeyPem(pem, passphrase));
    } catch (e) {
      throw certCliError(`error while parsing encrypted ca-key: ${(e as Error).message}`, e);
    }
  } else {
    let parsed: { curve: Curve; privateKey: Uint8Array; isCA: boolean };
    try {
      parsed = parsePrivateKeyPem(pem);
    } catch (e) {
      throw certCliError(`error while parsing ca-key: ${(e as Error).message}`, e);
    }
    if (!parsed.isCA) {
      parsed.privateKey.fill(0);
      throw certCliError(
        "error while parsing ca-key: this is a host private key; give the CA's key (made by keyhole cert ca)",
      );
    }
    ({ curve, privateKey } = parsed);
  }
  try {
    return { signer: await signerFromPrivateKey(curve, privateKey), privateKey };
  } catch (e) {
    privateKey.fill(0);
    throw certCliError(`error while parsing ca-key: ${(e as Error).message}`, e);
  }
}

function firstCertificate(pem: string): NebulaCertificate {
  let certs: NebulaCertificate[];
  try {
    certs = parseCertificatesPem(pem);
  } catch (e) {
    throw certCliError(`error while parsing ca-crt: ${(e as Error).message}`, e);
  }
  const first = certs[0];
  if (!first) throw certCliError("error while parsing ca-crt: no certificate in the file");
  return first;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
