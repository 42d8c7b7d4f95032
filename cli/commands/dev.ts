/**
 * `keyhole dev token`: prints a JWT from the local stack's development issuer, minted offline from
 * the issuer's key file in the data folder (the stack records the issuer's URL there when it starts).
 */
import { existsSync } from "node:fs";
import { parseArgs } from "node:util";
import { SCOPES } from "../../core/contract/index.ts";
import { reportError } from "../client.ts";
import { loadOrCreateKeys, mintDevToken } from "../dev/issuer.ts";
import { readStackState, stackPaths } from "../stack-state.ts";

export async function devCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  try {
    if (sub !== "token")
      throw new Error(
        "usage: keyhole dev token [--org ORG] [--scope 'a b'] [--mfa] [--sub SUBJECT] [--ttl SECONDS]",
      );
    const { values } = parseArgs({
      args: rest,
      options: {
        org: { type: "string", default: "dev-org" },
        scope: { type: "string", default: SCOPES.join(" ") },
        mfa: { type: "boolean", default: false },
        sub: { type: "string", default: "dev-admin" },
        ttl: { type: "string", default: "3600" },
      },
      strict: true,
    });
    const paths = stackPaths();
    const state = await readStackState(paths);
    if (!state || !existsSync(paths.issuerKeys)) {
      throw new Error(
        `no local stack in ${paths.dir}: start it first with \`npm start\` (or set KEYHOLE_DATA_DIR)`,
      );
    }
    const keys = await loadOrCreateKeys(paths.issuerKeys);
    const ttl = Number(values.ttl);
    if (!Number.isInteger(ttl) || ttl <= 0 || ttl > 86_400)
      throw new Error("--ttl must be whole seconds between 1 and 86400");
    const token = await mintDevToken(keys, state.oidc, {
      sub: values.sub,
      org: values.org,
      scope: values.scope.split(/[\s,]+/).filter(Boolean),
      ...(values.mfa ? { amr: ["pwd", "mfa"] } : { amr: ["pwd"] }),
      expiresInSec: ttl,
    });
    process.stdout.write(`${token}\n`);
    return 0;
  } catch (e) {
    return reportError(e);
  }
}
