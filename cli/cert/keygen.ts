/**
 * `keyhole cert keygen`: a host key pair (X25519 or P-256 ECDH) as `nebula-cert keygen` makes it. The
 * public key goes to `keyhole cert sign -in-pub` or to enrollment; the private key stays on the host.
 * Like nebula-cert, existing files are replaced (both written mode 0600).
 */
import { generateHostKeyPair, privateKeyToPem, publicKeyToPem } from "../../core/cert/index.ts";
import { usageError } from "../args.ts";
import { defineSubcommand } from "./command.ts";
import { parseCurve } from "./details.ts";
import { StdioClaims, writeOutput } from "./io.ts";

const flags = {
  "out-pub": { kind: "string", usage: "Required: path to write the public key to" },
  "out-key": { kind: "string", usage: "Required: path to write the private key to" },
  curve: { kind: "string", usage: "ECDH Curve (25519, P256)", default: "25519" },
} as const;

export const keygenCommand = defineSubcommand({
  summary:
    "keygen <flags>: create a public/private key pair. the public key can be passed to `keyhole cert sign`",
  flags,
  async run(f, _given, io) {
    if (!f["out-key"]) throw usageError("-out-key is required");
    if (!f["out-pub"]) throw usageError("-out-pub is required");
    const curve = parseCurve(f.curve);
    const claims = new StdioClaims();
    claims.claimOutput("out-key", f["out-key"]);
    claims.claimOutput("out-pub", f["out-pub"]);
    const keys = await generateHostKeyPair(curve);
    try {
      await writeOutput(
        io,
        "out-key",
        f["out-key"],
        privateKeyToPem(curve, keys.privateKey, false),
        false,
      );
      await writeOutput(io, "out-pub", f["out-pub"], publicKeyToPem(curve, keys.publicKey), false);
    } finally {
      keys.privateKey.fill(0);
    }
  },
});
