/**
 * `keyhole cert verify`: checks that each certificate in -crt is valid now and signed by a CA in -ca
 * (within its constraints), as `nebula-cert verify` does. Silent with status 0 when all pass.
 */
import { CaPool, type NebulaCertificate, parseCertificatesPem } from "../../core/cert/index.ts";
import { usageError } from "../args.ts";
import { defineSubcommand } from "./command.ts";
import { certCliError, readInput, StdioClaims } from "./io.ts";

const flags = {
  ca: { kind: "string", usage: "Required: path to a file containing one or more ca certificates" },
  crt: { kind: "string", usage: "Required: path to a file containing a single certificate" },
} as const;

export const verifyCommand = defineSubcommand({
  summary:
    "verify <flags>: verifies a certificate isn't expired and was signed by a trusted authority.",
  flags,
  async run(f, _given, io) {
    if (!f.ca) throw usageError("-ca is required");
    if (!f.crt) throw usageError("-crt is required");
    const claims = new StdioClaims();
    claims.claimInput("ca", f.ca);
    claims.claimInput("crt", f.crt);

    const caPem = await readInput(io, "ca", f.ca, "ca");
    let pool: CaPool;
    try {
      pool = CaPool.fromPem(caPem);
    } catch (e) {
      throw certCliError(`error while adding ca cert to pool: ${(e as Error).message}`, e);
    }
    const crtPem = await readInput(io, "crt", f.crt, "crt");
    let certs: NebulaCertificate[];
    try {
      certs = parseCertificatesPem(crtPem);
    } catch (e) {
      throw certCliError(`error while parsing crt: ${(e as Error).message}`, e);
    }
    if (certs.length === 0) throw certCliError(`no certificate in -crt ${f.crt}`);
    const failures: string[] = [];
    for (const cert of certs) {
      try {
        await pool.verify(cert);
      } catch (e) {
        failures.push(
          `error while verifying certificate v${cert.version} ${cert.name} with issuer ${cert.issuer}: ${(e as Error).message}`,
        );
      }
    }
    if (failures.length > 0) throw certCliError(failures.join("\n"));
  },
});
