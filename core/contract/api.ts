/**
 * The edge-signer contract, typed once. The edge validates every body against these schemas before
 * relaying; the signer validates again (it trusts nothing the edge says about the caller). Response
 * shapes are the types both sides and the CLI read.
 */
import { z } from "zod";

/** Largest JSON body either side accepts. A Nebula public key PEM is ~100 bytes; 64 KiB is generous. */
export const MAX_BODY_BYTES = 64 * 1024;
/** Largest bearer credential (JWT, code or host token) accepted in a header. */
export const MAX_CREDENTIAL_BYTES = 8 * 1024;

/** Headers the edge relays to the signer. The signer re-checks `authorization` itself. */
export const RELAY_HEADERS = [
  "authorization",
  "traceparent",
  "idempotency-key",
  "content-type",
] as const;
export const TRACE_ID_HEADER = "x-request-id";
/** Set by the edge on relayed requests: the client address its rate limits used (informational only). */
export const CLIENT_ADDRESS_HEADER = "x-keyhole-client-address";

export const SCOPES = [
  "networks:write",
  "hosts:write",
  "hosts:read",
  "certs:sign",
  "audit:read",
] as const;
export type Scope = (typeof SCOPES)[number];

const printable = /^\P{Cc}*$/u;
export const NameSchema = z
  .string()
  .min(1)
  .max(64)
  .regex(
    /^[A-Za-z0-9][A-Za-z0-9._-]*$/,
    "letters, digits, '.', '_' and '-', starting with a letter or digit",
  );
export const NetworkNameSchema = z
  .string()
  .min(1)
  .max(64)
  .regex(printable, "no control characters");
export const GroupSchema = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[A-Za-z0-9][A-Za-z0-9._:-]*$/, "letters, digits, '.', '_', ':' and '-'");
/** A CIDR such as 10.1.0.0/16 or fd00::/64 (checked precisely by core/cert/ip.ts). */
export const CidrSchema = z.string().min(3).max(64);
/** An overlay address with its prefix, 10.1.0.7/16, or a bare address. */
export const IpSchema = z.string().min(2).max(64);
/** Go-style duration: "8760h", "1h30m". */
export const DurationSchema = z
  .string()
  .min(2)
  .max(32)
  .regex(/^(\d+(\.\d+)?[hms])+$/, 'like "8760h"');
export const PublicKeyPemSchema = z.string().min(32).max(4096);
export const CurveSchema = z.enum(["25519", "P256"]);
export const CertVersionSchema = z.union([z.literal(1), z.literal(2)]);
/** host:port for a lighthouse or relay's underlay address. */
export const UnderlayAddrSchema = z
  .string()
  .min(3)
  .max(255)
  .regex(/^[A-Za-z0-9.:[\]-]+:\d{1,5}$/, "host:port");

export const CreateNetworkBody = z.strictObject({
  name: NetworkNameSchema,
  cidrs: z.array(CidrSchema).min(1).max(8),
  curve: CurveSchema.default("25519"),
  certVersion: CertVersionSchema.default(2),
  caLifetime: DurationSchema.default("87600h"),
  /** When set, the CA is constrained to these groups and host certificates may use only them. */
  groups: z.array(GroupSchema).max(256).optional(),
});
export type CreateNetworkBody = z.infer<typeof CreateNetworkBody>;

export const RotateCaBody = z.strictObject({
  caLifetime: DurationSchema.optional(),
  /** Retire the previous CA (drop it from the bundle) now instead of when it expires. */
  retirePrevious: z.boolean().default(false),
});
export type RotateCaBody = z.infer<typeof RotateCaBody>;

export const RegisterHostBody = z.strictObject({
  name: NameSchema,
  ip: IpSchema.optional(),
  groups: z.array(GroupSchema).max(64).default([]),
  lighthouse: z.boolean().default(false),
  staticAddrs: z.array(UnderlayAddrSchema).max(16).default([]),
  /** Lifetime of the enrollment code. */
  codeTtl: DurationSchema.default("24h"),
  /** Lifetime of each host certificate issued to this host. */
  certLifetime: DurationSchema.default("720h"),
});
export type RegisterHostBody = z.infer<typeof RegisterHostBody>;

export const EnrollBody = z.strictObject({
  code: z.string().min(8).max(128),
  publicKey: PublicKeyPemSchema,
});
export type EnrollBody = z.infer<typeof EnrollBody>;

export const RenewBody = z.strictObject({
  /** New public key; the current one is reused when absent. */
  publicKey: PublicKeyPemSchema.optional(),
});
export type RenewBody = z.infer<typeof RenewBody>;

export const SignBody = z.strictObject({
  publicKey: PublicKeyPemSchema,
  name: NameSchema,
  networks: z.array(IpSchema).min(1).max(8),
  groups: z.array(GroupSchema).max(64).default([]),
  unsafeNetworks: z.array(CidrSchema).max(64).default([]),
  duration: DurationSchema.default("720h"),
});
export type SignBody = z.infer<typeof SignBody>;

export const AuditQuery = z.strictObject({
  networkId: z.string().max(64).optional(),
  traceId: z
    .string()
    .regex(/^[0-9a-f]{32}$/)
    .optional(),
  since: z.iso.datetime().optional(),
  until: z.iso.datetime().optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
});
export type AuditQuery = z.infer<typeof AuditQuery>;

// ---- responses ----

export interface CaView {
  id: string;
  fingerprint: string;
  certificate: string;
  notBefore: string;
  notAfter: string;
  state: "active" | "previous" | "retired";
}

export interface NetworkView {
  id: string;
  org: string;
  name: string;
  cidrs: string[];
  curve: "25519" | "P256";
  certVersion: 1 | 2;
  groups: string[] | null;
  cas: CaView[];
  /** PEM of every trusted (active and previous, unexpired) CA: what `pki.ca` needs. */
  caBundle: string;
  createdAt: string;
}

export interface CertificateView {
  fingerprint: string;
  certificate: string;
  notBefore: string;
  notAfter: string;
  caFingerprint: string;
  revoked: boolean;
}

export interface HostView {
  id: string;
  networkId: string;
  name: string;
  /** The first of `ips` (its address in the network's first CIDR), kept for older clients. */
  ip: string;
  /** Every overlay address, one per network CIDR, with prefixes: what its certificate carries. */
  ips: string[];
  groups: string[];
  lighthouse: boolean;
  staticAddrs: string[];
  state: "pending" | "enrolled" | "blocked";
  certificates: CertificateView[];
  createdAt: string;
}

export interface RegisterHostResponse {
  host: HostView;
  /** One-time enrollment code; shown once, stored hashed. */
  enrollmentCode: string;
  codeExpiresAt: string;
}

/** What a nebula config needs besides the PKI files. */
export interface NebulaConfigHints {
  network: { id: string; name: string; cidrs: string[] };
  isLighthouse: boolean;
  listenPort: number;
  lighthouses: { ip: string; staticAddrs: string[] }[];
  staticHostMap: Record<string, string[]>;
  blocklist: string[];
}

export interface IssuedCertificate {
  hostId: string;
  certificate: string;
  fingerprint: string;
  notAfter: string;
  caBundle: string;
  /** Host token for /v1/renew; rotated on every renewal. Shown once. */
  hostToken: string;
  config: NebulaConfigHints;
}

export interface SignResponse {
  certificate: string;
  fingerprint: string;
  notBefore: string;
  notAfter: string;
  caFingerprint: string;
}

export interface BlocklistResponse {
  networkId: string;
  fingerprints: string[];
  /** PEM of every trusted CA, so a host learns a rotated CA without renewing (`pki.ca`). */
  caBundle: string;
}

export interface AuditRowView {
  seq: number;
  id: string;
  at: string;
  traceId: string;
  actor: string;
  org: string;
  networkId: string | null;
  action: string;
  outcome: "ok" | "denied" | "error";
  region: string | null;
  keyId: string | null;
  kmsRequestIds: string[];
  certFingerprint: string | null;
  detail: Record<string, unknown>;
  hash: string;
}

export interface HealthView {
  status: "ok" | "degraded" | "down";
  role: "edge" | "signer";
  region?: string;
  regions?: Record<string, { status: "ok" | "down"; latencyMs?: number; error?: string }>;
  version: string;
}
