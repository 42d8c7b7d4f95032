// db/client.ts against real libSQL files: migrations applied once (also when two processes' worth
// of clients open the same new file at once), WAL and foreign keys on, committed migrations in step
// with db/schema.ts (drizzle-kit finds nothing to generate).
import { spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { REPO_ROOT } from "../test/support/tools.ts";
import { filePathOf, MIGRATIONS_FOLDER, openDatabase, redactUrl } from "./client.ts";

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), "keyhole-db-"));
  dirs.push(d);
  return d;
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe("openDatabase", () => {
  it("applies the migrations once, with WAL, foreign keys and a busy timeout", async () => {
    const url = `file:${join(tempDir(), "k.db")}`;
    const [a, b] = await Promise.all([openDatabase({ url }), openDatabase({ url })]);
    const again = await openDatabase({ url });
    try {
      const applied = await again.readClient.execute(
        "SELECT count(*) AS n FROM __drizzle_migrations",
      );
      expect(Number(applied.rows[0]?.n)).toBe(
        readdirSync(MIGRATIONS_FOLDER).filter((f) => f.endsWith(".sql")).length,
      );
      const mode = await again.readClient.execute("PRAGMA journal_mode");
      expect(mode.rows[0]?.journal_mode).toBe("wal");
      const fk = await again.writeClient.execute("PRAGMA foreign_keys");
      expect(Number(fk.rows[0]?.foreign_keys)).toBe(1);
      const busy = await again.readClient.execute("PRAGMA busy_timeout");
      expect(Number(busy.rows[0]?.timeout)).toBe(5000);
    } finally {
      await Promise.all([a.close(), b.close(), again.close()]);
    }
  });

  it("reads file paths and hides credentials in URLs", () => {
    expect(filePathOf("file:/tmp/a.db")).toBe("/tmp/a.db");
    expect(filePathOf("file:///tmp/a%20b.db")).toBe("/tmp/a b.db");
    expect(filePathOf("file:rel/k.db")).toBe("rel/k.db");
    expect(redactUrl("libsql://user:pw@db.example.com?authToken=abc")).toBe(
      "libsql://db.example.com",
    );
  });
});

describe("migrations", () => {
  it("are in step with db/schema.ts (drizzle-kit generate finds no change)", () => {
    // drizzle-kit prefixes --out with "./", so the copy lives inside the repository (.cache is ignored)
    const scratch = mkdtempSync(join(REPO_ROOT, ".cache", "db-check-"));
    dirs.push(scratch);
    const out = join(scratch, "migrations");
    cpSync(MIGRATIONS_FOLDER, out, { recursive: true });
    const before = readdirSync(out).sort();
    const run = spawnSync(
      resolve(REPO_ROOT, "node_modules/.bin/drizzle-kit"),
      [
        "generate",
        "--dialect",
        "turso",
        "--schema",
        resolve(REPO_ROOT, "db/schema.ts"),
        "--out",
        relative(REPO_ROOT, out),
      ],
      { cwd: REPO_ROOT, encoding: "utf8" },
    );
    expect(run.status).toBe(0);
    expect(`${run.stdout}${run.stderr}`).toMatch(/No schema changes/);
    expect(readdirSync(out).sort()).toEqual(before);
  });
});
