import { randomBytes } from 'node:crypto';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../../store/atomic-write.js';
import { FLOCK, SYNC, checkRuntimeTools } from '../../store/runtime-tools.js';
import { startStaticServer } from '../../server/static-server.js';
import type { StoreLayout } from '../../store/store-layout.js';
import { AGENT_LISTEN_FLAG, SWAP_FLAGS, agentFlags, startAgentFrom } from '../agent-flags.js';
import { STORE_FLAGS, layoutFrom, makeLogger, readToken } from '../common.js';
import { type FlagSpecs, type FlagValues, listenFlag } from '../flags.js';
import { runUntilSignal } from '../run-until-signal.js';
import { MOUNT_FLAGS, SERVE_LISTEN_FLAG, staticOptions } from '../serve-flags.js';

export const UP_FLAGS: FlagSpecs = {
  ...STORE_FLAGS,
  listen: AGENT_LISTEN_FLAG,
  'serve-listen': SERVE_LISTEN_FLAG,
  ...SWAP_FLAGS,
  // the embedded store is for trying things: writes show up once they settle
  auto: { ...(SWAP_FLAGS.auto as FlagSpecs[string]), default: true },
  ...MOUNT_FLAGS,
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

/** `mirrorswap up`: the agent and one web server on the embedded store, seeded when empty. */
export async function upCommand(values: FlagValues): Promise<number> {
  const layout = layoutFrom(values);
  const log = makeLogger(process.env.MIRRORSWAP_LOG_LEVEL ?? 'warn');
  const web = listenFlag(values, 'serve-listen');
  // the web server's flags are checked before anything starts: a bad one is a usage error, no agent left running
  const webOptions = staticOptions(values, layout, log);
  // and the agent's: a bad one is a usage error before the store is seeded or a token written
  const agent = agentFlags(values, layout, log);
  // the programs the agent runs are looked for before the store is seeded: none there, nothing made
  await checkRuntimeTools(values.fsync === false ? [FLOCK] : [FLOCK, SYNC]);
  const seeded = await seedIfEmpty(layout);
  const token = await embeddedToken(layout);
  const agentServer = await startAgentFrom(values, layout, token, log, undefined, agent);
  await agentServer.started;
  // a web server that cannot start (its listener taken) ends `up`: the agent is not left running alone
  const webServer = await startStaticServer(web.host, web.port, webOptions).catch(async (err: unknown) => {
    await agentServer.close();
    throw err;
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
