/**
 * The signer's structured logs: one JSON object per line on stdout, so an operator's log pipeline
 * parses them and scripts can wait for a line. Callers pass only non-secret fields; there is no
 * "log the request" helper, so no header or body can end up here by accident.
 */
export type LogLevel = "debug" | "info" | "warn" | "error";

export interface SignerLogger {
  log(level: LogLevel, msg: string, fields?: Record<string, unknown>): void;
}

export function jsonLineLogger(
  write: (line: string) => void = (l) => process.stdout.write(l),
): SignerLogger {
  return {
    log(level, msg, fields = {}) {
      write(`${JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields })}\n`);
    },
  };
}

/** Keeps lines in memory (tests read them to prove what was and was not logged). */
export function memoryLogger(): SignerLogger & { lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  return {
    lines,
    log(level, msg, fields = {}) {
      lines.push({ level, msg, ...fields });
    },
  };
}
