/**
 * The CLI's HTTP client for the Keyhole API (the edge). One place that turns API errors into
 * messages that say what went wrong, the trace id to quote, and what to do next.
 */
import { type ErrorBody, isErrorCode, TRACE_ID_HEADER } from "../core/contract/index.ts";

export const DEFAULT_API = "http://127.0.0.1:8787";

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly traceId: string;
  constructor(status: number, code: string, message: string, traceId: string) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.traceId = traceId;
  }
}

const HINTS: Record<string, string> = {
  unauthenticated:
    "set KEYHOLE_TOKEN (on the local stack: export KEYHOLE_TOKEN=$(keyhole dev token))",
  invalid_token: "get a fresh token (on the local stack: keyhole dev token)",
  insufficient_scope: "ask for a token with the scope named above (keyhole dev token --scope ...)",
  mfa_required: "this needs a token from a multi-factor login (keyhole dev token --mfa)",
  invalid_enrollment_code: "ask an admin for a new code: keyhole host add ...",
  rate_limited: "wait for the time in Retry-After and try again",
  signer_unavailable: "no signer region answered: check that the stack runs (npm start)",
  kms_unavailable: "no KMS region could open the CA key: check the KMS regions",
  issuer_unavailable:
    "the token's issuer could not be reached to check it: try again shortly, or check KEYHOLE_OIDC_ISSUERS",
};

export interface ClientOptions {
  api?: string;
  token?: string;
}

export class KeyholeClient {
  readonly api: string;
  readonly token: string | undefined;

  constructor(options: ClientOptions = {}) {
    this.api = (options.api ?? process.env.KEYHOLE_API ?? DEFAULT_API).replace(/\/+$/, "");
    this.token = options.token ?? process.env.KEYHOLE_TOKEN ?? undefined;
  }

  async request<T>(method: string, path: string, body?: unknown, bearer?: string): Promise<T> {
    const headers: Record<string, string> = { accept: "application/json" };
    const credential = bearer ?? this.token;
    if (credential) headers.authorization = `Bearer ${credential}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    let response: Response;
    try {
      response = await fetch(`${this.api}${path}`, {
        method,
        headers,
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
    } catch (e) {
      throw new ApiError(
        0,
        "unreachable",
        `cannot reach the Keyhole API at ${this.api} (${(e as Error).message}): start it with \`npm start\` or set KEYHOLE_API`,
        "",
      );
    }
    const traceId = response.headers.get(TRACE_ID_HEADER) ?? "";
    const text = await response.text();
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      throw new ApiError(
        response.status,
        "bad_response",
        `the API answered ${response.status} with a body that is not JSON`,
        traceId,
      );
    }
    if (!response.ok) {
      const err = (parsed as Partial<ErrorBody> | undefined)?.error;
      const code = err && isErrorCode(err.code) ? err.code : `http_${response.status}`;
      const hint = HINTS[code];
      const message = `${err?.message ?? `HTTP ${response.status}`}${hint ? `\n  next: ${hint}` : ""}`;
      throw new ApiError(response.status, code, message, err?.traceId ?? traceId);
    }
    return parsed as T;
  }
}

/** Prints an error for a person (stderr) and returns the exit code. */
export function reportError(e: unknown): number {
  if (e instanceof ApiError) {
    const trace = e.traceId ? ` (trace ${e.traceId})` : "";
    process.stderr.write(`keyhole: ${e.code}: ${e.message}${trace}\n`);
    return e.status === 0 ? 3 : 1;
  }
  process.stderr.write(`keyhole: ${(e as Error).message ?? String(e)}\n`);
  return 1;
}
