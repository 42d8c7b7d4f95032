/**
 * Keyhole's one error type. Every failure a caller can act on has a stable `code`; the HTTP status
 * and the wire shape are derived from the code in one place (`core/contract/errors.ts`).
 */
import type { ErrorCode } from "./contract/errors.ts";

export class KeyholeError extends Error {
  readonly code: ErrorCode;
  /** Extra, non-secret facts for the client (e.g. which field or constraint). */
  readonly details: Readonly<Record<string, unknown>> | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    details?: Record<string, unknown>,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "KeyholeError";
    this.code = code;
    this.details = details;
  }
}

export function isKeyholeError(e: unknown): e is KeyholeError {
  return e instanceof KeyholeError;
}
