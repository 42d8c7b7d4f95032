/**
 * drizzle-kit settings: `npx drizzle-kit generate` turns db/schema.ts into SQL migrations under
 * db/migrations, which are committed and applied by db/client.ts when the signer starts.
 */
import { defineConfig } from "drizzle-kit";

export default defineConfig({
  dialect: "turso",
  schema: "./db/schema.ts",
  out: "./db/migrations",
  dbCredentials: { url: process.env.KEYHOLE_DB_URL ?? "file:.keyhole/keyhole.db" },
});
