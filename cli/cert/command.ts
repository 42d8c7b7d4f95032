/**
 * The shape every `keyhole cert` subcommand has: nebula-cert's summary line and flags, and a run
 * function that gets the parsed flags. The dispatcher (cli/cert/index.ts) owns help and errors.
 */
import type { FlagSpecs, FlagValues } from "../args.ts";
import type { CertIo } from "./io.ts";

export interface CertSubcommand<S extends FlagSpecs = FlagSpecs> {
  /** "ca <flags>: create a self signed certificate authority" */
  summary: string;
  flags: S;
  run(values: FlagValues<S>, given: ReadonlySet<string>, io: CertIo): Promise<void>;
}

/** Keeps the flag types of one subcommand while storing it in a table of all of them. */
export function defineSubcommand<S extends FlagSpecs>(command: CertSubcommand<S>): CertSubcommand {
  return command as unknown as CertSubcommand;
}
