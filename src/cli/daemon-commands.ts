import { randomBytes } from 'node:crypto';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { AgentOptions } from '../agent/agent.js';
import { initStore } from '../agent/init-store.js';
import { Journal } from '../agent/journal.js';
import { SlotState } from '../agent/slot-state.js';
import { StoreLock } from '../agent/store-lock.js';
import type { CopyStats } from '../agent/tree-copy.js';
import { writeFileAtomic } from '../atomic-write.js';
import { type AgentServer, startAgentServer } from '../server/agent-server.js';
import { type StaticServer, startStaticServer } from '../server/static-server.js';
import type { StoreLayout } from '../store-layout.js';
import { STORE_FLAGS, layoutFrom, makeLogger, readToken } from './common.js';
import {
  type FlagSpecs,
  type FlagValues,
  UsageError,
  durationFlag,
  listenFlag,
  sizeFlag,
  stringFlag,
} from './flags.js';
import { progressLine } from './progress.js';

/** The agent's API listener and the web server's, shared by `agent`, `serve` and `up`. */
const AGENT_LISTEN: FlagSpecs[string] = {
  type: 'string',
  env: 'MIRRORSWAP_LISTEN',
  default: '127.0.0.1:7070',
  arg: 'HOST:PORT',
  help: 'agent API listener',
};
const SERVE_LISTEN: FlagSpecs[string] = {
  type: 'string',
  env: 'MIRRORSWAP_SERVE_LISTEN',
  default: '127.0.0.1:8080',
  arg: 'HOST:PORT',
  help: 'web server listener',
};

export const INIT_FLAGS: FlagSpecs = { ...STORE_FLAGS };

export async function initCommand(values: FlagValues): Promise<number> {
  const layout = layoutFrom(values);
  await mkdir(layout.stateDir, { recursive: true });
  const lock = await StoreLock.acquire(layout.lockFile);
  try {
    const { journal } = await Journal.open(layout.journalFile);
    const slots = await SlotState.load(layout.slotStateFile, journal.id);
    const progress = progressLine();
    const { created, recovered, record } = await initStore(layout, journal, slots, {
      onProgress: (slot: string, s: CopyStats) =>
        progress.update(`slot ${slot}: ${s.files} files, ${s.bytes} bytes`, s.bytes),
    });
    progress.done();
    await journal.close();
    console.log(
      created
        ? `initialised ${layout.root}: master mirrored into slots a and b, epoch ${record.epoch} mounts slot ${record.mounted}`
        : recovered
          ? `${layout.root} had lost its epoch file: published epoch ${record.epoch} mounting slot ${record.mounted} again (${recovered}), without writing into either copy; the next sync of each compares it whole`
          : `${layout.root} is already initialised (epoch ${record.epoch}, slot ${record.mounted} mounted)`,
    );
    return 0;
  } finally {
    await lock.release();
  }
}

const SWAP_FLAGS: FlagSpecs = {
  interval: {
    type: 'string',
    env: 'MIRRORSWAP_INTERVAL',
    arg: 'DURATION',
    help: 'sync this often when master has changes',
  },
  auto: { type: 'boolean', env: 'MIRRORSWAP_AUTO', default: false, help: 'sync once changes to master settle' },
  settle: {
    type: 'string',
    env: 'MIRRORSWAP_SETTLE',
    default: '1s',
    arg: 'DURATION',
    help: 'quiet time before an --auto sync',
  },
  'drain-timeout': {
    type: 'string',
    env: 'MIRRORSWAP_DRAIN_TIMEOUT',
    default: '30s',
    arg: 'DURATION',
    help: 'longest wait for servers to let go of a slot',
  },
  'server-ttl': {
    type: 'string',
    env: 'MIRRORSWAP_SERVER_TTL',
    default: '10s',
    arg: 'DURATION',
    help: 'a server whose heartbeat is older is dead',
  },
  'on-mount': {
    type: 'string',
    env: 'MIRRORSWAP_ON_MOUNT',
    arg: 'CMD',
    help: 'shell command run after an epoch is published',
  },
  'on-unmount': {
    type: 'string',
    env: 'MIRRORSWAP_ON_UNMOUNT',
    arg: 'CMD',
    help: 'shell command run after the old slot drained',
  },
  'max-body': {
    type: 'string',
    env: 'MIRRORSWAP_MAX_BODY',
    default: '64MiB',
    arg: 'SIZE',
    help: 'largest body the write API takes',
  },
  'watch-master': {
    type: 'boolean',
    env: 'MIRRORSWAP_WATCH_MASTER',
    default: true,
    help: 'watch master for direct writes (--no-watch-master to turn off)',
  },
  'verify-interval': {
    type: 'string',
    env: 'MIRRORSWAP_VERIFY_INTERVAL',
    default: '10m',
    arg: 'DURATION',
    help: 'compare master with the mounted copy this often, to catch changes the journal missed (0: never)',
  },
  fsync: {
    type: 'boolean',
    env: 'MIRRORSWAP_FSYNC',
    default: true,
    help: 'fsync copied files before publishing (--no-fsync: faster, not crash-safe)',
  },
};

export const AGENT_FLAGS: FlagSpecs = {
  ...STORE_FLAGS,
  listen: AGENT_LISTEN,
  'token-file': {
    type: 'string',
    env: 'MIRRORSWAP_TOKEN_FILE',
    arg: 'FILE',
    help: 'file holding the API token (required)',
  },
  ...SWAP_FLAGS,
};

function agentOptions(values: FlagValues, layout: StoreLayout, logger: AgentOptions['logger']): AgentOptions {
  return {
    layout,
    logger,
    intervalMs: durationFlag(values, 'interval', { min: 100 }) ?? 0,
    auto: values.auto === true,
    settleMs: durationFlag(values, 'settle') ?? 1000,
    drainTimeoutMs: durationFlag(values, 'drain-timeout', { min: 1 }) ?? 30_000,
    serverTtlMs: durationFlag(values, 'server-ttl', { min: 100 }) ?? 10_000,
    onMount: stringFlag(values, 'on-mount'),
    onUnmount: stringFlag(values, 'on-unmount'),
    watchMaster: values['watch-master'] !== false,
    durable: values.fsync !== false,
    verifyIntervalMs: durationFlag(values, 'verify-interval', { min: 0 }) ?? 10 * 60_000,
  };
}

/** Run until SIGTERM or SIGINT; SIGHUP asks the agent for a sync. */
async function runUntilSignal(
  agentServer: AgentServer | null,
  web: StaticServer | null,
  log: ReturnType<typeof makeLogger>,
): Promise<number> {
  const agent = agentServer ? await agentServer.started : null;
  const onHup = () => {
    log.info({ signal: 'SIGHUP' }, 'sync signal');
    void agent?.requestSync({ reason: 'signal' });
  };
  process.on('SIGHUP', onHup);
  const signal = await new Promise<string>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  log.info({ signal }, 'shutting down');
  process.off('SIGHUP', onHup);
  await web?.close();
  await agentServer?.close();
  return 0;
}

function startAgentFrom(values: FlagValues, layout: StoreLayout, token: string, log: ReturnType<typeof makeLogger>) {
  const { host, port } = listenFlag(values, 'listen');
  return startAgentServer({
    host,
    port,
    token,
    maxBody: sizeFlag(values, 'max-body') ?? 64 * 1024 * 1024,
    agent: agentOptions(values, layout, log),
  });
}

export async function agentCommand(values: FlagValues): Promise<number> {
  const layout = layoutFrom(values);
  const tokenFile = stringFlag(values, 'token-file');
  if (!tokenFile) throw new UsageError('--token-file is required: the write API never runs without a token');
  const token = await readToken(tokenFile);
  const log = makeLogger();
  const server = await startAgentFrom(values, layout, token, log);
  const agent = await server.started;
  log.info({ url: server.url, store: layout.root, epoch: agent.epoch.epoch }, 'agent listening');
  return runUntilSignal(server, null, log);
}

export const SERVE_FLAGS: FlagSpecs = {
  ...STORE_FLAGS,
  listen: SERVE_LISTEN,
  'server-id': { type: 'string', env: 'MIRRORSWAP_SERVER_ID', arg: 'ID', help: 'heartbeat id (default: host-pid)' },
  watch: {
    type: 'string',
    env: 'MIRRORSWAP_WATCH',
    default: 'auto',
    arg: 'MODE',
    help: 'epoch watching: auto, native or poll',
  },
  'poll-interval': {
    type: 'string',
    env: 'MIRRORSWAP_POLL_INTERVAL',
    default: '250ms',
    arg: 'DURATION',
    help: 'epoch poll period',
  },
  'heartbeat-interval': {
    type: 'string',
    env: 'MIRRORSWAP_HEARTBEAT_INTERVAL',
    default: '1s',
    arg: 'DURATION',
    help: "how often the heartbeat file is rewritten (keep well under the agent's --server-ttl)",
  },
  upstream: {
    type: 'string',
    env: 'MIRRORSWAP_UPSTREAM',
    arg: 'URL',
    help: 'application server that gets what the mounted copy does not hold',
  },
  'max-age': {
    type: 'string',
    env: 'MIRRORSWAP_MAX_AGE',
    default: '0',
    arg: 'DURATION',
    help: 'Cache-Control max-age',
  },
};

function staticOptions(values: FlagValues, layout: StoreLayout, logger: ReturnType<typeof makeLogger>) {
  const watch = stringFlag(values, 'watch') ?? 'auto';
  if (watch !== 'auto' && watch !== 'native' && watch !== 'poll')
    throw new UsageError(`--watch ${watch}: must be auto, native or poll`);
  const serverId = stringFlag(values, 'server-id');
  return {
    store: layout.root,
    watch: watch as 'auto' | 'native' | 'poll',
    pollInterval: durationFlag(values, 'poll-interval', { min: 10 }) ?? 250,
    heartbeatInterval: durationFlag(values, 'heartbeat-interval', { min: 50 }) ?? 1000,
    maxAge: durationFlag(values, 'max-age') ?? 0,
    logger,
    ...(serverId ? { serverId } : {}),
  };
}

export async function serveCommand(values: FlagValues): Promise<number> {
  const layout = layoutFrom(values);
  const { host, port } = listenFlag(values, 'listen');
  const log = makeLogger();
  const upstream = stringFlag(values, 'upstream');
  if (upstream !== undefined) {
    let ok = false;
    try {
      ok = ['http:', 'https:'].includes(new URL(upstream).protocol);
    } catch {
      ok = false;
    }
    if (!ok) throw new UsageError(`--upstream ${upstream}: must be an http:// or https:// URL`);
  }
  let web: StaticServer;
  try {
    web = await startStaticServer(host, port, staticOptions(values, layout, log), upstream ? { upstream } : undefined);
  } catch (err) {
    if (err instanceof TypeError) throw new UsageError(err.message);
    throw err;
  }
  log.info({ url: web.url, store: layout.root, epoch: web.mw.state().epoch }, 'web server listening');
  return runUntilSignal(null, web, log);
}

export const UP_FLAGS: FlagSpecs = {
  ...STORE_FLAGS,
  listen: AGENT_LISTEN,
  'serve-listen': SERVE_LISTEN,
  ...SWAP_FLAGS,
  auto: { ...(SWAP_FLAGS.auto as FlagSpecs[string]), default: true },
};

const SAMPLE: Record<string, string> = {
  'index.html':
    '<!doctype html><meta charset="utf-8"><title>mirrorswap</title><h1>Served by mirrorswap</h1>' +
    '<p>Edit master through the write API and watch this page change, all at once.</p><p><a href="about/">about</a></p>\n',
  'about/index.html':
    '<!doctype html><meta charset="utf-8"><title>about</title><p>Two copies, one mounted, swapped atomically.</p>\n',
};

async function seedIfEmpty(layout: StoreLayout): Promise<boolean> {
  await mkdir(layout.master, { recursive: true });
  if ((await readdir(layout.master)).length > 0) return false;
  for (const [rel, body] of Object.entries(SAMPLE)) {
    await mkdir(join(layout.master, rel, '..'), { recursive: true });
    await writeFile(join(layout.master, rel), body);
  }
  return true;
}

/** The token of the embedded store: made once, kept in the state dir, mode 600. */
async function embeddedToken(layout: StoreLayout): Promise<string> {
  const file = join(layout.stateDir, 'token');
  try {
    return await readToken(file);
  } catch {
    await mkdir(layout.stateDir, { recursive: true });
    await writeFileAtomic(file, `${randomBytes(24).toString('base64url')}\n`, { mode: 0o600 });
    return readToken(file);
  }
}

export async function upCommand(values: FlagValues): Promise<number> {
  const layout = layoutFrom(values);
  const log = makeLogger(process.env.MIRRORSWAP_LOG_LEVEL ?? 'warn');
  const seeded = await seedIfEmpty(layout);
  const token = await embeddedToken(layout);
  const web = listenFlag(values, 'serve-listen');
  const agentServer = await startAgentFrom(values, layout, token, log);
  await agentServer.started;
  const webServer = await startStaticServer(web.host, web.port, {
    ...staticOptions(values, layout, log),
    pollInterval: 250,
  });
  const tokenFile = join(layout.stateDir, 'token');
  console.log(
    [
      `mirrorswap is up on ${layout.root}${seeded ? ' (seeded with sample content)' : ''}`,
      `  site:   ${webServer.url}/`,
      `  agent:  ${agentServer.url}/v1/status  (token in ${tokenFile})`,
      '',
      'write a file into master, then sync (or wait: --auto syncs once writes settle):',
      `  curl -X PUT --data-binary 'hello' -H "Authorization: Bearer $(cat ${tokenFile})" ${agentServer.url}/v1/files/hello.txt`,
      `  curl -X POST -H "Authorization: Bearer $(cat ${tokenFile})" '${agentServer.url}/v1/sync?wait=1'`,
      `  curl ${webServer.url}/hello.txt`,
      '',
      'Ctrl-C stops both.',
    ].join('\n'),
  );
  return runUntilSignal(agentServer, webServer, log);
}
