/**
 * The small, strict subset of ASN.1 DER that Nebula v2 certificates and ECDSA signatures use:
 * single-byte tags, definite minimal lengths, minimal two's-complement integers. The reader guards
 * every length against its buffer and throws only CertError, so hostile bytes cannot escape as
 * another exception.
 */
import { CertError, type CertErrorCode } from "./errors.ts";

export const TAG_INTEGER = 0x02;
export const TAG_OCTET_STRING = 0x04;
export const TAG_UTF8_STRING = 0x0c;
export const TAG_SEQUENCE = 0x30;

/** Largest value the reader accepts, well above Nebula's 64 KiB certificate limit. */
const MAX_LENGTH = 1 << 24;

export class DerReader {
  readonly #bytes: Uint8Array;
  #pos: number;
  readonly #end: number;
  readonly #code: CertErrorCode;

  constructor(bytes: Uint8Array, code: CertErrorCode = "malformed_certificate") {
    this.#bytes = bytes;
    this.#pos = 0;
    this.#end = bytes.length;
    this.#code = code;
  }

  fail(why: string): CertError {
    return new CertError(this.#code, `bad DER encoding: ${why}`);
  }

  get empty(): boolean {
    return this.#pos >= this.#end;
  }

  peekTag(): number | undefined {
    return this.#pos < this.#end ? this.#bytes[this.#pos] : undefined;
  }

  /** Reads one element with `tag`; returns its whole encoding (tag and length included) and its value. */
  readElement(tag: number): { element: Uint8Array; value: Uint8Array } {
    const start = this.#pos;
    const b = this.#bytes;
    if (start >= this.#end) throw this.fail(`expected tag 0x${hex(tag)}, found the end`);
    const t = b[start] as number;
    if (t !== tag) throw this.fail(`expected tag 0x${hex(tag)}, found 0x${hex(t)}`);
    if (start + 1 >= this.#end) throw this.fail("length missing");
    let len = b[start + 1] as number;
    let p = start + 2;
    if (len & 0x80) {
      const n = len & 0x7f;
      if (n === 0) throw this.fail("indefinite length");
      if (n > 3) throw this.fail("length too large");
      if (p + n > this.#end) throw this.fail("length truncated");
      len = 0;
      for (let i = 0; i < n; i++) len = len * 256 + (b[p + i] as number);
      if (b[p] === 0 || len < 0x80) throw this.fail("length not minimal");
      p += n;
    }
    if (len > MAX_LENGTH || p + len > this.#end) throw this.fail("value runs past its container");
    this.#pos = p + len;
    return { element: b.subarray(start, p + len), value: b.subarray(p, p + len) };
  }

  read(tag: number): Uint8Array {
    return this.readElement(tag).value;
  }

  readOptional(tag: number): Uint8Array | undefined {
    return this.peekTag() === tag ? this.read(tag) : undefined;
  }

  /** A signed integer with an implicit `tag`, minimal, that fits a safe JS integer. */
  readSafeInteger(tag: number): number {
    const v = this.read(tag);
    if (v.length === 0) throw this.fail("empty integer");
    if (v.length > 1) {
      const a = v[0] as number;
      const c = (v[1] as number) & 0x80;
      if ((a === 0 && c === 0) || (a === 0xff && c !== 0)) throw this.fail("integer not minimal");
    }
    if (v.length > 7) throw this.fail("integer out of range");
    let n = (v[0] as number) & 0x80 ? -1 : 0;
    for (const byte of v) n = n * 256 + byte;
    return n;
  }

  /** A non-negative integer's magnitude (ECDSA r and s), without its sign byte. */
  readUnsignedIntegerBytes(): Uint8Array {
    const v = this.read(TAG_INTEGER);
    if (v.length === 0) throw this.fail("empty integer");
    if ((v[0] as number) & 0x80) throw this.fail("negative integer");
    if (v.length > 1 && v[0] === 0 && ((v[1] as number) & 0x80) === 0)
      throw this.fail("integer not minimal");
    return v[0] === 0 && v.length > 1 ? v.subarray(1) : v;
  }
}

function hex(n: number): string {
  return n.toString(16).padStart(2, "0");
}

function lengthBytes(len: number): number[] {
  if (len < 0x80) return [len];
  const out: number[] = [];
  for (let l = len; l > 0; l = Math.floor(l / 256)) out.unshift(l & 0xff);
  return [0x80 | out.length, ...out];
}

/** One element: tag, minimal length, then the parts concatenated. */
export function derElement(tag: number, ...parts: Uint8Array[]): Uint8Array {
  let len = 0;
  for (const p of parts) len += p.length;
  const head = lengthBytes(len);
  const out = new Uint8Array(1 + head.length + len);
  out[0] = tag;
  out.set(head, 1);
  let pos = 1 + head.length;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

/** Minimal two's-complement encoding of a safe integer. */
export function derIntegerValue(n: number): Uint8Array {
  // Count the bytes first (at most 8 for a safe integer), then write them from the end.
  let len = 1;
  for (let v = n; v > 127 || v < -128; v = Math.floor(v / 256)) len++;
  const out = new Uint8Array(len);
  let v = n;
  for (let i = len - 1; i >= 0; i--) {
    out[i] = ((v % 256) + 256) % 256;
    v = Math.floor(v / 256);
  }
  return out;
}

/** The DER INTEGER value of a non-negative magnitude (leading zeros dropped, sign byte added). */
export function derUnsignedIntegerValue(magnitude: Uint8Array): Uint8Array {
  let i = 0;
  while (i < magnitude.length - 1 && magnitude[i] === 0) i++;
  const m = magnitude.subarray(i);
  if (m.length === 0) return Uint8Array.of(0);
  if ((m[0] as number) & 0x80) {
    const out = new Uint8Array(m.length + 1);
    out.set(m, 1);
    return out;
  }
  return m;
}

/** Same length and bytes; the time taken does not depend on where they differ. */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= (a[i] as number) ^ (b[i] as number);
  return d === 0;
}

export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  let len = 0;
  for (const p of parts) len += p.length;
  const out = new Uint8Array(len);
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

/** A view WebCrypto accepts (copied only when the bytes live in a SharedArrayBuffer). */
export function bufferSource(u: Uint8Array): Uint8Array<ArrayBuffer> {
  return u.buffer instanceof ArrayBuffer ? (u as Uint8Array<ArrayBuffer>) : new Uint8Array(u);
}
