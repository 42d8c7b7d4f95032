/**
 * `keyhole cert print`: every certificate in a PEM file, in the JSON that `nebula-cert print` (1.11)
 * writes: `-json` gives one compact array, otherwise each certificate is indented with tabs.
 */
import {
  certificateToPrintJson,
  type NebulaCertificate,
  parseCertificatesPem,
} from "../../core/cert/index.ts";
import { usageError } from "../args.ts";
import { defineSubcommand } from "./command.ts";
import { certCliError, readInput, StdioClaims } from "./io.ts";

const flags = {
  json: { kind: "bool", usage: "Optional: outputs certificates in json format" },
  "out-qr": {
    kind: "string",
    usage: "Not supported by keyhole cert (use nebula-cert print -out-qr)",
  },
  path: { kind: "string", usage: "Required: path to the certificate" },
} as const;

export const printCommand = defineSubcommand({
  summary: "print <flags>: prints details about a certificate",
  flags,
  async run(f, _given, io) {
    if (!f.path) throw usageError("-path is required");
    if (f["out-qr"]) {
      throw certCliError(
        "-out-qr is not supported: make the QR code with nebula-cert print -out-qr",
      );
    }
    new StdioClaims().claimInput("path", f.path);
    const pem = await readInput(io, "path", f.path, "cert");
    let certs: NebulaCertificate[];
    try {
      certs = parseCertificatesPem(pem);
    } catch (e) {
      throw certCliError(`error while unmarshaling cert: ${(e as Error).message}`, e);
    }
    if (certs.length === 0) {
      throw certCliError(
        "error while unmarshaling cert: input did not contain a valid PEM encoded block",
      );
    }
    const views = certs.map((c) => certificateToPrintJson(c));
    if (f.json) io.stdout(`${goJson(views)}\n`);
    else for (const view of views) io.stdout(`${goJson(view, "\t")}\n`);
  },
});

/**
 * JSON as Go's encoding/json writes a map: keys sorted, and <, >, &, U+2028, U+2029 escaped, so that
 * output compares byte for byte with nebula-cert's.
 */
export function goJson(value: unknown, indent?: string): string {
  return JSON.stringify(sortKeys(value), null, indent).replace(
    /[<>&\u2028\u2029]/g,
    (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value === null || typeof value !== "object") return value;
  const sorted: Record<string, unknown> = {};
  for (const key of Object.keys(value).sort())
    sorted[key] = sortKeys((value as Record<string, unknown>)[key]);
  return sorted;
}
