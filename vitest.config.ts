import { defineConfig } from "vitest/config";

// One runner for the whole repository. Integration tests start real processes (Bun signer,
// workerd, moto_server, nebula), so they get generous timeouts and run one file per worker.
export default defineConfig({
  test: {
    include: [
      "core/**/*.test.ts",
      "edge/**/*.test.ts",
      "signer/**/*.test.ts",
      "db/**/*.test.ts",
      "cli/**/*.test.ts",
      "test/**/*.test.ts",
    ],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: "forks",
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    reporters: ["default"],
  },
});
