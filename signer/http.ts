/**
 * The signer's request plumbing in one place: the trace id taken from `traceparent` (or made), the
 * JSON body read with a size limit and a content-type check and validated by the contract's schemas,
 * and every error turned into the contract's wire shape (`errorBody`) with its stable code.
 */
import type { Context } from "hono";
import type { z } from "zod";
import { apiCodeOf, isCertError } from "../core/cert/errors.ts";
import { MAX_BODY_BYTES } from "../core/contract/api.ts";
import { type ErrorCode, errorBody, statusOf } from "../core/contract/errors.ts";
import { KeyholeError } from "../core/errors.ts";
import { isCustodyError } from "./custody/types.ts";

const TRACEPARENT = /^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$/;

/** The trace id of a valid W3C traceparent, or a fresh one. */
export function traceIdFrom(traceparent: string | undefined | null): string {
  const m = traceparent ? TRACEPARENT.exec(traceparent.trim().toLowerCase()) : null;
  const id = m?.[1];
  if (id !== undefined && !/^0+$/.test(id) && !/^0+$/.test(m?.[2] ?? "")) return id;
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Reads and validates a JSON body: 415 unless JSON, 413 past MAX_BODY_BYTES, 400 with the field path. */
export async function readJsonBody<S extends z.ZodType>(
  c: Context,
  schema: S,
): Promise<z.infer<S>> {
  const type = c.req.header("content-type") ?? "";
  if (!/^application\/json\s*(;|$)/i.test(type)) {
    throw new KeyholeError(
      "unsupported_media_type",
      "send the body as JSON with Content-Type: application/json",
    );
  }
  const declared = Number(c.req.header("content-length") ?? "0");
  if (declared > MAX_BODY_BYTES) throw tooLarge();
  // A declared length without chunking is what the server reads and no more: read it in one call.
  // Anything else (chunked, no length) is read chunk by chunk and cut off at the limit.
  const sized = c.req.header("content-length") !== undefined && !c.req.header("transfer-encoding");
  const text = sized ? await readDeclared(c.req.raw) : await readLimited(c.req.raw);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new KeyholeError("invalid_json", "the body is not valid JSON");
  }
  return validate(schema, value);
}

/** Validates with a contract schema; the first issue's path and message say what to fix. */
export function validate<S extends z.ZodType>(schema: S, value: unknown): z.infer<S> {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const path = issue?.path.map(String).join(".") ?? "";
  const where = path === "" ? "body" : path;
  throw new KeyholeError("invalid_request", `${where}: ${issue?.message ?? "invalid"}`, {
    field: where,
    issues: parsed.error.issues
      .slice(0, 10)
      .map((i) => ({ path: i.path.map(String).join("."), message: i.message })),
  });
}

async function readDeclared(request: Request): Promise<string> {
  const bytes = new Uint8Array(await request.arrayBuffer());
  if (bytes.byteLength > MAX_BODY_BYTES) throw tooLarge();
  return decodeUtf8(bytes);
}

async function readLimited(request: Request): Promise<string> {
  if (request.body === null) return "";
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > MAX_BODY_BYTES) {
      await reader.cancel().catch(() => {});
      throw tooLarge();
    }
    chunks.push(value);
  }
  const all = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    all.set(chunk, at);
    at += chunk.byteLength;
  }
  return decodeUtf8(all);
}

function decodeUtf8(bytes: Uint8Array): string {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new KeyholeError("invalid_json", "the body is not valid UTF-8 JSON");
  }
}

function tooLarge(): KeyholeError {
  return new KeyholeError("body_too_large", `the body is larger than ${MAX_BODY_BYTES} bytes`);
}

/** What any thrown value becomes on the wire. Unknown errors are `internal` with no detail leaked. */
export function errorResponseOf(
  e: unknown,
  traceId: string,
): { status: number; code: ErrorCode; body: ReturnType<typeof errorBody> } {
  let code: ErrorCode = "internal";
  let message = "internal error; the trace id identifies it in the signer's logs";
  let details: Record<string, unknown> | undefined;
  if (e instanceof KeyholeError) {
    code = e.code;
    message = e.message;
    details = e.details ? { ...e.details } : undefined;
  } else if (isCertError(e)) {
    code = apiCodeOf(e.code);
    message = e.message;
    details = { reason: e.code };
  } else if (isCustodyError(e)) {
    if (e.kind === "denied") {
      code = "context_denied";
      message = "the key service refused to open this network's CA for you";
    } else if (e.kind === "unavailable") {
      code = "kms_unavailable";
      message = "no key service region could open the CA key; try again shortly";
    }
  }
  return { status: statusOf(code), code, body: errorBody(code, message, traceId, details) };
}
