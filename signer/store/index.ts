/**
 * The signer's store over libSQL: `SignerStore` (./types.ts) implemented with drizzle-orm. Reads go
 * straight to the pooled read client; every write goes through the single group-committing writer
 * (./writer.ts), so each multi-row change (network + CA + sealed keys + audit, certificate + consumed
 * credential + next host token + audit) is one transaction and the audit chain stays linear.
 *
 * Files: types.ts (the interface the routes use), index.ts (this: queries and transactions),
 * writer.ts (group commit, savepoint isolation), audit.ts (hash chain, canonical JSON, verification),
 * addresses.ts (overlay address allocation), secrets.ts (codes, tokens, ids), testing.ts (test set-up).
 */
import {
  and,
  count,
  desc,
  eq,
  getTableColumns,
  gt,
  gte,
  inArray,
  isNotNull,
  isNull,
  lte,
  sql,
} from "drizzle-orm";
import type {
  AuditRowView,
  CaView,
  CertificateView,
  HostView,
  NetworkView,
} from "../../core/contract/api.ts";
import { KeyholeError } from "../../core/errors.ts";
import {
  type Database,
  type DatabaseOptions,
  isStorageFailure,
  libsqlCode,
  type Orm,
  openDatabase,
  toStorageError,
} from "../../db/client.ts";
import {
  addressPools,
  auditEvents,
  caSealedKeys,
  cas,
  certificates,
  enrollmentCodes,
  hostAddresses,
  hosts,
  hostTokens,
  idempotency,
  networks,
} from "../../db/schema.ts";
import {
  type AddressBook,
  allocateHostAddresses,
  canonicalNetworkCidrs,
  checkCidrsForVersion,
} from "./addresses.ts";
import { appendAudit, flushPendingAudit, toAuditView, verifyChain } from "./audit.ts";
import { sameCertificateTooSoon } from "./refusals.ts";
import { ENROLLMENT_CODE_PREFIX, HOST_TOKEN_PREFIX, hashSecret, mintSecret } from "./secrets.ts";
import { driverRow, equalsConstant, prepareStatement, txStatements } from "./statements.ts";
import type {
  AuditEventInput,
  AuditFilter,
  BlockResult,
  CaRecord,
  CertificateRecord,
  CreateNetworkInput,
  EnrolledHost,
  HostCredential,
  HostRecord,
  IssuanceInput,
  IssuanceResult,
  NetworkRecord,
  NewCa,
  RegisteredHost,
  RegisterHostInput,
  RotateCaInput,
  SealedCaKey,
  SignerStore,
  SignerStoreOptions,
} from "./types.ts";
import { createWriter, type JobResult, type TxState, type WriteTx } from "./writer.ts";

export { canonicalJson, GENESIS_HASH, lastAuditHash } from "./audit.ts";
export { sameCertificateTooSoon } from "./refusals.ts";
export { hashSecret, newId } from "./secrets.ts";
export type * from "./types.ts";

type NetworkRow = typeof networks.$inferSelect;
type CaRow = typeof cas.$inferSelect;
type CertRow = typeof certificates.$inferSelect;
/** A hosts row with its network's org and its addresses (JSON array text, in CIDR order). */
type HostRow = typeof hosts.$inferSelect & { org: string; ips: string | null };
type Reader = Orm | WriteTx;

const INVALID_CODE =
  "the enrollment code is unknown, already used or expired; ask an admin for a new host registration and code";
const INVALID_TOKEN = "the host token is unknown; enroll with a new enrollment code from an admin";

/** How old the last look at the database file may be for a read (see Database.assertReachable). */
const READ_REACHABILITY_MS = 100;

/** A store plus what operators and tests may inspect. */
export interface SignerStoreHandle extends SignerStore {
  readonly database: Database;
}

/** Opens the database (migrations applied) and returns the store over it. */
export async function openSignerStore(
  options: DatabaseOptions & SignerStoreOptions,
): Promise<SignerStoreHandle> {
  const db = await openDatabase(options);
  return createSignerStore(db, options);
}

export function createSignerStore(
  db: Database,
  options: SignerStoreOptions = {},
): SignerStoreHandle {
  const clock = options.clock ?? (() => new Date());
  const writer = createWriter(db, options.maxBatch ?? 256, flushPending);
  const orm = db.read;
  let closed = false;

  async function read<T>(what: string, query: () => Promise<T>): Promise<T> {
    if (closed) throw new KeyholeError("storage_unavailable", "the store is closed");
    try {
      db.assertReachable(READ_REACHABILITY_MS);
      return await query();
    } catch (e) {
      if (isStorageFailure(e)) throw toStorageError(e, what);
      throw e;
    }
  }

  /**
   * Queues a write. Jobs that only append certificates and audit rows (`appendOnly`) leave them
   * pending for one multi-row insert per batch; every other job first inserts what is pending, so
   * its reads and updates see the rows of the jobs before it.
   */
  function write<T>(
    run: (tx: WriteTx, now: Date, state: TxState) => Promise<JobResult<T>>,
    appendOnly = false,
  ): Promise<T> {
    if (closed)
      return Promise.reject(new KeyholeError("storage_unavailable", "the store is closed"));
    return writer.submit(async (tx, state) => {
      if (!appendOnly) await flushPending(tx, state);
      return run(tx, clock(), state);
    });
  }

  // ---- row mapping ----

  function networkRecord(row: NetworkRow): NetworkRecord {
    return {
      id: row.id,
      org: row.org,
      name: row.name,
      cidrs: row.cidrs,
      curve: row.curve,
      certVersion: row.certVersion,
      groups: row.groups ?? null,
      revision: row.revision,
      createdAt: row.createdAt,
    };
  }

  function caRecord(row: CaRow, keys: SealedCaKey[]): CaRecord {
    return {
      id: row.id,
      networkId: row.networkId,
      org: row.org,
      certificate: row.certificate,
      fingerprint: row.fingerprint,
      notBefore: row.notBefore,
      notAfter: row.notAfter,
      state: row.state,
      createdAt: row.createdAt,
      sealedKeys: keys,
    };
  }

  function hostRecord(row: HostRow): HostRecord {
    return {
      id: row.id,
      networkId: row.networkId,
      org: row.org,
      name: row.name,
      ip: row.ip,
      ips: ipsOf(row),
      groups: row.groups,
      lighthouse: row.lighthouse,
      staticAddrs: row.staticAddrs,
      state: row.state,
      certLifetimeS: row.certLifetimeS,
      createdAt: row.createdAt,
    };
  }

  function certRecord(row: CertRow): CertificateRecord {
    return {
      fingerprint: row.fingerprint,
      hostId: row.hostId,
      networkId: row.networkId,
      caId: row.caId,
      pem: row.pem,
      notBefore: row.notBefore,
      notAfter: row.notAfter,
      revokedAt: row.revokedAt,
      createdAt: row.createdAt,
    };
  }

  async function loadCas(r: Reader, rows: CaRow[]): Promise<CaRecord[]> {
    if (rows.length === 0) return [];
    const keys = await r
      .select()
      .from(caSealedKeys)
      .where(
        inArray(
          caSealedKeys.caId,
          rows.map((c) => c.id),
        ),
      );
    return rows.map((row) => caRecord(row, keys.filter((k) => k.caId === row.id).map(sealedKeyOf)));
  }

  /** Host columns plus org and addresses: one statement reads a whole host record. */
  const hostColumns = {
    ...getTableColumns(hosts),
    org: networks.org,
    ips: sql<
      string | null
    >`(select json_group_array(address) from (select address from ${hostAddresses} where ${hostAddresses.hostId} = ${hosts.id} order by ${hostAddresses.position}))`,
  };
  async function selectHost(r: Reader, id: string): Promise<HostRow | undefined> {
    const rows = await r
      .select(hostColumns)
      .from(hosts)
      .innerJoin(networks, eq(hosts.networkId, networks.id))
      .where(eq(hosts.id, id));
    return rows[0];
  }

  async function selectNetwork(r: Reader, id: string): Promise<NetworkRow | undefined> {
    return (await r.select().from(networks).where(eq(networks.id, id)))[0];
  }

  /**
   * The reads every enrollment makes, built once: drizzle composes their SQL at startup instead of on
   * each request, and the file client (db/file-client.ts) keeps each one prepared. Placeholders take
   * driver values (timestamps as epoch milliseconds).
   */
  const ph = sql.placeholder;
  const hot = {
    idempotency: prepareStatement("findIdempotency", orm),
    enrollmentCode: orm
      .select({ code: enrollmentCodes, host: hostColumns, network: networks })
      .from(enrollmentCodes)
      .innerJoin(hosts, eq(enrollmentCodes.hostId, hosts.id))
      .innerJoin(networks, eq(hosts.networkId, networks.id))
      .where(eq(enrollmentCodes.hash, ph("hash")))
      .prepare(),
    activeCas: orm
      .select()
      .from(cas)
      .where(and(eq(cas.networkId, ph("networkId")), equalsConstant(cas.state, "active")))
      .prepare(),
    sealedKeys: orm
      .select()
      .from(caSealedKeys)
      .where(eq(caSealedKeys.caId, ph("caId")))
      .prepare(),
    certificate: orm
      .select()
      .from(certificates)
      .where(eq(certificates.fingerprint, ph("fingerprint")))
      .prepare(),
    casNewestFirst: orm
      .select()
      .from(cas)
      .where(eq(cas.networkId, ph("networkId")))
      .orderBy(desc(cas.createdAt))
      .prepare(),
    lighthouses: orm
      .select(hostColumns)
      .from(hosts)
      .innerJoin(networks, eq(hosts.networkId, networks.id))
      // the literal `= 1` (not a bound true) lets SQLite use the partial index of lighthouses
      .where(and(eq(hosts.networkId, ph("networkId")), sql`${hosts.lighthouse} = 1`))
      .orderBy(hosts.createdAt, hosts.id)
      .prepare(),
    /** Revoked certificates not yet expired, with their end (the issuance view filters by it). */
    revoked: orm
      .select({ fingerprint: certificates.fingerprint, notAfter: certificates.notAfter })
      .from(certificates)
      .where(
        and(
          eq(certificates.networkId, ph("networkId")),
          isNotNull(certificates.revokedAt),
          gt(certificates.notAfter, ph("nowMs")),
        ),
      )
      .orderBy(certificates.fingerprint)
      .prepare(),
  };

  /** Moves the network's revision (see NetworkRecord.revision) inside the changing transaction. */
  async function bumpRevision(tx: WriteTx, networkId: string): Promise<void> {
    await tx
      .update(networks)
      .set({ revision: sql`${networks.revision} + 1` })
      .where(eq(networks.id, networkId));
  }

  interface CachedIssuanceView {
    revision: number;
    activeCa: CaRecord;
    cas: CaRecord[];
    lighthouses: HostRecord[];
    revoked: { fingerprint: string; notAfter: Date }[];
  }
  /** Per network, most recently used last; bounded so that many networks cannot grow it. */
  const issuanceViews = new Map<string, CachedIssuanceView>();
  const ISSUANCE_VIEWS_KEPT = 1024;

  async function loadIssuanceView(network: NetworkRecord): Promise<CachedIssuanceView> {
    const rows = await hot.casNewestFirst.all({ networkId: network.id });
    const active = rows.find((r) => r.state === "active");
    if (!active) throw new KeyholeError("not_found", "this network has no active CA");
    const keys = await hot.sealedKeys.all({ caId: active.id });
    const lighthouses = (await hot.lighthouses.all({ networkId: network.id })).map(hostRecord);
    const revoked = await hot.revoked.all({
      networkId: network.id,
      nowMs: clock().getTime(),
    });
    return {
      revision: network.revision,
      activeCa: caRecord(active, keys.map(sealedKeyOf)),
      cas: rows.map((r) => caRecord(r, [])),
      lighthouses,
      revoked,
    };
  }

  async function insertCa(
    tx: WriteTx,
    networkId: string,
    org: string,
    ca: NewCa,
    now: Date,
  ): Promise<CaRecord> {
    const row = {
      id: ca.id,
      networkId,
      org,
      certificate: ca.certificate,
      fingerprint: ca.fingerprint,
      notBefore: ca.notBefore,
      notAfter: ca.notAfter,
      state: "active" as const,
      createdAt: now,
    };
    await tx.insert(cas).values(row);
    await tx.insert(caSealedKeys).values(
      ca.sealedKeys.map((k) => ({
        caId: ca.id,
        region: k.region,
        keyId: k.keyId,
        ciphertext: Buffer.from(k.ciphertext),
      })),
    );
    return caRecord(
      row,
      ca.sealedKeys.map((k) => ({ ...k, ciphertext: new Uint8Array(k.ciphertext) })),
    );
  }

  async function appendAll(
    tx: WriteTx,
    events: readonly AuditEventInput[],
    now: Date,
    state: TxState,
  ): Promise<AuditRowView[]> {
    const out: AuditRowView[] = [];
    const st = txStatements(db, tx);
    for (const e of events) out.push(await appendAudit(st, e, now, state));
    return out;
  }

  /** Blocks a host inside `tx`: state, certificates revoked, tokens retired. */
  async function blockInTx(tx: WriteTx, hostId: string, now: Date): Promise<string[]> {
    const [blocked] = await tx
      .update(hosts)
      .set({ state: "blocked" })
      .where(eq(hosts.id, hostId))
      .returning({ networkId: hosts.networkId });
    if (blocked) await bumpRevision(tx, blocked.networkId);
    const revoked = await tx
      .update(certificates)
      .set({ revokedAt: now })
      .where(and(eq(certificates.hostId, hostId), isNull(certificates.revokedAt)))
      .returning({ fingerprint: certificates.fingerprint });
    await txStatements(db, tx).retireTokens.run({ hostId });
    return revoked.map((r) => r.fingerprint).sort();
  }

  /**
   * The host's next token. `after` is the generation just rotated away by this transaction (renewal),
   * so no other current token can exist; without it (enrollment) any current token is retired first.
   */
  async function mintHostToken(
    tx: WriteTx,
    hostId: string,
    now: Date,
    after?: number,
  ): Promise<{ value: string; generation: number }> {
    const st = txStatements(db, tx);
    let generation: number;
    if (after !== undefined) {
      generation = after + 1;
    } else {
      await st.retireTokens.run({ hostId });
      const last = await st.lastGeneration.all({ hostId });
      generation = (last[0]?.g ?? 0) + 1;
    }
    const token = mintSecret(HOST_TOKEN_PREFIX);
    await st.insertToken.run(
      driverRow(hostTokens, {
        hash: token.hash,
        hostId,
        generation,
        state: "current",
        createdAt: now,
      }),
    );
    return { value: token.value, generation };
  }

  /** Indexed reads of a network's used addresses, for the allocator (./addresses.ts). */
  function addressBook(tx: WriteTx, networkId: string): AddressBook {
    return {
      async usedKeys(fromKey, toKey, limit) {
        const rows = await tx
          .select({ key: hostAddresses.key })
          .from(hostAddresses)
          .where(
            and(
              eq(hostAddresses.networkId, networkId),
              gte(hostAddresses.key, fromKey),
              lte(hostAddresses.key, toKey),
            ),
          )
          .orderBy(hostAddresses.key)
          .limit(limit);
        return rows.map((r) => r.key);
      },
      async hint(cidr) {
        const rows = await tx
          .select({ nextKey: addressPools.nextKey })
          .from(addressPools)
          .where(and(eq(addressPools.networkId, networkId), eq(addressPools.cidr, cidr)));
        return rows[0]?.nextKey ?? null;
      },
    };
  }

  function requireSealedKeys(ca: NewCa): void {
    if (ca.sealedKeys.length === 0) {
      throw new KeyholeError(
        "internal",
        "a CA must be stored with at least one sealed copy of its key",
      );
    }
  }

  const store: SignerStoreHandle = {
    database: db,
    writerStats: () => writer.stats(),
    walStats: () => db.walStats(),

    // ---- networks and CAs ----

    async createNetwork(input: CreateNetworkInput): Promise<NetworkRecord> {
      const cidrs = canonicalNetworkCidrs(input.cidrs);
      checkCidrsForVersion(cidrs, input.certVersion);
      requireSealedKeys(input.ca);
      return write(async (tx, now, state) => {
        const taken = await tx
          .select({ id: networks.id })
          .from(networks)
          .where(and(eq(networks.org, input.org), eq(networks.name, input.name)));
        if (taken.length > 0)
          throw nameTaken(
            `a network named ${JSON.stringify(input.name)} already exists; pick another name`,
          );
        const row = {
          id: input.id,
          org: input.org,
          name: input.name,
          cidrs,
          curve: input.curve,
          certVersion: input.certVersion,
          groups: input.groups,
          revision: 0,
          createdAt: now,
        };
        await tx.insert(networks).values(row).catch(constraintToApi);
        await insertCa(tx, input.id, input.org, input.ca, now);
        await appendAll(tx, input.audit, now, state);
        return { value: networkRecord(row) };
      });
    },

    getNetwork: (id) =>
      read("reading the network", async () => {
        const row = await selectNetwork(orm, id);
        return row ? networkRecord(row) : null;
      }),

    getNetworkForOrg: (org, id) =>
      read("reading the network", async () => {
        const row = await selectNetwork(orm, id);
        return row && row.org === org ? networkRecord(row) : null;
      }),

    listNetworks: (org) =>
      read("listing networks", async () => {
        const rows = await orm
          .select()
          .from(networks)
          .where(eq(networks.org, org))
          .orderBy(networks.createdAt, networks.id);
        return rows.map(networkRecord);
      }),

    listCas: (networkId) =>
      read("listing CAs", async () => {
        const rows = await orm
          .select()
          .from(cas)
          .where(eq(cas.networkId, networkId))
          .orderBy(desc(cas.createdAt));
        return loadCas(orm, rows);
      }),

    getActiveCa: (networkId) =>
      read("reading the CA", async () => {
        const [row] = await hot.activeCas.all({ networkId });
        if (!row) throw new KeyholeError("not_found", "this network has no active CA");
        const keys = await hot.sealedKeys.all({ caId: row.id });
        return caRecord(row, keys.map(sealedKeyOf));
      }),

    issuanceView: (network) =>
      read("reading the network's CAs, lighthouses and blocklist", async () => {
        let view = issuanceViews.get(network.id);
        if (view?.revision === network.revision) {
          issuanceViews.delete(network.id);
        } else {
          view = await loadIssuanceView(network);
          if (issuanceViews.size >= ISSUANCE_VIEWS_KEPT) {
            issuanceViews.delete(issuanceViews.keys().next().value as string);
          }
        }
        issuanceViews.set(network.id, view);
        const { activeCa, cas: all, lighthouses, revoked } = view;
        return {
          activeCa,
          lighthouses,
          caBundle: () => bundleOf(trustedOf(all, clock())),
          blocklist: () => {
            const now = clock().getTime();
            return revoked.filter((r) => r.notAfter.getTime() > now).map((r) => r.fingerprint);
          },
        };
      }),

    caBundle: (networkId) =>
      read("reading the CA bundle", async () => bundleOf(await trustedCas(networkId))),

    async rotateCa(input: RotateCaInput): Promise<CaRecord> {
      requireSealedKeys(input.ca);
      return write(async (tx, now, state) => {
        const net = await selectNetwork(tx, input.networkId);
        if (!net) throw new KeyholeError("not_found", "no such network");
        await tx
          .update(cas)
          .set({ state: input.retirePrevious ? "retired" : "previous" })
          .where(and(eq(cas.networkId, input.networkId), equalsConstant(cas.state, "active")));
        if (input.retirePrevious) {
          await tx
            .update(cas)
            .set({ state: "retired" })
            .where(and(eq(cas.networkId, input.networkId), equalsConstant(cas.state, "previous")));
        }
        const ca = await insertCa(tx, input.networkId, net.org, input.ca, now);
        await bumpRevision(tx, input.networkId);
        await appendAll(tx, input.audit, now, state);
        return { value: ca };
      });
    },

    networkView: (network) =>
      read("reading the network", async () => {
        const rows = await orm
          .select()
          .from(cas)
          .where(eq(cas.networkId, network.id))
          .orderBy(desc(cas.createdAt));
        const all = rows.map((r) => caRecord(r, []));
        const view: NetworkView = {
          id: network.id,
          org: network.org,
          name: network.name,
          cidrs: network.cidrs,
          curve: network.curve,
          certVersion: network.certVersion,
          groups: network.groups,
          cas: all.map((c) => store.caView(c)),
          caBundle: bundleOf(trustedOf(all, clock())),
          createdAt: network.createdAt.toISOString(),
        };
        return view;
      }),

    caView(ca: CaRecord): CaView {
      return {
        id: ca.id,
        fingerprint: ca.fingerprint,
        certificate: ca.certificate,
        notBefore: ca.notBefore.toISOString(),
        notAfter: ca.notAfter.toISOString(),
        state: ca.state,
      };
    },

    // ---- hosts ----

    async registerHost(input: RegisterHostInput): Promise<RegisteredHost> {
      if (!(Number.isInteger(input.certLifetimeS) && input.certLifetimeS > 0)) {
        throw new KeyholeError(
          "invalid_duration",
          "certLifetime must be a positive duration such as 720h",
        );
      }
      if (!(Number.isInteger(input.codeTtlS) && input.codeTtlS > 0)) {
        throw new KeyholeError(
          "invalid_duration",
          "codeTtl must be a positive duration such as 24h",
        );
      }
      return write(async (tx, now, state) => {
        const net = await selectNetwork(tx, input.networkId);
        if (!net) throw new KeyholeError("not_found", "no such network");
        const sameName = await tx
          .select({ id: hosts.id })
          .from(hosts)
          .where(and(eq(hosts.networkId, net.id), eq(hosts.name, input.name)));
        if (sameName.length > 0) {
          throw nameTaken(
            `a host named ${JSON.stringify(input.name)} already exists in this network; pick another name`,
          );
        }
        const addresses = await allocateHostAddresses(net.cidrs, addressBook(tx, net.id), input.ip);
        const ips = addresses.map((a) => a.address);
        const ip = ips[0];
        if (ip === undefined) throw new KeyholeError("internal", "the network has no CIDR");
        const id = newHostId();
        const row = {
          id,
          networkId: net.id,
          name: input.name,
          ip,
          groups: [...input.groups],
          lighthouse: input.lighthouse,
          staticAddrs: [...input.staticAddrs],
          state: "pending" as const,
          certLifetimeS: input.certLifetimeS,
          createdAt: now,
        };
        await tx.insert(hosts).values(row).catch(constraintToApi);
        if (input.lighthouse) await bumpRevision(tx, net.id);
        await tx
          .insert(hostAddresses)
          .values(
            addresses.map((a) => ({
              networkId: net.id,
              hostId: id,
              address: a.address,
              key: a.key,
              position: a.position,
            })),
          )
          .catch(constraintToApi);
        for (const a of addresses) {
          if (a.nextHint === null) continue;
          await tx
            .insert(addressPools)
            .values({ networkId: net.id, cidr: a.cidr, nextKey: a.nextHint })
            .onConflictDoUpdate({
              target: [addressPools.networkId, addressPools.cidr],
              set: { nextKey: a.nextHint },
            });
        }
        const code = mintSecret(ENROLLMENT_CODE_PREFIX);
        const codeExpiresAt = new Date(now.getTime() + input.codeTtlS * 1000);
        await tx
          .insert(enrollmentCodes)
          .values({ hash: code.hash, hostId: id, expiresAt: codeExpiresAt, usedAt: null });
        await appendAll(
          tx,
          input.audit.map((e) => ({
            ...e,
            detail: { ...e.detail, hostId: id, name: input.name, ip, ips },
          })),
          now,
          state,
        );
        return {
          value: {
            host: hostRecord({ ...row, org: net.org, ips: JSON.stringify(ips) }),
            enrollmentCode: code.value,
            codeExpiresAt,
          },
        };
      });
    },

    getHost: (id) =>
      read("reading the host", async () => {
        const row = await selectHost(orm, id);
        return row ? hostRecord(row) : null;
      }),

    listHosts: (networkId) =>
      read("listing hosts", async () => {
        const rows = await orm
          .select(hostColumns)
          .from(hosts)
          .innerJoin(networks, eq(hosts.networkId, networks.id))
          .where(eq(hosts.networkId, networkId))
          .orderBy(hosts.createdAt, hosts.id);
        return rows.map(hostRecord);
      }),

    listLighthouses: (networkId) =>
      read("listing lighthouses", async () =>
        (await hot.lighthouses.all({ networkId })).map(hostRecord),
      ),

    hostView: (host) =>
      read("reading the host", async () => {
        const rows = await orm
          .select({ cert: certificates, caFingerprint: cas.fingerprint })
          .from(certificates)
          .innerJoin(cas, eq(certificates.caId, cas.id))
          .where(eq(certificates.hostId, host.id))
          .orderBy(desc(certificates.notBefore), desc(certificates.createdAt));
        const view: HostView = {
          id: host.id,
          networkId: host.networkId,
          name: host.name,
          ip: host.ip,
          ips: host.ips,
          groups: host.groups,
          lighthouse: host.lighthouse,
          staticAddrs: host.staticAddrs,
          state: host.state,
          certificates: rows.map((r) => store.certificateView(certRecord(r.cert), r.caFingerprint)),
          createdAt: host.createdAt.toISOString(),
        };
        return view;
      }),

    certificateView(cert: CertificateRecord, caFingerprint: string): CertificateView {
      return {
        fingerprint: cert.fingerprint,
        certificate: cert.pem,
        notBefore: cert.notBefore.toISOString(),
        notAfter: cert.notAfter.toISOString(),
        caFingerprint,
        revoked: cert.revokedAt !== null,
      };
    },

    blockHost(hostId: string, audit: AuditEventInput[]): Promise<BlockResult> {
      return write(async (tx, now, state) => {
        const row = await selectHost(tx, hostId);
        if (!row) throw new KeyholeError("not_found", "no such host");
        const revokedFingerprints = await blockInTx(tx, hostId, now);
        await appendAll(
          tx,
          audit.map((e) => ({
            ...e,
            detail: { ...e.detail, hostId, revoked: revokedFingerprints },
          })),
          now,
          state,
        );
        return { value: { host: hostRecord({ ...row, state: "blocked" }), revokedFingerprints } };
      });
    },

    blocklist: (networkId) =>
      read("reading the blocklist", async () => {
        const rows = await hot.revoked.all({ networkId, nowMs: clock().getTime() });
        return rows.map((r) => r.fingerprint);
      }),

    // ---- credentials ----

    authenticateEnrollmentCode: (code) =>
      read("checking the enrollment code", async () => {
        const [found] = await hot.enrollmentCode.all({ hash: hashSecret(code) });
        if (
          !found ||
          found.code.usedAt !== null ||
          found.code.expiresAt.getTime() <= clock().getTime()
        ) {
          throw new KeyholeError("invalid_enrollment_code", INVALID_CODE);
        }
        if (found.host.state === "blocked") throw hostBlocked();
        return {
          host: hostRecord(found.host),
          network: networkRecord(found.network),
          generation: 0,
        };
      }),

    async authenticateHostToken(
      token: string,
      trace: { traceId: string },
    ): Promise<HostCredential> {
      const hash = hashSecret(token);
      const found = await read("checking the host token", async () => {
        const rows = await orm
          .select({ token: hostTokens, host: hostColumns, network: networks })
          .from(hostTokens)
          .innerJoin(hosts, eq(hostTokens.hostId, hosts.id))
          .innerJoin(networks, eq(hosts.networkId, networks.id))
          .where(eq(hostTokens.hash, hash));
        return rows[0];
      });
      if (!found) throw new KeyholeError("invalid_host_token", INVALID_TOKEN);
      if (found.host.state === "blocked") throw hostBlocked();
      if (found.token.state === "rotated") {
        await write(async (tx, now, state) => ({
          committedError: await blockForReuse(
            tx,
            found.host,
            found.token.generation,
            trace,
            now,
            state,
          ),
        }));
      }
      return {
        host: hostRecord(found.host),
        network: networkRecord(found.network),
        generation: found.token.generation,
      };
    },

    // ---- issuance ----

    recordIssuance(input: IssuanceInput): Promise<IssuanceResult> {
      const cert = input.certificate;
      const cred = input.credential;
      if ((cred.kind === "direct") !== (cert.hostId === null)) {
        return Promise.reject(
          new KeyholeError(
            "internal",
            "direct signing records no host; code and token issuance record their host",
          ),
        );
      }
      return write(async (tx, now, state): Promise<JobResult<IssuanceResult>> => {
        const idem = input.idempotency;
        const st = txStatements(db, tx);
        if (idem) {
          const prior = await st.findIdempotency.all({ org: idem.org, key: idem.key });
          const first = prior[0];
          if (first) {
            if (first.requestHash !== idem.requestHash) throw idempotencyConflict();
            return { value: { replayed: true, response: first.response } };
          }
        }
        let host: EnrolledHost | null = null;
        let hostToken: string | null = null;
        if (cred.kind === "enrollment_code") {
          const used = await st.consumeCode.all({
            hash: hashSecret(cred.code),
            now: now.getTime(),
          });
          if (used[0]?.hostId !== cert.hostId || cert.hostId === null) {
            throw new KeyholeError("invalid_enrollment_code", INVALID_CODE);
          }
          host = await enrolledHost(tx, cert.hostId);
          hostToken = (await mintHostToken(tx, cert.hostId, now)).value;
        } else if (cred.kind === "host_token") {
          const hash = hashSecret(cred.token);
          const rotated = await st.rotateToken.all({ hash });
          if (rotated.length === 0) {
            const known = (await tx.select().from(hostTokens).where(eq(hostTokens.hash, hash)))[0];
            const knownHost = known ? await selectHost(tx, known.hostId) : undefined;
            if (!known || !knownHost) throw new KeyholeError("invalid_host_token", INVALID_TOKEN);
            if (knownHost.state === "blocked") throw hostBlocked();
            const trace = { traceId: input.audit[0]?.traceId ?? "0".repeat(32) };
            return {
              committedError: await blockForReuse(
                tx,
                knownHost,
                known.generation,
                trace,
                now,
                state,
              ),
            };
          }
          const presented = rotated[0];
          if (presented?.hostId !== cert.hostId || cert.hostId === null) {
            throw new KeyholeError("invalid_host_token", "the host token belongs to another host");
          }
          host = await enrolledHost(tx, cert.hostId);
          hostToken = (await mintHostToken(tx, cert.hostId, now, presented.generation)).value;
        }
        const certRow = {
          fingerprint: cert.fingerprint,
          hostId: cert.hostId,
          networkId: cert.networkId,
          caId: cert.caId,
          pem: cert.pem,
          notBefore: cert.notBefore,
          notAfter: cert.notAfter,
          revokedAt: null,
          idempotencyKey: idem ? `${idem.org}\n${idem.key}` : null,
          createdAt: now,
        };
        state.pendingCertificates.push(certRow);
        const auditRows = await appendAll(tx, input.audit, now, state);
        if (idem) {
          await st.insertIdempotency.run(
            driverRow(idempotency, {
              org: idem.org,
              key: idem.key,
              requestHash: idem.requestHash,
              response: idem.response ?? null,
              createdAt: now,
            }),
          );
        }
        return {
          value: { replayed: false, certificate: certRecord(certRow), hostToken, host, auditRows },
        };
      }, true);
    },

    findIdempotentResponse: (org, key, requestHash) =>
      read("reading the idempotency record", async () => {
        const [first] = await hot.idempotency.all({ org, key });
        if (!first) return null;
        if (first.requestHash !== requestHash) throw idempotencyConflict();
        return first.response;
      }),

    getCertificate: (fingerprint) =>
      read("reading the certificate", async () => {
        const [row] = await hot.certificate.all({ fingerprint });
        return row ? certRecord(row) : null;
      }),

    countCertificatesIssuedAt: (hostId, notBefore) =>
      read("reading the host's certificates", async () => {
        const rows = await orm
          .select({ n: count() })
          .from(certificates)
          .where(and(eq(certificates.hostId, hostId), eq(certificates.notBefore, notBefore)));
        return rows[0]?.n ?? 0;
      }),

    listCertificates: (hostId) =>
      read("listing certificates", async () => {
        const rows = await orm
          .select()
          .from(certificates)
          .where(eq(certificates.hostId, hostId))
          .orderBy(desc(certificates.notBefore), desc(certificates.createdAt));
        return rows.map(certRecord);
      }),

    // ---- audit ----

    recordAudit(events: AuditEventInput[]): Promise<AuditRowView[]> {
      if (events.length === 0) return Promise.resolve([]);
      return write(
        async (tx, now, state) => ({ value: await appendAll(tx, events, now, state) }),
        true,
      );
    },

    listAudit: (org, filter: AuditFilter) =>
      read("reading the audit log", async () => {
        const limit = Math.max(1, Math.min(1000, Math.floor(filter.limit)));
        const conditions = [eq(auditEvents.org, org)];
        if (filter.networkId !== undefined)
          conditions.push(eq(auditEvents.networkId, filter.networkId));
        if (filter.traceId !== undefined) conditions.push(eq(auditEvents.traceId, filter.traceId));
        if (filter.since !== undefined) conditions.push(gte(auditEvents.at, filter.since));
        if (filter.until !== undefined) conditions.push(lte(auditEvents.at, filter.until));
        const rows = await orm
          .select()
          .from(auditEvents)
          .where(and(...conditions))
          .orderBy(desc(auditEvents.seq))
          .limit(limit);
        return rows.map(toAuditView);
      }),

    verifyAuditChain: () => read("verifying the audit chain", () => verifyChain(orm)),

    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      await writer.drain();
      await db.close();
    },
  };

  /** Inserts the certificates and audit rows jobs appended (see `write`). */
  async function flushPending(tx: WriteTx, state: TxState): Promise<void> {
    const st = txStatements(db, tx);
    const certs = state.pendingCertificates as (typeof certificates.$inferInsert)[];
    state.pendingCertificates = [];
    if (st.rowByRow) {
      for (const c of certs) {
        await st.insertCertificate.run(driverRow(certificates, c)).catch(constraintToApi);
      }
    } else {
      for (let i = 0; i < certs.length; i += 200) {
        await tx
          .insert(certificates)
          .values(certs.slice(i, i + 200))
          .catch(constraintToApi);
      }
    }
    await flushPendingAudit(tx, st, state);
  }

  async function trustedCas(networkId: string): Promise<CaRecord[]> {
    const rows = await hot.casNewestFirst.all({ networkId });
    return trustedOf(
      rows.map((r) => caRecord(r, [])),
      clock(),
    );
  }

  /** Marks the host enrolled (one statement) unless it is blocked or gone. */
  async function enrolledHost(tx: WriteTx, hostId: string): Promise<EnrolledHost> {
    const updated = await txStatements(db, tx).markEnrolled.all({ hostId });
    const row = updated[0];
    if (!row) {
      if (await selectHost(tx, hostId)) throw hostBlocked();
      throw new KeyholeError("not_found", "no such host");
    }
    return row;
  }

  /** A rotated token came back: block the host, audit it, and report reuse once committed. */
  async function blockForReuse(
    tx: WriteTx,
    host: HostRow,
    generation: number,
    trace: { traceId: string },
    now: Date,
    state: TxState,
  ): Promise<KeyholeError> {
    // Certificates recorded earlier in this batch must exist before the host's are revoked.
    await flushPending(tx, state);
    const current = await selectHost(tx, host.id);
    if (current && current.state !== "blocked") {
      const revoked = await blockInTx(tx, host.id, now);
      await appendAudit(
        txStatements(db, tx),
        {
          traceId: trace.traceId,
          actor: `host:${host.id}`,
          org: host.org,
          networkId: host.networkId,
          action: "host.token_reused",
          outcome: "denied",
          detail: { hostId: host.id, tokenGeneration: generation, blocked: true, revoked },
        },
        now,
        state,
      );
    }
    return new KeyholeError(
      "host_token_reused",
      "this host token was already used and replaced, so a copy of it may exist; the host is now blocked and an admin must register the machine as a new host",
    );
  }

  return store;
}

/** Active and previous CAs that have not expired, active first, newest first. */
function trustedOf(all: CaRecord[], now: Date): CaRecord[] {
  return all
    .filter(
      (c) =>
        (c.state === "active" || c.state === "previous") && c.notAfter.getTime() > now.getTime(),
    )
    .sort((a, b) =>
      a.state === b.state
        ? b.createdAt.getTime() - a.createdAt.getTime()
        : a.state === "active"
          ? -1
          : 1,
    );
}

function sealedKeyOf(k: typeof caSealedKeys.$inferSelect): SealedCaKey {
  return { region: k.region, keyId: k.keyId, ciphertext: new Uint8Array(k.ciphertext) };
}

function bundleOf(trusted: CaRecord[]): string {
  return trusted
    .map((c) => (c.certificate.endsWith("\n") ? c.certificate : `${c.certificate}\n`))
    .join("");
}

/** The host's addresses from its row; a row without any (never expected) falls back to `ip`. */
function ipsOf(row: HostRow): string[] {
  const parsed: unknown = row.ips === null ? [] : JSON.parse(row.ips);
  const list = Array.isArray(parsed)
    ? parsed.filter((x): x is string => typeof x === "string")
    : [];
  return list.length > 0 ? list : [row.ip];
}

function newHostId(): string {
  return `host_${crypto.randomUUID().replaceAll("-", "")}`;
}

function nameTaken(message: string): KeyholeError {
  return new KeyholeError("name_taken", message);
}

function hostBlocked(): KeyholeError {
  return new KeyholeError(
    "host_blocked",
    "this host is blocked: its certificates are revoked and it cannot enroll or renew; an admin must register the machine as a new host",
  );
}

function idempotencyConflict(): KeyholeError {
  return new KeyholeError(
    "idempotency_conflict",
    "this Idempotency-Key was already used for a different request; use a new key for a new request",
  );
}

/** Maps a UNIQUE violation the pre-checks did not catch to its API code; anything else is rethrown. */
function constraintToApi(e: unknown): never {
  const code = libsqlCode(e) ?? "";
  let msg = "";
  for (let cur: unknown = e, i = 0; cur instanceof Error && i < 5; cur = cur.cause, i++)
    msg += ` ${cur.message}`;
  if (code.startsWith("SQLITE_CONSTRAINT")) {
    if (/hosts\.network_id, hosts\.ip|host_addresses\.network_id, host_addresses\.key/.test(msg))
      throw new KeyholeError("ip_taken", "that address is already used", undefined, { cause: e });
    if (/hosts\.network_id, hosts\.name|networks\.org, networks\.name/.test(msg)) {
      throw new KeyholeError("name_taken", "that name is already used", undefined, { cause: e });
    }
    if (/certificates\.idempotency_key/.test(msg)) throw idempotencyConflict();
    if (/certificates\.fingerprint/.test(msg)) throw sameCertificateTooSoon(e);
    throw new KeyholeError("internal", "a record with this identity already exists", undefined, {
      cause: e,
    });
  }
  throw e;
}
