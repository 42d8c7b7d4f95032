#!/usr/bin/env node
import { resolve } from "node:path";
// Runs one TypeScript entry file under Node (used by npm scripts such as `bench`).
import { pathToFileURL } from "node:url";
import { register } from "tsx/esm/api";

register();
const [entry, ...rest] = process.argv.slice(2);
if (!entry) {
  console.error("usage: run-ts.mjs <file.ts> [args...]");
  process.exit(2);
}
process.argv = [process.argv[0] ?? "node", entry, ...rest];
await import(pathToFileURL(resolve(entry)).href);
