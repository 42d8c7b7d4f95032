/** The nebula config.yml Keyhole writes (cli/nebula-config.ts), for tests that build configs directly. */
export * from "../../cli/nebula-config.ts";
