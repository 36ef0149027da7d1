import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, lstat, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { brotliDecompressSync } from 'node:zlib';
import type { AgentStatus, SwapRecord } from '../../../src/agent/agent.js';
import { type TestAgent, startTestAgent } from '../../../testkit/agent.js';
import { type TempStore, tempStore } from '../../../testkit/store.js';
import { waitFor } from '../../../testkit/wait.js';

const status = async (agent: TestAgent) => (await (await agent.call('GET', '/v1/status')).json()) as AgentStatus;

/**
 * A watcher in a process of its own that looks at `paths` as fast as it
 * can until `stop` exists, and prints the permission bits for group and
 * others it saw any of them with (but the inodes `old`, there before: the
 * release before's, readable as their file was): what a local user
 * spinning on open(2) could have read through.
 */
const SPIN = `
const fs = require('node:fs');
const path = require('node:path');
const [paths, stop, old] = JSON.parse(process.argv[1]);
let wide = 0, seen = 0;
const look = () => {
  for (const p of paths) {
    const st = fs.lstatSync(p, { throwIfNoEntry: false });
    if (st && !old.includes(st.ino)) { seen++; wide |= st.mode & 0o077; }
  }
};
// each variant's creation wakes the watcher (as inotify would a local user's), and spins fill the gaps between
for (const dir of new Set(paths.map((p) => path.dirname(p)))) fs.watch(dir, look);
const spin = () => {
  for (let i = 0; i < 64; i++) look();
  if (fs.existsSync(stop)) {
    process.stdout.write(JSON.stringify({ wide, seen }));
    process.exit(0);
  }
  setImmediate(spin);
};
process.stdout.write('ready\\n');
spin();
`;

/** Run `during` while a spinner watches `paths`; the group/other bits it saw on any of them, and how often it saw one. */
async function watchModes<T>(
  paths: string[],
  stop: string,
  during: () => Promise<T>,
): Promise<{ result: T; wide: number; seen: number }> {
  const old = (await Promise.all(paths.map((p) => lstat(p).catch(() => null)))).flatMap((st) => (st ? [st.ino] : []));
  const spinner = spawn(process.execPath, ['-e', SPIN, JSON.stringify([paths, stop, old])], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  spinner.stdout.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const exited = new Promise<void>((resolve) => spinner.on('exit', () => resolve()));
  await waitFor('the watcher watching', () => out.startsWith('ready\n'));
  const stopped = async () => {
    await writeFile(stop, '');
    await exited;
  };
  try {
    const result = await during();
    await stopped();
    return { result, ...(JSON.parse(out.slice('ready\n'.length)) as { wide: number; seen: number }) };
  } finally {
    await stopped();
  }
}

const syncOk = async (agent: TestAgent): Promise<SwapRecord> => {
  const record = (await (await agent.call('POST', '/v1/sync?wait=1')).json()) as SwapRecord;
  assert.equal(record.result, 'ok', JSON.stringify(record.error ?? record));
  return record;
};

describe('a variant of a private file, copied from an entry made while it was readable', () => {
  let store: TempStore;
  let agent: TestAgent;
  const names = Array.from({ length: 12 }, (_, i) => `p${i}.js`);
  // large variants (base64 of random bytes: brotli saves about a quarter) keep each copy open a while
  const body = (i: number) => `// ${i}\n${randomBytes(1_500_000).toString('base64')}\n`;
  before(async () => {
    store = await tempStore();
    await store.fill('master', { 'site/index.html': '<p>hi</p>' });
    agent = await startTestAgent(store, { auto: false, watchMaster: true });
  });
  after(async () => {
    await agent.close();
    await store.dispose();
  });

  it('is never readable by others, not even while it is being copied', async () => {
    const bodies = names.map((_, i) => body(i));
    for (const [i, name] of names.entries()) {
      await writeFile(join(store.master, 'site', name), bodies[i] as string, { mode: 0o644 });
      await chmod(join(store.master, 'site', name), 0o644);
    }
    await waitFor(
      'precompressed',
      async () => {
        const p = (await status(agent)).precompress;
        return p && p.files >= names.length && p.queued === 0 ? p : null;
      },
      { timeout: 15_000 },
    );
    // made private after its entries were made 0644: the copy's variants must be given 0600 from the start
    for (const name of names) await chmod(join(store.master, 'site', name), 0o600);
    const standby = store.slots[(await status(agent)).standby?.slot ?? 'b'];
    const paths = names.flatMap((n) => [join(standby, 'site', `${n}.br`), join(standby, 'site', `${n}.gz`)]);
    const seen = await watchModes(paths, join(store.root, 'stop-spinning'), () => syncOk(agent));
    const record = seen.result;
    assert.equal(record.variants?.cached, 2 * names.length, 'the variants came from the cache, by copy');
    assert.ok(seen.seen > 0, 'the watcher saw the variants');
    assert.equal(seen.wide, 0, `a variant of a 0600 file was seen with group/other bits ${seen.wide.toString(8)}`);
    const mounted = store.slots[(await status(agent)).mounted ?? 'a'];
    assert.equal(
      brotliDecompressSync(await readFile(join(mounted, 'site/p0.js.br'))).toString(),
      bodies[0],
      'and it decodes to its file',
    );
  });
});

describe("a variant of a private file, copied from the other copy's made while it was readable", () => {
  let store: TempStore;
  let agent: TestAgent;
  // past the precompress limit: its variants are made at sync, then reused by the other copy
  const big = `// big\n${randomBytes(15_000_000).toString('base64')}\n`;
  before(async () => {
    store = await tempStore();
    await store.fill('master', { 'site/index.html': '<p>hi</p>' });
    agent = await startTestAgent(store, { auto: false, watchMaster: true });
  });
  after(async () => {
    await agent.close();
    await store.dispose();
  });

  it('is never readable by others, not even while it is being copied', async () => {
    const file = join(store.master, 'site/big.js');
    await writeFile(file, big, { mode: 0o644 });
    await chmod(file, 0o644);
    await syncOk(agent);
    await syncOk(agent); // both copies hold its 0644 variants
    await chmod(file, 0o600);
    const standby = store.slots[(await status(agent)).standby?.slot ?? 'b'];
    const paths = [join(standby, 'site/big.js.br'), join(standby, 'site/big.js.gz')];
    const seen = await watchModes(paths, join(store.root, 'stop-spinning'), () => syncOk(agent));
    assert.equal(seen.result.variants?.reused, 2, JSON.stringify(seen.result.variants));
    assert.ok(seen.seen > 0, 'the watcher saw the variants');
    assert.equal(seen.wide, 0, `a variant of a 0600 file was seen with group/other bits ${seen.wide.toString(8)}`);
    const mounted = store.slots[(await status(agent)).mounted ?? 'a'];
    assert.equal(brotliDecompressSync(await readFile(join(mounted, 'site/big.js.br'))).toString(), big);
  });
});
