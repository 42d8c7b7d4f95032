/** Helpers shared by the custody tests (not imported by production code). */
import { expect } from "vitest";
import { CustodyError, type EncryptionContext, type KeyCustody, type SealedCopy } from "./types.ts";

/** The encryption context most custody tests seal and open under. */
export const CTX: EncryptionContext = { org: "org-x", network: "net-1", ca: "ca-1" };

/** Opens and returns what `use` saw plus the buffer itself, to look at after custody is done with it. */
export async function openAndKeep(
  c: KeyCustody,
  copies: SealedCopy[],
  ctx: EncryptionContext = CTX,
  caId = "ca-1",
) {
  let buffer: Uint8Array = new Uint8Array();
  let seen: Uint8Array = new Uint8Array();
  const result = await c.openCaKey(caId, copies, ctx, async (plaintext) => {
    buffer = plaintext;
    seen = new Uint8Array(plaintext);
    return "signed";
  });
  return { result, buffer, seen };
}

/** The CustodyError a promise rejects with; fails the test when it resolves or throws another error. */
export async function caught(p: Promise<unknown>): Promise<CustodyError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(CustodyError);
    return e as CustodyError;
  }
  throw new Error("expected a CustodyError");
}
