/**
 * Shared set-up for the store's tests: a fresh libSQL file in a temp folder, a clock the test moves,
 * and inputs shaped like what the signer's routes pass (CA rows with sealed copies, audit events).
 * Not imported by production code.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openDatabase } from "../../db/client.ts";
import { createSignerStore, type SignerStoreHandle } from "./index.ts";
import { newId } from "./secrets.ts";
import type { AuditEventInput, CreateNetworkInput, NewCa, RegisterHostInput } from "./types.ts";

export interface TestStore {
  store: SignerStoreHandle;
  dir: string;
  path: string;
  url: string;
  clock: { now: Date; advance(seconds: number): void };
  cleanup(): Promise<void>;
}

/**
 * How the writer's statements run: prepared once and joining the open transaction (what a file
 * database does), or built on each transaction (what a libSQL server does; see ./statements.ts).
 */
export type StatementMode = "prepared once" | "built per transaction";
export const STATEMENT_MODES: StatementMode[] = ["prepared once", "built per transaction"];

export async function openTestStore(
  options: { busyTimeoutMs?: number; maxBatch?: number; statements?: StatementMode } = {},
): Promise<TestStore> {
  const dir = mkdtempSync(join(tmpdir(), "keyhole-store-"));
  const path = join(dir, "signer.db");
  const url = `file:${path}`;
  const clock = {
    now: new Date("2030-01-01T00:00:00.000Z"),
    advance(seconds: number) {
      this.now = new Date(this.now.getTime() + seconds * 1000);
    },
  };
  const db = await openDatabase({ url, busyTimeoutMs: options.busyTimeoutMs ?? 200 });
  // The same file, with the statements a server-backed store would build (getters still delegate).
  const perTransaction = options.statements === "built per transaction";
  const store = createSignerStore(
    perTransaction ? Object.create(db, { writeJoinsTransaction: { value: false } }) : db,
    {
      clock: () => clock.now,
      ...(options.maxBatch ? { maxBatch: options.maxBatch } : {}),
    },
  );
  return {
    store,
    dir,
    path,
    url,
    clock,
    async cleanup() {
      await store.close().catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Every table of the store, for tests that prove a refusal wrote nothing. */
export const STORE_TABLES = [
  "networks",
  "cas",
  "ca_sealed_keys",
  "hosts",
  "host_addresses",
  "address_pools",
  "enrollment_codes",
  "host_tokens",
  "certificates",
  "idempotency",
  "audit_events",
] as const;

export const TRACE = "0af7651916cd43dd8448eb211c80319c";

export function auditEvent(
  org: string,
  action: string,
  extra: Partial<AuditEventInput> = {},
): AuditEventInput {
  return {
    traceId: TRACE,
    actor: "user:https://issuer.test#alice",
    org,
    action,
    outcome: "ok",
    ...extra,
  };
}

export function fakeFingerprint(): string {
  return randomBytes(32).toString("hex");
}

export function newCa(now: Date, lifetimeDays = 365): NewCa {
  const fp = fakeFingerprint();
  return {
    id: newId("ca"),
    certificate: `-----BEGIN NEBULA CERTIFICATE V2-----\n${randomBytes(48).toString("base64")}\n-----END NEBULA CERTIFICATE V2-----\n`,
    fingerprint: fp,
    notBefore: now,
    notAfter: new Date(now.getTime() + lifetimeDays * 86400_000),
    sealedKeys: [
      { region: "local-a", keyId: "key-a", ciphertext: randomBytes(80) },
      { region: "local-b", keyId: "key-b", ciphertext: randomBytes(80) },
    ],
  };
}

export function networkInput(
  org: string,
  name: string,
  cidrs: string[],
  now: Date,
): CreateNetworkInput {
  const id = newId("net");
  const ca = newCa(now);
  return {
    id,
    org,
    name,
    cidrs,
    curve: "25519",
    certVersion: 2,
    groups: null,
    ca,
    audit: [auditEvent(org, "ca.create", { networkId: id, kmsRequestIds: ["req-a", "req-b"] })],
  };
}

export function certFor(networkId: string, caId: string, hostId: string | null, now: Date) {
  return {
    fingerprint: fakeFingerprint(),
    hostId,
    networkId,
    caId,
    pem: `-----BEGIN NEBULA CERTIFICATE V2-----\n${randomBytes(60).toString("base64")}\n-----END NEBULA CERTIFICATE V2-----\n`,
    notBefore: now,
    notAfter: new Date(now.getTime() + 30 * 86400_000),
  };
}

/** A host registration as the routes pass it (not a lighthouse, no static addresses). */
export function hostInput(
  networkId: string,
  name: string,
  extra: Partial<RegisterHostInput> = {},
): RegisterHostInput {
  return {
    networkId,
    name,
    groups: ["servers"],
    lighthouse: false,
    staticAddrs: [],
    certLifetimeS: 720 * 3600,
    codeTtlS: 3600,
    audit: [auditEvent("org-a", "host.register", { networkId })],
    ...extra,
  };
}
