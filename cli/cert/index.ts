/**
 * `keyhole cert`: a drop-in for nebula-cert 1.11 (ca, keygen, sign, print, verify) built on core/cert.
 * This file picks the mode, prints help, and turns failures into "Error: ..." on stderr and status 1,
 * as nebula-cert does; each mode lives in its own file.
 */
import { CertError } from "../../core/cert/errors.ts";
import { KeyholeError } from "../../core/errors.ts";
import { describeFlags, isUsageError, parseFlags } from "../args.ts";
import { caCommand } from "./ca.ts";
import type { CertSubcommand } from "./command.ts";
import { type CertIo, processIo } from "./io.ts";
import { keygenCommand } from "./keygen.ts";
import { printCommand } from "./print.ts";
import { signCommand } from "./sign.ts";
import { verifyCommand } from "./verify.ts";

const MODES: Record<string, CertSubcommand> = {
  ca: caCommand,
  keygen: keygenCommand,
  sign: signCommand,
  print: printCommand,
  verify: verifyCommand,
};

/** The nebula-cert release whose flags, files and output `keyhole cert` reproduces. */
export const NEBULA_CERT_COMPATIBLE = "1.11.0";

export async function certCommand(
  argv: readonly string[],
  io: CertIo = processIo(),
): Promise<number> {
  const [mode, ...rest] = argv;
  if (mode === undefined) {
    io.stderr(`Error: No mode was provided\n\n${overview()}`);
    return 1;
  }
  if (mode === "-h" || mode === "-help" || mode === "--help" || mode === "help") {
    io.stderr(overview());
    return 0;
  }
  if (mode === "-version" || mode === "--version") {
    io.stdout(`Version: ${NEBULA_CERT_COMPATIBLE} (keyhole cert)\n`);
    return 0;
  }
  const command = Object.hasOwn(MODES, mode) ? MODES[mode] : undefined;
  if (!command) {
    io.stderr(`Error: unknown mode: ${mode}\n\n${overview()}`);
    return 1;
  }
  try {
    const parsed = parseFlags(rest, command.flags);
    if (parsed.help) {
      io.stderr(modeHelp(command));
      return 0;
    }
    if (parsed.rest.length > 0) {
      throw new KeyholeError("invalid_request", `unexpected argument after --: ${parsed.rest[0]}`, {
        usage: true,
      });
    }
    await command.run(parsed.values, parsed.given, io);
    return 0;
  } catch (e) {
    if (isUsageError(e)) {
      io.stderr(`Error: ${e.message}\n${modeHelp(command)}`);
    } else if (e instanceof KeyholeError || e instanceof CertError) {
      io.stderr(`Error: ${e.message}\n`);
    } else {
      io.stderr(
        `Error: unexpected failure in keyhole cert ${mode}: ${(e as Error)?.message ?? e}\n`,
      );
    }
    return 1;
  }
}

function modeHelp(command: CertSubcommand): string {
  return (
    `Usage of keyhole cert ${command.summary}\n` +
    `  Pass "-" to any path flag to read from stdin or write to stdout.\n` +
    describeFlags(command.flags)
  );
}

function overview(): string {
  const modes = Object.values(MODES)
    .map((c) => `    ${c.summary}\n`)
    .join("");
  return (
    "Usage of keyhole cert <global flags> <mode>:\n" +
    "  Global flags:\n" +
    "    -version: Prints the version\n" +
    "    -h, -help: Prints this help message\n\n" +
    `  Modes:\n${modes}\n` +
    "  To see usage for a given mode, use keyhole cert <mode> -h\n"
  );
}
