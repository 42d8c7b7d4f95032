/**
 * W3C trace context at the edge's ingress. A caller's valid `traceparent` is kept (its trace id
 * becomes the request id); anything else gets a fresh trace. The edge is one span of the trace: the
 * signer receives a `traceparent` with the same trace id and the edge's own span id, so audit rows,
 * logs and error bodies on both sides share one id.
 */

export interface TraceContext {
  /** 32 lowercase hex digits; also the `x-request-id` and every error body's `traceId`. */
  traceId: string;
  /** The edge's span id (16 hex digits), the parent of the signer's span. */
  spanId: string;
  /** Trace flags from the caller (sampled bit), or "01" for a trace the edge started. */
  flags: string;
}

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;

function randomHex(bytes: number): string {
  const b = crypto.getRandomValues(new Uint8Array(bytes));
  let out = "";
  for (const x of b) out += x.toString(16).padStart(2, "0");
  return out;
}

function nonZeroHex(bytes: number): string {
  for (;;) {
    const hex = randomHex(bytes);
    if (!/^0+$/.test(hex)) return hex;
  }
}

/**
 * Keeps a valid W3C traceparent's trace id and flags (version 00, or a later version read as 00
 * per the spec's forward-compatibility rule); otherwise starts a new trace.
 */
export function traceFromHeader(header: string | null | undefined): TraceContext {
  const spanId = nonZeroHex(8);
  const m = header ? TRACEPARENT.exec(header.trim()) : null;
  if (m) {
    const [, version, traceId, parentId, flags, rest] = m as unknown as [
      string,
      string,
      string,
      string,
      string,
      string | undefined,
    ];
    const valid =
      version !== "ff" &&
      !(version === "00" && rest !== undefined) &&
      !/^0+$/.test(traceId) &&
      !/^0+$/.test(parentId);
    if (valid) return { traceId, spanId, flags };
  }
  return { traceId: nonZeroHex(16), spanId, flags: "01" };
}

/** The `traceparent` the edge sends to the signer: same trace, the edge's span as parent. */
export function relayTraceparent(trace: TraceContext): string {
  return `00-${trace.traceId}-${trace.spanId}-${trace.flags}`;
}
