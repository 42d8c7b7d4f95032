/**
 * The signer runs under Bun, so the custody suites run there too (starts: Bun's test runner as a
 * child process, which starts its own moto_server regions). Bun rewrites the `vitest` imports to
 * bun:test, so the very same files are the proof on both runtimes.
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { expect, it } from "vitest";
import { motoServer } from "../../test/support/moto.ts";
import { describeWith, REPO_ROOT, type Tool } from "../../test/support/tools.ts";

const bunPath = resolve(REPO_ROOT, "node_modules/.bin/bun");
const bun: Tool = {
  name: "bun",
  path: bunPath,
  available: existsSync(bunPath),
  missing: `bun not found at ${bunPath}. Run \`npm ci\` (bun is a dev dependency).`,
};
const SUITES = ["local.test.ts", "config.test.ts", "aws.test.ts"].map((f) => `signer/custody/${f}`);

// Under Bun itself this file would start Bun again: only Node's runner runs it.
if (process.versions.bun === undefined) {
  describeWith([bun, motoServer], "custody suites under Bun", () => {
    it("pass under bun test", () => {
      const run = spawnSync(bunPath, ["test", "--timeout", "120000", ...SUITES], {
        cwd: REPO_ROOT,
        encoding: "utf8",
        timeout: 240_000,
      });
      const output = `${run.stdout}\n${run.stderr}`;
      expect(run.status, output.slice(-4000)).toBe(0);
      const passed = Number(/(\d+) pass/.exec(output)?.[1] ?? 0);
      expect(passed, output.slice(-4000)).toBeGreaterThanOrEqual(40);
      expect(output).toMatch(/\b0 fail/);
    }, 300_000);
  });
}
