/**
 * Where the real outside tools live, and the one rule for a test that cannot find one: it skips
 * loudly on a developer's machine and fails under CI (CI=true), where `.ci/run` installs them all.
 */
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, it } from "vitest";

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const IN_CI = process.env.CI === "true" || process.env.CI === "1";

export interface Tool {
  name: string;
  path: string;
  available: boolean;
  /** Why it is missing and how to get it. */
  missing: string;
}

export function probe(
  name: string,
  path: string,
  versionArgs: string[],
  expect: RegExp,
  hint: string,
): Tool {
  let available = false;
  let missing = "";
  if (!existsSync(path)) {
    missing = `${name} not found at ${path}. ${hint}`;
  } else {
    try {
      const out = execFileSync(path, versionArgs, {
        encoding: "utf8",
        stdio: ["ignore", "pipe", "pipe"],
      });
      available = expect.test(out);
      if (!available)
        missing = `${path} is not ${name} (it said: ${out.trim().slice(0, 80)}). ${hint}`;
    } catch (e) {
      missing = `${path} did not run: ${(e as Error).message.split("\n")[0]}. ${hint}`;
    }
  }
  return { name, path, available, missing };
}

const INSTALL_HINT = "Run `sh scripts/install-nebula.sh` as root (it is what .ci/run does).";

/** nebula-cert 1.11 (v1 and v2, both curves), unpacked by scripts/install-nebula.sh. */
export const nebulaCert111 = probe(
  "nebula-cert 1.11",
  process.env.KEYHOLE_NEBULA_CERT_111 ??
    resolve(REPO_ROOT, ".cache/nebula-1.11/usr/bin/nebula-cert"),
  ["-version"],
  /1\.11\./,
  INSTALL_HINT,
);
export const nebula111 = probe(
  "nebula 1.11",
  process.env.KEYHOLE_NEBULA_111 ?? resolve(REPO_ROOT, ".cache/nebula-1.11/usr/bin/nebula"),
  ["-version"],
  /1\.11\./,
  INSTALL_HINT,
);
/** Debian 12's nebula-cert 1.6.1 (v1, Curve25519 only): what many existing fleets run. */
export const nebulaCert16 = probe(
  "nebula-cert 1.6.1",
  process.env.KEYHOLE_NEBULA_CERT_16 ?? "/usr/bin/nebula-cert",
  ["-version"],
  /1\.6\./,
  INSTALL_HINT,
);
export const nebula16 = probe(
  "nebula 1.6.1",
  process.env.KEYHOLE_NEBULA_16 ?? "/usr/bin/nebula",
  ["-version"],
  /1\.6\./,
  INSTALL_HINT,
);

/**
 * `describe` that needs real tools. Missing under CI: one failing test that names what is missing.
 * Missing elsewhere: skipped, with a warning on stderr that says how to install it.
 */
export function describeWith(tools: Tool[], title: string, body: () => void): void {
  const missing = tools.filter((t) => !t.available);
  if (missing.length === 0) {
    describe(title, body);
    return;
  }
  const why = missing.map((t) => t.missing).join("; ");
  if (IN_CI) {
    describe(title, () => {
      it("has the real tools it needs (CI must not skip)", () => {
        throw new Error(`SKIP IS A FAILURE UNDER CI: ${why}`);
      });
    });
    return;
  }
  process.stderr.write(`\n*** SKIPPED "${title}": ${why}\n\n`);
  describe.skip(title, body);
}
