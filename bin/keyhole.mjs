#!/usr/bin/env node
// The `keyhole` command. Sources are TypeScript; tsx loads them so the bin works right after `npm ci`.
import { register } from "tsx/esm/api";

register();
const { main } = await import("../cli/main.ts");
process.exitCode = await main(process.argv.slice(2));
