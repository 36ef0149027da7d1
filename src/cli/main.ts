import { MirrorswapError } from '../core/errors.js';
import { type FlagSpecs, type FlagValues, UsageError, helpText, parseFlags } from './flags.js';

interface Command {
  usage: string;
  summary: string;
  /**
   * The command's flags and code, imported when it is the one run: `mirrorswap status` need not load
   * the agent, the fleet, nginx's companion and the middleware before it can ask the agent anything.
   */
  load: () => Promise<{ flags: FlagSpecs; run: (values: FlagValues) => Promise<number> }>;
}

const COMMANDS: Record<string, Command> = {
  up: {
    usage: 'mirrorswap up [options]',
    summary: 'Run the agent and one web server on the embedded store, seeded with sample content when empty.',
    load: async () => {
      const { UP_FLAGS, upCommand } = await import('./commands/up.js');
      return { flags: UP_FLAGS, run: upCommand };
    },
  },
  init: {
    usage: 'mirrorswap init --store DIR',
    summary: 'Create the store layout; mirror master into both slots and publish epoch 1. Idempotent.',
    load: async () => {
      const { INIT_FLAGS, initCommand } = await import('./commands/init.js');
      return { flags: INIT_FLAGS, run: initCommand };
    },
  },
  agent: {
    usage: 'mirrorswap agent --store DIR --token-file FILE [options]',
    summary: 'Run the sync agent: write API, syncs and swaps with drain.',
    load: async () => {
      const { AGENT_FLAGS, agentCommand } = await import('./commands/agent.js');
      return { flags: AGENT_FLAGS, run: agentCommand };
    },
  },
  host: {
    usage: 'mirrorswap host --store DIR --etcd URL[,URL…] --fleet NAME --token-file FILE [options]',
    summary: "Run a fleet host's agent: its slots follow the fleet's coordinator, switched in lockstep through etcd.",
    load: async () => {
      const { HOST_FLAGS, hostCommand } = await import('./commands/host.js');
      return { flags: HOST_FLAGS, run: hostCommand };
    },
  },
  serve: {
    usage: 'mirrorswap serve --store DIR [options]',
    summary: 'Run a standalone web server on the mounted copy, with /healthz, /readyz and /metrics.',
    load: async () => {
      const { SERVE_FLAGS, serveCommand } = await import('./commands/serve.js');
      return { flags: SERVE_FLAGS, run: serveCommand };
    },
  },
  nginx: {
    usage: 'mirrorswap nginx --store DIR --include FILE [--nginx-pid FILE | --reload-cmd CMD] [options]',
    summary: 'Make a running nginx a web server of the store: its root follows the epoch, its reloads drain.',
    load: async () => {
      const { NGINX_FLAGS, nginxCommand } = await import('./commands/nginx.js');
      return { flags: NGINX_FLAGS, run: nginxCommand };
    },
  },
  sync: {
    usage: 'mirrorswap sync [--wait] [--full] [--release ID]',
    summary: 'Ask the running agent to copy master to the standby and swap.',
    load: async () => {
      const { SYNC_FLAGS, syncCommand } = await import('./client-commands.js');
      return { flags: SYNC_FLAGS, run: syncCommand };
    },
  },
  rollback: {
    usage: 'mirrorswap rollback [--to ID|EPOCH]',
    summary: 'Mount the previous copy again and pause automatic syncs until the next explicit sync.',
    load: async () => {
      const { ROLLBACK_FLAGS, rollbackCommand } = await import('./client-commands.js');
      return { flags: ROLLBACK_FLAGS, run: rollbackCommand };
    },
  },
  status: {
    usage: 'mirrorswap status [--json]',
    summary: 'Show the epoch, both slots, every server and the last swaps.',
    load: async () => {
      const { STATUS_FLAGS, statusCommand } = await import('./client-commands.js');
      return { flags: STATUS_FLAGS, run: statusCommand };
    },
  },
  verify: {
    usage: 'mirrorswap verify [--json]',
    summary: 'Compare master with the mounted copy and list the differences (exit 1 if any).',
    load: async () => {
      const { VERIFY_FLAGS, verifyCommand } = await import('./client-commands.js');
      return { flags: VERIFY_FLAGS, run: verifyCommand };
    },
  },
};

function mainHelp(): string {
  const lines = ['usage: mirrorswap <command> [options]', '', 'commands:'];
  for (const [name, c] of Object.entries(COMMANDS)) lines.push(`  ${name.padEnd(10)} ${c.summary}`);
  lines.push('', "mirrorswap <command> --help shows a command's options; every option has an environment twin.");
  return `${lines.join('\n')}\n`;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(mainHelp());
    return name === undefined ? 2 : 0;
  }
  if (name === '--version') {
    const { createRequire } = await import('node:module');
    console.log((createRequire(import.meta.url)('../../../package.json') as { version: string }).version);
    return 0;
  }
  const command = COMMANDS[name];
  if (!command) {
    process.stderr.write(`mirrorswap: unknown command "${name}"\n\n${mainHelp()}`);
    return 2;
  }
  const { flags, run } = await command.load();
  try {
    const values = parseFlags(rest, flags);
    if (values.help) {
      process.stdout.write(helpText(command.usage, command.summary, flags));
      return 0;
    }
    return await run(values);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`mirrorswap ${name}: ${err.message}\n(see mirrorswap ${name} --help)\n`);
      return 2;
    }
    if (err instanceof MirrorswapError) {
      process.stderr.write(`mirrorswap ${name}: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`mirrorswap: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 1;
  },
);
