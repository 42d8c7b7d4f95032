/**
 * The `keyhole` command: one table of subcommands, each loaded only when it runs (so a broken or heavy
 * module never slows or breaks the others). `bin/keyhole.mjs` calls `main(argv)` and exits with its
 * result. Add a command by adding one row.
 */

type CommandRun = (argv: string[]) => Promise<number>;

interface CommandEntry {
  summary: string;
  load: () => Promise<CommandRun>;
}

const COMMANDS: Record<string, CommandEntry> = {
  cert: {
    summary: "Nebula certificates and keys on this machine, a drop-in for nebula-cert 1.11",
    load: async () => (await import("./cert/index.ts")).certCommand,
  },
  stack: {
    summary:
      "run the local stack: signer (Bun, mTLS), edge (workerd), dev issuer (what npm start runs)",
    load: async () => (await import("./stack.ts")).stackCommand,
  },
  network: {
    summary: "create, list and rotate the CA of networks through the API",
    load: async () => (await import("./commands/admin.ts")).networkCommand,
  },
  host: {
    summary: "register, list and block hosts through the API",
    load: async () => (await import("./commands/admin.ts")).hostCommand,
  },
  sign: {
    summary: "sign a host public key through the API (certs:sign)",
    load: async () => (await import("./commands/admin.ts")).signCommand,
  },
  enroll: {
    summary:
      "enroll this machine with a one-time code: key pair made here, certificate and config.yml",
    load: async () => (await import("./commands/enroll.ts")).enrollCommand,
  },
  audit: {
    summary: "read the audit log through the API",
    load: async () => (await import("./commands/admin.ts")).auditCommand,
  },
  dev: {
    summary: "local development helpers (dev token)",
    load: async () => (await import("./commands/dev.ts")).devCommand,
  },
};

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "-h" || name === "--help" || name === "help") {
    process.stderr.write(usage());
    return name === undefined ? 2 : 0;
  }
  const entry = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (!entry) {
    process.stderr.write(`keyhole: unknown command ${JSON.stringify(name)}\n\n${usage()}`);
    return 2;
  }
  const run = await entry.load();
  return run(rest);
}

function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((n) => n.length));
  const lines = Object.entries(COMMANDS).map(([n, c]) => `  ${n.padEnd(width)}  ${c.summary}`);
  return `Usage: keyhole <command> [flags]\n\nCommands:\n${lines.join("\n")}\n\nRun keyhole <command> -h for a command's flags.\n`;
}
