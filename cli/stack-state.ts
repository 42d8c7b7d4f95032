/**
 * The local stack's data folder (KEYHOLE_DATA_DIR, default `.keyhole/`) and the small state file the
 * running stack writes there, so that other commands (`keyhole dev token`) find the dev issuer.
 */
import { existsSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";

export interface StackPaths {
  dir: string;
  pki: string;
  issuerKeys: string;
  state: string;
  database: string;
  kms: string;
}

export interface StackState {
  api: string;
  oidc: { issuer: string; audience: string; orgClaim: string };
  signers: Record<string, string>;
  pid: number;
  startedAt: string;
}

export function stackPaths(dir = process.env.KEYHOLE_DATA_DIR ?? ".keyhole"): StackPaths {
  const root = resolve(dir);
  return {
    dir: root,
    pki: join(root, "pki"),
    issuerKeys: join(root, "dev-issuer-keys.json"),
    state: join(root, "stack.json"),
    database: join(root, "keyhole.db"),
    kms: root,
  };
}

export async function readStackState(paths: StackPaths): Promise<StackState | null> {
  if (!existsSync(paths.state)) return null;
  return JSON.parse(await readFile(paths.state, "utf8")) as StackState;
}

export async function writeStackState(paths: StackPaths, state: StackState): Promise<void> {
  await writeFile(paths.state, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
}
