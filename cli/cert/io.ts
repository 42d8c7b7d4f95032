/**
 * Files, stdin/stdout and passphrases for `keyhole cert`, with nebula-cert's rules: "-" stands for
 * stdin or stdout (one flag each), files are written mode 0600, CA keys and certificates are never
 * overwritten, and a passphrase comes from the environment or stdin, never from a flag.
 */
import { constants } from "node:fs";
import { open, readFile } from "node:fs/promises";
import { KeyholeError } from "../../core/errors.ts";

export const STDIO = "-";

/** What a subcommand may touch besides the file system; `processIo()` is the real one. */
export interface CertIo {
  stdout(data: string | Uint8Array): void;
  stderr(text: string): void;
  readStdin(): Promise<Uint8Array>;
  /** Reads one line from the terminal without echo; undefined when stdin is not a terminal. */
  readHiddenLine: ((prompt: string) => Promise<string>) | undefined;
  env: Readonly<Record<string, string | undefined>>;
}

export function processIo(): CertIo {
  return {
    stdout: (data) => process.stdout.write(data),
    stderr: (text) => process.stderr.write(text),
    readStdin: readAllStdin,
    readHiddenLine: process.stdin.isTTY ? readHiddenLineFromTty : undefined,
    env: process.env,
  };
}

/** A failure the user can act on; printed as "Error: <message>" with exit status 1. */
export function certCliError(message: string, cause?: unknown): KeyholeError {
  return new KeyholeError("invalid_request", message, undefined, cause ? { cause } : undefined);
}

/** Which flag reads stdin and which writes stdout, so that two flags never share one stream. */
export class StdioClaims {
  private input = "";
  private output = "";

  claimInput(flag: string, path: string): void {
    if (path !== STDIO) return;
    if (this.input && this.input !== flag) {
      throw certCliError(
        `-${this.input} and -${flag} both set to "-", only one input may read from stdin`,
      );
    }
    this.input = flag;
  }

  claimOutput(flag: string, path: string): void {
    if (path !== STDIO) return;
    if (this.output && this.output !== flag) {
      throw certCliError(
        `-${this.output} and -${flag} both set to "-", only one output may write to stdout`,
      );
    }
    this.output = flag;
  }

  get stdinClaimedBy(): string {
    return this.input;
  }
}

export async function readInput(
  io: CertIo,
  flag: string,
  path: string,
  what: string,
): Promise<string> {
  try {
    const bytes = path === STDIO ? await io.readStdin() : await readFile(path);
    return new TextDecoder().decode(bytes);
  } catch (e) {
    throw certCliError(`error while reading ${what} (-${flag} ${path}): ${systemReason(e)}`, e);
  }
}

/** Refuses when `path` exists, as nebula-cert does for CA keys, CA certs, host certs and host keys. */
export async function refuseExisting(path: string, what: string): Promise<void> {
  if (path === STDIO) return;
  try {
    await (await open(path, "r")).close();
  } catch {
    return;
  }
  throw certCliError(`refusing to overwrite existing ${what}: ${path}`);
}

/**
 * Writes `data` to `path` with mode 0600 (or to stdout for "-"). With `exclusive` the file must not
 * exist (closing the gap between the existence check and the write); otherwise it is replaced.
 */
export async function writeOutput(
  io: CertIo,
  flag: string,
  path: string,
  data: string,
  exclusive: boolean,
): Promise<void> {
  if (path === STDIO) {
    io.stdout(data);
    return;
  }
  const flags =
    constants.O_WRONLY | constants.O_CREAT | (exclusive ? constants.O_EXCL : constants.O_TRUNC);
  try {
    const file = await open(path, flags, 0o600);
    try {
      await file.writeFile(data);
    } finally {
      await file.close();
    }
  } catch (e) {
    throw certCliError(`error while writing -${flag} ${path}: ${systemReason(e)}`, e);
  }
}

export interface PassphraseOptions {
  /** The flag that already reads stdin, if any: then stdin cannot also carry the passphrase. */
  stdinClaimedBy: string;
  /** What the passphrase is for, in the error that says how to give one. */
  purpose: string;
}

/**
 * The CA key passphrase: KEYHOLE_CA_PASSPHRASE (or nebula-cert's NEBULA_CA_PASSPHRASE), else typed on
 * the terminal without echo, else the first line of stdin. Empty means none was given.
 */
export async function readPassphrase(io: CertIo, options: PassphraseOptions): Promise<string> {
  const fromEnv = io.env.KEYHOLE_CA_PASSPHRASE || io.env.NEBULA_CA_PASSPHRASE;
  if (fromEnv) return fromEnv;
  if (options.stdinClaimedBy) {
    throw certCliError(
      `-${options.stdinClaimedBy} reads stdin, so the passphrase ${options.purpose} cannot: set KEYHOLE_CA_PASSPHRASE`,
    );
  }
  if (io.readHiddenLine) {
    for (let i = 0; i < 5; i++) {
      const typed = await io.readHiddenLine("Enter passphrase: ");
      if (typed) return typed;
    }
    return "";
  }
  const text = new TextDecoder().decode(await io.readStdin());
  const line = text.split("\n", 1)[0] ?? "";
  return line.endsWith("\r") ? line.slice(0, -1) : line;
}

async function readAllStdin(): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** Reads a line on a terminal in raw mode, echoing nothing. Ctrl-C and Ctrl-D give up. */
function readHiddenLineFromTty(prompt: string): Promise<string> {
  const stdin = process.stdin;
  process.stderr.write(prompt);
  return new Promise((resolve, reject) => {
    let typed = "";
    const finish = (error: Error | undefined) => {
      stdin.off("data", onData);
      stdin.setRawMode(false);
      stdin.pause();
      process.stderr.write("\n");
      if (error) reject(error);
      else resolve(typed);
    };
    const onData = (chunk: Buffer) => {
      for (const ch of chunk.toString("utf8")) {
        if (ch === "\r" || ch === "\n") return finish(undefined);
        if (ch === "\u0003" || ch === "\u0004")
          return finish(certCliError("passphrase entry cancelled"));
        if (ch === "\u007f" || ch === "\b") typed = typed.slice(0, -1);
        else typed += ch;
      }
    };
    stdin.setRawMode(true);
    stdin.resume();
    stdin.on("data", onData);
  });
}

function systemReason(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === "ENOENT") return "no such file";
  if (code === "EACCES" || code === "EPERM") return "permission denied";
  if (code === "EEXIST") return "file exists";
  if (code === "EISDIR") return "is a directory";
  return (e as Error).message;
}
