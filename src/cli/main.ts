import { MirrorswapError } from '../core/errors.js';
import {
  ROLLBACK_FLAGS,
  STATUS_FLAGS,
  SYNC_FLAGS,
  VERIFY_FLAGS,
  rollbackCommand,
  statusCommand,
  syncCommand,
  verifyCommand,
} from './client-commands.js';
import { AGENT_FLAGS, agentCommand } from './commands/agent.js';
import { HOST_FLAGS, hostCommand } from './commands/host.js';
import { INIT_FLAGS, initCommand } from './commands/init.js';
import { NGINX_FLAGS, nginxCommand } from './commands/nginx.js';
import { SERVE_FLAGS, serveCommand } from './commands/serve.js';
import { UP_FLAGS, upCommand } from './commands/up.js';
import { type FlagSpecs, type FlagValues, UsageError, helpText, parseFlags } from './flags.js';

interface Command {
  usage: string;
  summary: string;
  flags: FlagSpecs;
  run: (values: FlagValues) => Promise<number>;
}

const COMMANDS: Record<string, Command> = {
  up: {
    usage: 'mirrorswap up [options]',
    summary: 'Run the agent and one web server on the embedded store, seeded with sample content when empty.',
    flags: UP_FLAGS,
    run: upCommand,
  },
  init: {
    usage: 'mirrorswap init --store DIR',
    summary: 'Create the store layout; mirror master into both slots and publish epoch 1. Idempotent.',
    flags: INIT_FLAGS,
    run: initCommand,
  },
  agent: {
    usage: 'mirrorswap agent --store DIR --token-file FILE [options]',
    summary: 'Run the sync agent: write API, syncs and swaps with drain.',
    flags: AGENT_FLAGS,
    run: agentCommand,
  },
  host: {
    usage: 'mirrorswap host --store DIR --etcd URL[,URL…] --fleet NAME --token-file FILE [options]',
    summary: "Run a fleet host's agent: its slots follow the fleet's coordinator, switched in lockstep through etcd.",
    flags: HOST_FLAGS,
    run: hostCommand,
  },
  serve: {
    usage: 'mirrorswap serve --store DIR [options]',
    summary: 'Run a standalone web server on the mounted copy, with /healthz and /metrics.',
    flags: SERVE_FLAGS,
    run: serveCommand,
  },
  nginx: {
    usage: 'mirrorswap nginx --store DIR --include FILE [--nginx-pid FILE | --reload-cmd CMD] [options]',
    summary: 'Make a running nginx a web server of the store: its root follows the epoch, its reloads drain.',
    flags: NGINX_FLAGS,
    run: nginxCommand,
  },
  sync: {
    usage: 'mirrorswap sync [--wait] [--full] [--release ID]',
    summary: 'Ask the running agent to copy master to the standby and swap.',
    flags: SYNC_FLAGS,
    run: syncCommand,
  },
  rollback: {
    usage: 'mirrorswap rollback [--to ID|EPOCH]',
    summary: 'Mount the previous copy again and pause automatic syncs until the next explicit sync.',
    flags: ROLLBACK_FLAGS,
    run: rollbackCommand,
  },
  status: {
    usage: 'mirrorswap status [--json]',
    summary: 'Show the epoch, both slots, every server and the last swaps.',
    flags: STATUS_FLAGS,
    run: statusCommand,
  },
  verify: {
    usage: 'mirrorswap verify [--json]',
    summary: 'Compare master with the mounted copy and list the differences (exit 1 if any).',
    flags: VERIFY_FLAGS,
    run: verifyCommand,
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
  try {
    const values = parseFlags(rest, command.flags);
    if (values.help) {
      process.stdout.write(helpText(command.usage, command.summary, command.flags));
      return 0;
    }
    return await command.run(values);
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
