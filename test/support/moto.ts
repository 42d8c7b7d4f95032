/** moto_server KMS regions for tests (cli/dev/moto.ts), stopped after each test file. */
import { afterAll } from "vitest";
import { stopAllMoto } from "../../cli/dev/moto.ts";

export * from "../../cli/dev/moto.ts";

// Registered when a test file imports this module, so it runs after that file's own afterAll hooks.
afterAll(stopAllMoto);
