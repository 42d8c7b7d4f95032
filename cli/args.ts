/**
 * Command-line flags the way Go's `flag` package reads them, so that scripts written for nebula-cert
 * work unchanged: `-name x`, `-name=x`, `--name x`, `-encrypt` (booleans take no separate value, only
 * `-encrypt=false`), `--` ends the flags. Unlike Go, a stray word after the flags is refused instead of
 * silently ignoring every flag that follows it.
 */
import { parseDuration } from "../core/duration.ts";
import { KeyholeError } from "../core/errors.ts";

export type FlagKind = "string" | "bool" | "uint" | "duration";

export interface FlagSpec {
  kind: FlagKind;
  usage: string;
  /** string: text, bool: boolean, uint: number, duration: seconds. Absent means "", false, 0, 0. */
  default?: string | boolean | number;
}

export type FlagSpecs = Record<string, FlagSpec>;

type ValueOf<K extends FlagKind> = K extends "bool"
  ? boolean
  : K extends "string"
    ? string
    : number;

export type FlagValues<S extends FlagSpecs> = { [N in keyof S]: ValueOf<S[N]["kind"]> };

export type ParsedFlags<S extends FlagSpecs> =
  | { help: true }
  | {
      help: false;
      values: FlagValues<S>;
      /** Flags the user gave explicitly (Go's flag.Visit). */
      given: ReadonlySet<keyof S & string>;
      /** Words after `--`. */
      rest: string[];
    };

/** Throws KeyholeError("invalid_request", ..., { usage: true }) for anything it cannot read. */
export function parseFlags<S extends FlagSpecs>(argv: readonly string[], specs: S): ParsedFlags<S> {
  const values: Record<string, string | boolean | number> = {};
  for (const [name, spec] of Object.entries(specs)) values[name] = defaultOf(spec);
  const given = new Set<keyof S & string>();

  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === "--")
      return { help: false, values: values as FlagValues<S>, given, rest: argv.slice(i + 1) };
    if (arg.length < 2 || arg[0] !== "-") {
      throw usageError(
        `unexpected argument ${JSON.stringify(arg)}: every option is a flag such as -name (did you forget a "-"?)`,
      );
    }
    const body = arg.startsWith("--") ? arg.slice(2) : arg.slice(1);
    if (body.length === 0 || body[0] === "-" || body[0] === "=") {
      throw usageError(`bad flag syntax: ${arg}`);
    }
    const eq = body.indexOf("=");
    const name = eq === -1 ? body : body.slice(0, eq);
    const spec = Object.hasOwn(specs, name) ? specs[name] : undefined;
    if (!spec) {
      if (name === "h" || name === "help") return { help: true };
      throw usageError(`flag provided but not defined: -${name}`);
    }
    let text: string;
    if (eq !== -1) {
      text = body.slice(eq + 1);
    } else if (spec.kind === "bool") {
      text = "true";
    } else {
      const next = argv[i + 1];
      if (next === undefined) throw usageError(`flag needs an argument: -${name}`);
      text = next;
      i++;
    }
    values[name] = readValue(name, spec.kind, text);
    given.add(name as keyof S & string);
  }
  return { help: false, values: values as FlagValues<S>, given, rest: [] };
}

/** Help text in the layout of Go's flag.PrintDefaults, flags sorted by name. */
export function describeFlags(specs: FlagSpecs): string {
  const lines: string[] = [];
  for (const name of Object.keys(specs).sort()) {
    const spec = specs[name] as FlagSpec;
    const type = spec.kind === "bool" ? "" : ` ${spec.kind === "string" ? "string" : spec.kind}`;
    let line = `  -${name}${type}\n    \t${spec.usage}`;
    const shown = shownDefault(spec);
    if (shown !== undefined) line += ` (default ${shown})`;
    lines.push(line);
  }
  return `${lines.join("\n")}\n`;
}

/** Splits nebula-cert's comma-separated list flags: trims each item and drops empty ones. */
export function splitList(text: string): string[] {
  return text
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

export function usageError(message: string): KeyholeError {
  return new KeyholeError("invalid_request", message, { usage: true });
}

export function isUsageError(e: unknown): e is KeyholeError {
  return e instanceof KeyholeError && e.details?.usage === true;
}

function defaultOf(spec: FlagSpec): string | boolean | number {
  if (spec.default !== undefined) return spec.default;
  switch (spec.kind) {
    case "string":
      return "";
    case "bool":
      return false;
    case "uint":
    case "duration":
      return 0;
  }
}

const UINT = /^(?:0|[1-9][0-9]*)$/;
const BOOL_TRUE = new Set(["1", "t", "T", "true", "TRUE", "True"]);
const BOOL_FALSE = new Set(["0", "f", "F", "false", "FALSE", "False"]);

function readValue(name: string, kind: FlagKind, text: string): string | boolean | number {
  switch (kind) {
    case "string":
      return text;
    case "bool":
      if (BOOL_TRUE.has(text)) return true;
      if (BOOL_FALSE.has(text)) return false;
      throw usageError(
        `invalid boolean value ${JSON.stringify(text)} for -${name}: use -${name} or -${name}=false`,
      );
    case "uint": {
      const n = Number(text);
      if (!UINT.test(text) || !Number.isSafeInteger(n)) {
        throw usageError(
          `invalid value ${JSON.stringify(text)} for flag -${name}: expected a whole number`,
        );
      }
      return n;
    }
    case "duration":
      try {
        return parseDuration(text);
      } catch (e) {
        throw usageError(`invalid value for flag -${name}: ${(e as Error).message}`);
      }
  }
}

function shownDefault(spec: FlagSpec): string | undefined {
  const d = spec.default;
  if (d === undefined || d === "" || d === false || d === 0) return undefined;
  if (spec.kind === "string") return JSON.stringify(d);
  if (spec.kind === "duration") return goDuration(d as number);
  return String(d);
}

/** Go's time.Duration.String() for whole seconds: "8760h0m0s". */
function goDuration(seconds: number): string {
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  if (h > 0) return `${h}h${m}m${s}s`;
  if (m > 0) return `${m}m${s}s`;
  return `${s}s`;
}
