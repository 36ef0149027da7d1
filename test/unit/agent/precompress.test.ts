import assert from 'node:assert/strict';
import { mkdir, readFile, readdir, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { brotliDecompressSync, gunzipSync } from 'node:zlib';
import { contentHash } from '../../../src/store/content-index.js';
import { readCopyIndex } from '../../../src/store/recent-records.js';
import { readEpochFile } from '../../../src/store/epoch-file.js';
import { TREE_DEFAULTS } from '../../../src/tree/tree-defaults.js';
import { cacheEntryName } from '../../../src/tree/variant-cache.js';
import { type TestAgent, agentStatus, startTestAgent, syncOk } from '../../../testkit/agent.js';
import { type TempStore, tempStore } from '../../../testkit/store.js';
import { checkCopyIndex, compressibleText as text } from '../../../testkit/variants.js';
import { waitFor } from '../../../testkit/wait.js';

const settings = TREE_DEFAULTS.variantSettings;

const sync = syncOk;
const status = agentStatus;
/** Until the agent has compressed `files` files and has nothing waiting. */
const precompressed = (agent: TestAgent, files: number) =>
  waitFor(`${files} files precompressed`, async () => {
    const p = (await status(agent)).precompress;
    return p && p.files >= files && p.queued === 0 ? p : null;
  });

describe('variants compressed as files land in master', () => {
  let store: TempStore;
  let agent: TestAgent;
  let cache: string;
  before(async () => {
    store = await tempStore();
    const files: Record<string, string> = {};
    for (let i = 0; i < 8; i++) files[`site/p${i}.js`] = text(`p${i}`);
    await store.fill('master', files);
    cache = store.variantCacheDir;
    // an entry some agent before this one made: it knows nothing of it, and removes it
    await mkdir(cache, { recursive: true });
    await writeFile(join(cache, cacheEntryName(contentHash(Buffer.from('old')), 'br', settings)), 'stale');
    agent = await startTestAgent(store, { auto: false, watchMaster: true });
  });
  after(async () => {
    await agent.close();
    await store.dispose();
  });

  it('an entry left by an agent before a restart is removed at start', async () => {
    await waitFor('the stale entry gone', async () => (await readdir(cache)).length === 0);
  });

  it('a sync links what the write API put, compressed before the sync asked: none compressed on its way', async () => {
    for (let i = 0; i < 4; i++) await agent.call('PUT', `/v1/files/site/p${i}.js`, { body: text(`api${i}`) });
    await precompressed(agent, 4);
    const record = await sync(agent);
    assert.deepEqual(
      { compressed: record.variants?.compressed, cached: record.variants?.cached },
      { compressed: 0, cached: 8 },
    );
    const mounted = store.slots[(await readEpochFile(store.epochFile))?.mounted ?? 'a'];
    assert.equal(brotliDecompressSync(await readFile(join(mounted, 'site/p2.js.br'))).toString(), text('api2'));
    assert.equal(gunzipSync(await readFile(join(mounted, 'site/p2.js.gz'))).toString(), text('api2'));
    assert.equal(await checkCopyIndex(mounted), 16);
    // the copy's variant is the cache's entry, by link
    const record2 = (await readCopyIndex(mounted, 'site'))?.files['p2.js'];
    const name = cacheEntryName(record2?.sha256 ?? '', 'br', settings);
    assert.equal((await stat(join(cache, name))).ino, (await stat(join(mounted, 'site/p2.js.br'))).ino);
    // and Prometheus sees it
    const metrics = await (await agent.call('GET', '/metrics', { auth: false })).text();
    const value = (line: string) => Number(new RegExp(`^${line} (\\d+)$`, 'm').exec(metrics)?.[1]);
    assert.equal(value('mirrorswap_agent_precompress_files_total\\{result="compressed"\\}'), 4);
    assert.equal(value('mirrorswap_agent_precompress_files_total\\{result="failed"\\}'), 0);
    assert.equal(value('mirrorswap_agent_variant_cache_entries'), 8);
    // the bytes they hold against the cache's budget: what makes a full cache drop changes to the sync
    const entries = (await readdir(cache)).filter((n) => !n.startsWith('.'));
    let bytes = 0;
    for (const n of entries) bytes += (await stat(join(cache, n))).size;
    assert.equal(value('mirrorswap_agent_variant_cache_bytes'), bytes);
  });

  it('the other copy takes them too, and then the cache lets them go', async () => {
    const record = await sync(agent);
    assert.equal(record.variants?.compressed, 0);
    assert.equal(record.variants?.cached, 8);
    for (const slot of ['a', 'b'] as const) assert.equal(await checkCopyIndex(store.slots[slot]), 16, slot);
    await waitFor('the entries both copies took pruned', async () => (await status(agent)).precompress?.entries === 0);
    assert.deepEqual(await readdir(cache), []);
  });

  it('what a tool writes into master is compressed as the watcher sees it', async () => {
    await writeFile(join(store.master, 'site/p5.js'), text('tool5'));
    await precompressed(agent, 5);
    const record = await sync(agent);
    assert.equal(record.variants?.cached, 2);
    assert.equal(record.variants?.compressed, 0);
    const mounted = store.slots[(await readEpochFile(store.epochFile))?.mounted ?? 'a'];
    assert.equal(brotliDecompressSync(await readFile(join(mounted, 'site/p5.js.br'))).toString(), text('tool5'));
  });

  it('a link in master is never followed: nothing outside master is read or compressed', async () => {
    const outside = join(store.root, 'outside.js');
    await writeFile(outside, text('secret'));
    await symlink(outside, join(store.master, 'site/evil.js'));
    await mkdir(join(store.root, 'elsewhere'));
    await writeFile(join(store.root, 'elsewhere/x.js'), text('secret'));
    await symlink(join(store.root, 'elsewhere'), join(store.master, 'linked-dir'));
    await writeFile(join(store.master, 'site/p6.js'), text('tool6')); // a file after them, to know they were seen
    await precompressed(agent, 6);
    const secret = contentHash(Buffer.from(text('secret')));
    const names = await readdir(cache);
    assert.ok(!names.some((n) => n.startsWith(secret)), 'no entry of the linked file');
    assert.equal((await status(agent)).precompress?.files, 6);
  });
});

describe('--no-precompress', () => {
  let store: TempStore;
  let agent: TestAgent;
  before(async () => {
    store = await tempStore();
    await store.fill('master', { 'site/a.js': text('a') });
    agent = await startTestAgent(store, { auto: false, watchMaster: true, precompress: false });
  });
  after(async () => {
    await agent.close();
    await store.dispose();
  });

  it('compresses at sync, as before, and keeps no cache', async () => {
    await agent.call('PUT', '/v1/files/site/a.js', { body: text('a2') });
    const record = await sync(agent);
    assert.equal(record.variants?.compressed, 2);
    assert.equal(record.variants?.cached, 0);
    assert.equal((await status(agent)).precompress, undefined);
    assert.deepEqual(await readdir(store.variantCacheDir).catch(() => []), []);
  });
});
