/**
 * Reads a JSON request body with the size limit enforced on the stream itself (a client may lie in
 * Content-Length or send chunked), and the content type checked, before anything parses it. The
 * bytes read are what the edge relays, so the signer sees exactly what was validated.
 */
import { MAX_BODY_BYTES } from "../core/contract/index.ts";
import { KeyholeError } from "../core/errors.ts";

export interface JsonBody {
  bytes: Uint8Array;
  value: unknown;
}

function tooLarge(): KeyholeError {
  return new KeyholeError(
    "body_too_large",
    `the request body is larger than ${MAX_BODY_BYTES} bytes; send only the fields the route takes`,
    { maxBytes: MAX_BODY_BYTES },
  );
}

/** Reads at most `limit` bytes; throws body_too_large as soon as the stream passes it. */
export async function readBodyBytes(request: Request, limit = MAX_BODY_BYTES): Promise<Uint8Array> {
  const header = request.headers.get("content-length");
  const declared = header !== null && /^\d+$/.test(header) ? Number(header) : null;
  if (declared !== null && declared > limit) throw tooLarge();
  if (!request.body) return new Uint8Array(0);
  if (declared !== null) {
    // HTTP frames such a body by its Content-Length: the runtime delivers exactly that many bytes
    // (or fails the read), so it is bounded already and can be read in one native call.
    const bytes = new Uint8Array(await request.arrayBuffer());
    if (bytes.byteLength > limit) throw tooLarge();
    return bytes;
  }
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > limit) {
      await reader.cancel().catch(() => {});
      throw tooLarge();
    }
    chunks.push(value);
  }
  const out = new Uint8Array(total);
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.byteLength;
  }
  return out;
}

/**
 * The body as JSON. `optional`: an empty body (and no content type) reads as `{}`. Otherwise the
 * content type must be application/json and the bytes valid UTF-8 JSON.
 */
export async function readJsonBody(request: Request, optional: boolean): Promise<JsonBody> {
  const type = request.headers.get("content-type");
  const bytes = await readBodyBytes(request);
  if (bytes.byteLength === 0 && optional) {
    return { bytes: new TextEncoder().encode("{}"), value: {} };
  }
  const mediaType = type?.split(";")[0]?.trim().toLowerCase();
  if (mediaType !== "application/json") {
    throw new KeyholeError(
      "unsupported_media_type",
      "send the body as JSON with Content-Type: application/json",
      { contentType: type ?? null },
    );
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new KeyholeError("invalid_json", "the request body is not UTF-8 text");
  }
  try {
    return { bytes, value: JSON.parse(text) };
  } catch {
    throw new KeyholeError(
      "invalid_json",
      "the request body is not valid JSON; check quotes and commas",
    );
  }
}
