/**
 * Development PKI for the edge-to-signer relay: a relay CA, the signer's server certificate, the edge's
 * client certificate, and (for tests of invariant 4) a foreign CA's client certificate and an expired
 * one. Made with the system's openssl (present on Debian); EC P-256 keys throughout. Never used for
 * Nebula certificates, which core/cert makes.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

export interface RelayPki {
  dir: string;
  caCert: string;
  caKey: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  foreignCaCert: string;
  foreignClientCert: string;
  foreignClientKey: string;
  expiredClientCert: string;
  expiredClientKey: string;
}

export interface RelayPkiOptions {
  /** Names the signer's server certificate is valid for (default 127.0.0.1, ::1, localhost). */
  serverNames?: string[];
  /** Validity of the CA and live certificates in days (default 825). */
  days?: number;
}

function paths(dir: string): RelayPki {
  const p = (name: string) => join(dir, name);
  return {
    dir,
    caCert: p("relay-ca.crt"),
    caKey: p("relay-ca.key"),
    serverCert: p("signer.crt"),
    serverKey: p("signer.key"),
    clientCert: p("edge-client.crt"),
    clientKey: p("edge-client.key"),
    foreignCaCert: p("foreign-ca.crt"),
    foreignClientCert: p("foreign-client.crt"),
    foreignClientKey: p("foreign-client.key"),
    expiredClientCert: p("expired-client.crt"),
    expiredClientKey: p("expired-client.key"),
  };
}

async function openssl(args: string[], cwd: string): Promise<void> {
  try {
    await run("openssl", args, { cwd });
  } catch (e) {
    const err = e as { stderr?: string; code?: string };
    if (err.code === "ENOENT") {
      throw new Error(
        "openssl is not installed: install it (apt-get install openssl) to make the relay PKI",
      );
    }
    throw new Error(
      `openssl ${args[0]} failed: ${(err.stderr ?? String(e)).trim().split("\n")[0]}`,
    );
  }
}

async function newKey(path: string, cwd: string): Promise<void> {
  await openssl(
    ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path],
    cwd,
  );
  await chmod(path, 0o600);
}

async function selfSignedCa(key: string, cert: string, subject: string, days: number, cwd: string) {
  await newKey(key, cwd);
  await openssl(
    [
      "req",
      "-x509",
      "-new",
      "-key",
      key,
      "-out",
      cert,
      "-days",
      String(days),
      "-subj",
      subject,
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
    ],
    cwd,
  );
}

/** Issues a leaf with `openssl ca`, which (unlike `x509 -req` in OpenSSL 3.0) takes explicit dates. */
async function issueLeaf(
  dir: string,
  ca: { cert: string; key: string },
  leaf: { key: string; cert: string; subject: string; ext: string; start: string; end: string },
): Promise<void> {
  await newKey(leaf.key, dir);
  const csr = `${leaf.cert}.csr`;
  await openssl(["req", "-new", "-key", leaf.key, "-out", csr, "-subj", leaf.subject], dir);
  const db = join(dir, ".ca-db");
  await mkdir(db, { recursive: true });
  const index = join(db, `${Date.now()}-${Math.random().toString(16).slice(2)}.txt`);
  await writeFile(index, "");
  const conf = join(db, "ca.cnf");
  await writeFile(
    conf,
    [
      "[ca]",
      "default_ca = relay",
      "[relay]",
      `database = ${index}`,
      `new_certs_dir = ${db}`,
      "default_md = sha256",
      "policy = any",
      "copy_extensions = none",
      "unique_subject = no",
      "rand_serial = yes",
      "[any]",
      "commonName = supplied",
      "[leaf]",
      leaf.ext,
      "",
    ].join("\n"),
  );
  await openssl(
    [
      "ca",
      "-batch",
      "-config",
      conf,
      "-cert",
      ca.cert,
      "-keyfile",
      ca.key,
      "-in",
      csr,
      "-out",
      leaf.cert,
      "-extensions",
      "leaf",
      "-startdate",
      leaf.start,
      "-enddate",
      leaf.end,
      "-notext",
    ],
    dir,
  );
  await rm(csr, { force: true });
}

function asn1Time(date: Date): string {
  return `${date.toISOString().replace(/[-:T]/g, "").slice(0, 14)}Z`;
}

function sanList(names: string[]): string {
  return names.map((n) => (/^[\d.]+$|:/.test(n) ? `IP:${n}` : `DNS:${n}`)).join(",");
}

/** Makes (or reuses, when complete) the relay PKI in `dir`. Private keys are written 0600. */
export async function makeRelayPki(dir: string, options: RelayPkiOptions = {}): Promise<RelayPki> {
  const pki = paths(dir);
  const all = Object.values(pki).filter((v) => v !== dir);
  if (all.every((f) => existsSync(f))) return pki;
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const days = options.days ?? 825;
  const names = options.serverNames ?? ["127.0.0.1", "::1", "localhost"];
  const now = new Date();
  const start = asn1Time(new Date(now.getTime() - 60_000));
  const end = asn1Time(new Date(now.getTime() + days * 86_400_000));
  const ca = { cert: pki.caCert, key: pki.caKey };

  await selfSignedCa(pki.caKey, pki.caCert, "/CN=Keyhole relay CA (development)", days, dir);
  await selfSignedCa(
    join(dir, "foreign-ca.key"),
    pki.foreignCaCert,
    "/CN=Not the relay CA",
    days,
    dir,
  );
  const serverExt = `basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=${sanList(names)}`;
  const clientExt =
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth";
  await issueLeaf(dir, ca, {
    key: pki.serverKey,
    cert: pki.serverCert,
    subject: "/CN=keyhole-signer",
    ext: serverExt,
    start,
    end,
  });
  await issueLeaf(dir, ca, {
    key: pki.clientKey,
    cert: pki.clientCert,
    subject: "/CN=keyhole-edge",
    ext: clientExt,
    start,
    end,
  });
  await issueLeaf(
    dir,
    { cert: pki.foreignCaCert, key: join(dir, "foreign-ca.key") },
    {
      key: pki.foreignClientKey,
      cert: pki.foreignClientCert,
      subject: "/CN=intruder",
      ext: clientExt,
      start,
      end,
    },
  );
  const longAgo = new Date(now.getTime() - 30 * 86_400_000);
  await issueLeaf(dir, ca, {
    key: pki.expiredClientKey,
    cert: pki.expiredClientCert,
    subject: "/CN=keyhole-edge-expired",
    ext: clientExt,
    start: asn1Time(longAgo),
    end: asn1Time(new Date(longAgo.getTime() + 86_400_000)),
  });
  return pki;
}
