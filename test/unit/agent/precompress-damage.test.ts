import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { brotliDecompressSync } from 'node:zlib';
import { Precompress } from '../../../src/agent/master/precompress.js';
import type { Logger } from '../../../src/core/logger.js';
import { readEpochFile } from '../../../src/store/epoch-file.js';
import { TREE_DEFAULTS } from '../../../src/tree/tree-defaults.js';
import { type TestAgent, agentStatus, startTestAgent, syncOk } from '../../../testkit/agent.js';
import { memoryLogger } from '../../../testkit/logger.js';
import { type TempStore, tempStore } from '../../../testkit/store.js';
import { checkCopyIndex, flipInPlace, compressibleText as text } from '../../../testkit/variants.js';
import { waitFor } from '../../../testkit/wait.js';

const settings = TREE_DEFAULTS.variantSettings;

const sync = syncOk;
const status = agentStatus;
/** Until the agent has tried `files` files (made or failed) and has nothing waiting or running. */
const settled = (agent: TestAgent, files: number) =>
  waitFor(`${files} files precompressed or failed`, async () => {
    const p = (await status(agent)).precompress;
    return p && p.files + p.failed >= files && p.queued === 0 ? p : null;
  });
const mountedOf = async (store: TempStore) => store.slots[(await readEpochFile(store.epochFile))?.mounted ?? 'a'];

describe('the same bytes at two paths, compressed at once', () => {
  let root: string;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'mirrorswap-precompress-damage-'));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('are counted once against the byte budget: once the copies took them, the budget is whole again', async () => {
    const master = join(root, 'master');
    const cache = join(root, 'cache');
    await mkdir(master, { recursive: true });
    // any byte counted and never given back fills this budget
    const p = new Precompress({ master, cache, settings, log: memoryLogger() as unknown as Logger, maxBytes: 1 });
    // the same file copied under two names (a vendored licence, a locale stub): both compressed side by side
    await writeFile(join(master, 'one.js'), text('same'));
    await writeFile(join(master, 'two.js'), text('same'));
    p.add(['one.js', 'two.js']);
    await waitFor('both compressed', () => (p.status().queued === 0 && p.status().entries === 2 ? true : null));
    await waitFor('nothing running', async () => {
      await p.pause();
      p.resume();
      return true;
    });
    // both copies took the two entries (as copy-into-slot tells it), and the prune lets them go
    const names = (await readdir(cache)).filter((n) => !n.startsWith('.'));
    assert.equal(names.length, 2);
    p.taken('a', names);
    p.taken('b', names);
    await p.prune();
    assert.equal(p.status().entries, 0);
    assert.deepEqual(await readdir(cache), []);
    // an empty cache takes the next file
    await writeFile(join(master, 'next.js'), text('next'));
    const dropped = p.status().dropped;
    p.add(['next.js']);
    await waitFor('next.js done', () =>
      p.status().queued === 0 && (p.status().files > 0 || p.status().dropped > dropped) ? true : null,
    );
    await p.close();
    assert.equal(p.status().dropped, dropped, 'next.js was dropped: the empty cache counted as full');
    assert.equal((await readdir(cache)).length, 2);
  });
});

describe('the variant cache directory removed while the agent runs', () => {
  let store: TempStore;
  let agent: TestAgent;
  before(async () => {
    store = await tempStore();
    await store.fill('master', { 'site/a.js': text('a') });
    agent = await startTestAgent(store, { auto: false, watchMaster: true });
  });
  after(async () => {
    await agent.close();
    await store.dispose();
  });

  it('what lands after it is removed is still compressed as it lands, and the sync links it', async () => {
    await agent.call('PUT', '/v1/files/site/a.js', { body: text('a1') });
    await settled(agent, 1);
    // an operator clearing what its name says is a cache
    await rm(store.variantCacheDir, { recursive: true, force: true });
    await agent.call('PUT', '/v1/files/site/b.js', { body: text('b1') });
    const p = await settled(agent, 2);
    assert.equal(p.failed, 0, 'b.js could not be precompressed');
    const record = await sync(agent);
    // a.js's entries went with the directory: compressed by the sync; b.js's came from the cache
    assert.deepEqual(
      { cached: record.variants?.cached, compressed: record.variants?.compressed },
      { cached: 2, compressed: 2 },
    );
    const mounted = await mountedOf(store);
    assert.equal(brotliDecompressSync(await readFile(join(mounted, 'site/b.js.br'))).toString(), text('b1'));
    assert.equal(await checkCopyIndex(mounted), 4);
  });
});

describe('a variant cache the derive cannot look into', () => {
  let store: TempStore;
  let agent: TestAgent;
  before(async () => {
    store = await tempStore();
    await store.fill('master', { 'site/a.js': text('a') });
    agent = await startTestAgent(store, { auto: false, watchMaster: true });
  });
  after(async () => {
    await agent.close();
    await store.dispose();
  });

  it('costs the sync compressions, never the sync: every variant still decodes to its file', async () => {
    await agent.call('PUT', '/v1/files/site/a.js', { body: text('a1') });
    await settled(agent, 1);
    // the directory replaced by a link that resolves nowhere (a loop): each look into it fails with ELOOP
    await rm(store.variantCacheDir, { recursive: true, force: true });
    await symlink('variant-cache', store.variantCacheDir);
    const record = await sync(agent);
    assert.deepEqual(
      { cached: record.variants?.cached, compressed: record.variants?.compressed },
      { cached: 0, compressed: 2 },
    );
    const mounted = await mountedOf(store);
    assert.equal(brotliDecompressSync(await readFile(join(mounted, 'site/a.js.br'))).toString(), text('a1'));
    assert.equal(await checkCopyIndex(mounted), 2);
  });
});

/**
 * A cache entry is linked into the copy it serves: a copy's variant
 * rewritten in place (drift: inode and size kept) rewrites the entry too,
 * under a time of its own. The next copy to take the entry (the other
 * copy, catching up) was refused the link (another time than its
 * original's) and copied the entry's bytes instead, under the hash the
 * agent had recorded: a variant that decodes to garbage.
 */
describe('a cache entry whose linked variant drifted in place', () => {
  let store: TempStore;
  let agent: TestAgent;
  before(async () => {
    store = await tempStore();
    await store.fill('master', { 'site/a.js': text('a') });
    agent = await startTestAgent(store, { auto: false, watchMaster: false });
  });
  after(async () => {
    await agent.close();
    await store.dispose();
  });

  it('is not taken by the other copy: it makes its own, which decodes to its file', async () => {
    await agent.call('PUT', '/v1/files/site/a.js', { body: text('a1') });
    await settled(agent, 1);
    const first = await sync(agent);
    assert.equal(first.variants?.cached, 2, 'the first copy linked the entries');
    await flipInPlace(join(await mountedOf(store), 'site/a.js.br'));
    const second = await sync(agent);
    assert.deepEqual(
      { cached: second.variants?.cached, compressed: second.variants?.compressed },
      { cached: 1, compressed: 1 },
      'the drifted br entry was taken (the gzip one, untouched, is)',
    );
    const mounted = await mountedOf(store);
    assert.equal(brotliDecompressSync(await readFile(join(mounted, 'site/a.js.br'))).toString(), text('a1'));
    assert.equal(await checkCopyIndex(mounted), 2);
  });
});
