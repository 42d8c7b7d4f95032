/**
 * The public API as data: every route the edge relays, who may call it, which body or query schema
 * (from core/contract) it must satisfy, and which rate limits apply. The app and the OpenAPI
 * document are both built from this one table, so they cannot disagree.
 */
import { z } from "zod";
import {
  AuditQuery,
  CreateNetworkBody,
  EnrollBody,
  RegisterHostBody,
  RenewBody,
  RotateCaBody,
  type Scope,
  SignBody,
} from "../core/contract/index.ts";
import type { RateBucket } from "./limiter.ts";

/**
 * How a route authenticates at the edge. `oidc`: a verified OIDC JWT with the scope (and MFA).
 * `enrollment`: the code is in the body; the signer checks it. `hostToken`: a bearer host token,
 * checked for shape only; the signer checks it. `oidcOrHostToken`: a JWT is verified, anything else
 * is treated as a host token.
 */
export type RouteAuth =
  | { kind: "none" }
  | { kind: "oidc"; scope: Scope; mfa?: boolean }
  | { kind: "enrollment" }
  | { kind: "hostToken" }
  | { kind: "oidcOrHostToken"; scope: Scope };

export interface RouteSpec {
  method: "GET" | "POST";
  /** Hono path with `:id` parameters. */
  path: string;
  summary: string;
  auth: RouteAuth;
  body?: z.ZodType;
  /** When true an empty body counts as `{}` (every field optional). */
  bodyOptional?: boolean;
  query?: z.ZodType;
  /** Buckets checked, in order; `network` keys on the `:id` parameter. */
  limits: RateBucket[];
}

/** Ids the signer hands out: opaque, URL-safe. Anything else is refused before relaying. */
export const ResourceIdSchema = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[A-Za-z0-9_-]+$/, "an id is letters, digits, '_' and '-'");

/** A client's Idempotency-Key: printable, short. */
export const IdempotencyKeySchema = z
  .string()
  .min(8)
  .max(128)
  .regex(/^[A-Za-z0-9._:-]+$/, "letters, digits, '.', '_', ':' and '-', 8 to 128 characters");

export const ROUTES: readonly RouteSpec[] = [
  {
    method: "POST",
    path: "/v1/networks",
    summary: "Create a network and its CA (needs networks:write and a multi-factor login)",
    auth: { kind: "oidc", scope: "networks:write", mfa: true },
    body: CreateNetworkBody,
    limits: ["subject"],
  },
  {
    method: "GET",
    path: "/v1/networks",
    summary: "List networks with their CA bundles",
    auth: { kind: "oidc", scope: "hosts:read" },
    limits: ["subject"],
  },
  {
    method: "GET",
    path: "/v1/networks/:id",
    summary: "One network with its CA bundle",
    auth: { kind: "oidc", scope: "hosts:read" },
    limits: ["subject"],
  },
  {
    method: "POST",
    path: "/v1/networks/:id/ca-rotations",
    summary: "Rotate the network's CA (needs networks:write and a multi-factor login)",
    auth: { kind: "oidc", scope: "networks:write", mfa: true },
    body: RotateCaBody,
    bodyOptional: true,
    limits: ["subject", "network"],
  },
  {
    method: "POST",
    path: "/v1/networks/:id/hosts",
    summary: "Register a host; returns a one-time enrollment code",
    auth: { kind: "oidc", scope: "hosts:write" },
    body: RegisterHostBody,
    limits: ["subject"],
  },
  {
    method: "GET",
    path: "/v1/networks/:id/hosts",
    summary: "Hosts of a network with their certificates",
    auth: { kind: "oidc", scope: "hosts:read" },
    limits: ["subject"],
  },
  {
    method: "GET",
    path: "/v1/hosts/:id",
    summary: "One host with its certificates",
    auth: { kind: "oidc", scope: "hosts:read" },
    limits: ["subject"],
  },
  {
    method: "POST",
    path: "/v1/hosts/:id/block",
    summary: "Block a host: its certificates go on the blocklist and renewals are refused",
    auth: { kind: "oidc", scope: "hosts:write" },
    limits: ["subject"],
  },
  {
    method: "GET",
    path: "/v1/networks/:id/blocklist",
    summary: "Fingerprints for pki.blocklist (hosts:read, or a host token of the network)",
    auth: { kind: "oidcOrHostToken", scope: "hosts:read" },
    limits: ["address"],
  },
  {
    method: "POST",
    path: "/v1/networks/:id/sign",
    summary: "Sign a host certificate for a public key, like nebula-cert sign -in-pub",
    auth: { kind: "oidc", scope: "certs:sign" },
    body: SignBody,
    limits: ["subject", "network"],
  },
  {
    method: "POST",
    path: "/v1/enroll",
    summary: "Trade a one-time enrollment code and a public key for a host certificate",
    auth: { kind: "enrollment" },
    body: EnrollBody,
    limits: ["address"],
  },
  {
    method: "POST",
    path: "/v1/renew",
    summary: "Renew a host certificate with the host token (the token is rotated)",
    auth: { kind: "hostToken" },
    body: RenewBody,
    bodyOptional: true,
    limits: ["address"],
  },
  {
    method: "GET",
    path: "/v1/audit",
    summary: "Audit rows, filtered by network, trace id or time",
    auth: { kind: "oidc", scope: "audit:read" },
    query: AuditQuery,
    limits: ["subject"],
  },
  {
    method: "GET",
    path: "/v1/audit/verify",
    summary: "Verify the audit hash chain",
    auth: { kind: "oidc", scope: "audit:read" },
    limits: ["subject"],
  },
];
