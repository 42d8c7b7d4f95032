/** The edge in workerd for tests: the same runner the local stack uses (edge/local.ts). */
export * from "../../edge/local.ts";
