/**
 * The signer's tables, for drizzle-orm over libSQL. snake_case columns, camelCase keys. Times are
 * integer milliseconds since the epoch (so expiry checks are plain integer comparisons in SQL);
 * lists are JSON text. Secrets appear only as sha256 hex. Migrations in db/migrations are generated
 * from this file with `npx drizzle-kit generate` and applied by db/client.ts at start.
 */
import { sql } from "drizzle-orm";
import {
  blob,
  check,
  index,
  integer,
  primaryKey,
  sqliteTable,
  text,
  uniqueIndex,
} from "drizzle-orm/sqlite-core";

const createdAt = () =>
  integer("created_at", { mode: "timestamp_ms" })
    .notNull()
    .default(sql`(cast(unixepoch('subsec') * 1000 as integer))`);

export const networks = sqliteTable(
  "networks",
  {
    id: text("id").primaryKey(),
    org: text("org").notNull(),
    name: text("name").notNull(),
    cidrs: text("cidrs", { mode: "json" }).$type<string[]>().notNull(),
    curve: text("curve", { enum: ["25519", "P256"] }).notNull(),
    certVersion: integer("cert_version").$type<1 | 2>().notNull(),
    groups: text("groups", { mode: "json" }).$type<string[] | null>(),
    /**
     * Bumped in the transaction of every change to what an issuance reads besides the host: CAs and
     * their sealed keys, lighthouses, revocations. A signer keeps those per network in memory and
     * reads them again when the revision it sees with the credential has moved.
     */
    revision: integer("revision").notNull().default(0),
    createdAt: createdAt(),
  },
  (t) => [
    uniqueIndex("networks_org_name").on(t.org, t.name),
    check("networks_curve", sql`${t.curve} in ('25519', 'P256')`),
    check("networks_cert_version", sql`${t.certVersion} in (1, 2)`),
  ],
);

export const cas = sqliteTable(
  "cas",
  {
    id: text("id").primaryKey(),
    networkId: text("network_id")
      .notNull()
      .references(() => networks.id),
    org: text("org").notNull(),
    certificate: text("certificate").notNull(),
    fingerprint: text("fingerprint").notNull().unique(),
    notBefore: integer("not_before", { mode: "timestamp_ms" }).notNull(),
    notAfter: integer("not_after", { mode: "timestamp_ms" }).notNull(),
    state: text("state", { enum: ["active", "previous", "retired"] }).notNull(),
    createdAt: createdAt(),
  },
  (t) => [
    index("cas_network").on(t.networkId),
    check("cas_state", sql`${t.state} in ('active', 'previous', 'retired')`),
    // at most one active CA per network
    uniqueIndex("cas_one_active").on(t.networkId).where(sql`state = 'active'`),
  ],
);

export const caSealedKeys = sqliteTable(
  "ca_sealed_keys",
  {
    caId: text("ca_id")
      .notNull()
      .references(() => cas.id),
    region: text("region").notNull(),
    keyId: text("key_id").notNull(),
    ciphertext: blob("ciphertext", { mode: "buffer" }).notNull(),
  },
  (t) => [primaryKey({ columns: [t.caId, t.region] })],
);

export const hosts = sqliteTable(
  "hosts",
  {
    id: text("id").primaryKey(),
    networkId: text("network_id")
      .notNull()
      .references(() => networks.id),
    name: text("name").notNull(),
    ip: text("ip").notNull(),
    groups: text("groups", { mode: "json" }).$type<string[]>().notNull(),
    lighthouse: integer("lighthouse", { mode: "boolean" }).notNull(),
    staticAddrs: text("static_addrs", { mode: "json" }).$type<string[]>().notNull(),
    state: text("state", { enum: ["pending", "enrolled", "blocked"] }).notNull(),
    certLifetimeS: integer("cert_lifetime_s").notNull(),
    createdAt: createdAt(),
  },
  (t) => [
    uniqueIndex("hosts_network_name").on(t.networkId, t.name),
    uniqueIndex("hosts_network_ip").on(t.networkId, t.ip),
    check("hosts_state", sql`${t.state} in ('pending', 'enrolled', 'blocked')`),
    // enrollment reads the lighthouses of a network on every request: only those rows are indexed
    index("hosts_network_lighthouses").on(t.networkId).where(sql`lighthouse = 1`),
  ],
);

/**
 * Every overlay address of a host: one per network CIDR (dual stack: one IPv4 and one IPv6). `key`
 * is the address as fixed-width hex behind its family ("4" + 8 digits, "6" + 32 digits), so text order
 * is numeric order within a family and the lowest free address is found with an indexed range read.
 */
export const hostAddresses = sqliteTable(
  "host_addresses",
  {
    networkId: text("network_id")
      .notNull()
      .references(() => networks.id),
    hostId: text("host_id")
      .notNull()
      .references(() => hosts.id),
    /** With the prefix of the network CIDR that holds it: "10.1.0.7/16", "fd00::7/64". */
    address: text("address").notNull(),
    key: text("key").notNull(),
    /** Index of the network CIDR the address comes from: the order of the certificate's networks. */
    position: integer("position").notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.networkId, t.key] }),
    uniqueIndex("host_addresses_host").on(t.hostId, t.position),
  ],
);

/**
 * Where the search for a network CIDR's lowest free address starts: every address of the CIDR below
 * `nextKey` is taken. Moved forward by each allocation, so registering a host reads a handful of rows
 * however many hosts the network has. A missing row means "start at the bottom of the CIDR".
 */
export const addressPools = sqliteTable(
  "address_pools",
  {
    networkId: text("network_id")
      .notNull()
      .references(() => networks.id),
    cidr: text("cidr").notNull(),
    nextKey: text("next_key").notNull(),
  },
  (t) => [primaryKey({ columns: [t.networkId, t.cidr] })],
);

export const enrollmentCodes = sqliteTable(
  "enrollment_codes",
  {
    /** sha256 hex of the code. */
    hash: text("hash").primaryKey(),
    hostId: text("host_id")
      .notNull()
      .references(() => hosts.id),
    expiresAt: integer("expires_at", { mode: "timestamp_ms" }).notNull(),
    usedAt: integer("used_at", { mode: "timestamp_ms" }),
  },
  (t) => [index("enrollment_codes_host").on(t.hostId)],
);

export const hostTokens = sqliteTable(
  "host_tokens",
  {
    /** sha256 hex of the token. */
    hash: text("hash").primaryKey(),
    hostId: text("host_id")
      .notNull()
      .references(() => hosts.id),
    generation: integer("generation").notNull(),
    state: text("state", { enum: ["current", "rotated"] }).notNull(),
    createdAt: createdAt(),
  },
  (t) => [
    index("host_tokens_host").on(t.hostId),
    check("host_tokens_state", sql`${t.state} in ('current', 'rotated')`),
    // at most one current token per host
    uniqueIndex("host_tokens_one_current").on(t.hostId).where(sql`state = 'current'`),
  ],
);

export const certificates = sqliteTable(
  "certificates",
  {
    fingerprint: text("fingerprint").primaryKey(),
    hostId: text("host_id").references(() => hosts.id),
    networkId: text("network_id")
      .notNull()
      .references(() => networks.id),
    caId: text("ca_id")
      .notNull()
      .references(() => cas.id),
    pem: text("pem").notNull(),
    notBefore: integer("not_before", { mode: "timestamp_ms" }).notNull(),
    notAfter: integer("not_after", { mode: "timestamp_ms" }).notNull(),
    revokedAt: integer("revoked_at", { mode: "timestamp_ms" }),
    /** "<org>\n<Idempotency-Key>": unique, so one key never issues twice. */
    idempotencyKey: text("idempotency_key").unique(),
    createdAt: createdAt(),
  },
  (t) => [
    index("certificates_host").on(t.hostId),
    index("certificates_network_revoked").on(t.networkId, t.revokedAt),
  ],
);

export const idempotency = sqliteTable(
  "idempotency",
  {
    org: text("org").notNull(),
    key: text("key").notNull(),
    requestHash: text("request_hash").notNull(),
    response: text("response", { mode: "json" }).notNull(),
    createdAt: createdAt(),
  },
  (t) => [primaryKey({ columns: [t.org, t.key] })],
);

export const auditEvents = sqliteTable(
  "audit_events",
  {
    seq: integer("seq").primaryKey({ autoIncrement: true }),
    id: text("id").notNull().unique(),
    at: integer("at", { mode: "timestamp_ms" }).notNull(),
    traceId: text("trace_id").notNull(),
    actor: text("actor").notNull(),
    org: text("org").notNull(),
    networkId: text("network_id"),
    action: text("action").notNull(),
    outcome: text("outcome", { enum: ["ok", "denied", "error"] }).notNull(),
    region: text("region"),
    keyId: text("key_id"),
    kmsRequestIds: text("kms_request_ids", { mode: "json" }).$type<string[]>().notNull(),
    certFingerprint: text("cert_fingerprint"),
    detail: text("detail", { mode: "json" }).$type<Record<string, unknown>>().notNull(),
    prevHash: text("prev_hash").notNull(),
    hash: text("hash").notNull(),
  },
  (t) => [
    index("audit_org_at").on(t.org, t.at),
    check("audit_outcome", sql`${t.outcome} in ('ok', 'denied', 'error')`),
    index("audit_trace").on(t.traceId),
    index("audit_network_at").on(t.networkId, t.at),
  ],
);
