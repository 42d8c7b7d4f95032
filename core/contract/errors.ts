/**
 * The stable error codes of the public API and the HTTP status each one maps to. Edge and signer
 * both produce errors through `errorBody`, so the wire format exists exactly once.
 */
export const ERROR_STATUS = {
  // 400: the request itself is wrong
  invalid_request: 400,
  invalid_json: 400,
  invalid_public_key: 400,
  wrong_curve: 400,
  invalid_duration: 400,
  invalid_network: 400,
  ip_outside_network: 400,
  constraint_violation: 400,
  unknown_group: 400,
  // 401/403: who you are and what you may do
  unauthenticated: 401,
  invalid_token: 401,
  invalid_enrollment_code: 401,
  invalid_host_token: 401,
  host_token_reused: 401,
  insufficient_scope: 403,
  mfa_required: 403,
  forbidden: 403,
  context_denied: 403,
  host_blocked: 403,
  // 404/409/413/415/429
  not_found: 404,
  name_taken: 409,
  ip_taken: 409,
  idempotency_conflict: 409,
  network_full: 409,
  body_too_large: 413,
  unsupported_media_type: 415,
  rate_limited: 429,
  // 5xx: ours, or a dependency's
  internal: 500,
  kms_unavailable: 503,
  signer_unavailable: 503,
  storage_unavailable: 503,
  audit_unavailable: 503,
  /** The token's issuer (discovery or signing keys) could not be read: the token was not judged. */
  issuer_unavailable: 503,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;
export type ErrorStatus = (typeof ERROR_STATUS)[ErrorCode];

export interface ErrorBody {
  error: { code: ErrorCode; message: string; traceId: string; details?: Record<string, unknown> };
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === "string" && Object.hasOwn(ERROR_STATUS, value);
}

export function statusOf(code: ErrorCode): ErrorStatus {
  return ERROR_STATUS[code];
}

export function errorBody(
  code: ErrorCode,
  message: string,
  traceId: string,
  details?: Record<string, unknown>,
): ErrorBody {
  return { error: details ? { code, message, traceId, details } : { code, message, traceId } };
}
