import assert from 'node:assert/strict';
import { chmod, lstat, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Precompress } from '../../../src/agent/master/precompress.js';
import type { Logger } from '../../../src/core/logger.js';
import { readEpochFile } from '../../../src/store/epoch-file.js';
import { TREE_DEFAULTS } from '../../../src/tree/tree-defaults.js';
import { type TestAgent, agentStatus, startTestAgent, syncOk } from '../../../testkit/agent.js';
import { memoryLogger } from '../../../testkit/logger.js';
import { type TempStore, tempStore } from '../../../testkit/store.js';
import { compressibleText as text } from '../../../testkit/variants.js';
import { waitFor } from '../../../testkit/wait.js';

const settings = TREE_DEFAULTS.variantSettings;

const sync = syncOk;
const status = agentStatus;

describe('Precompress in isolation', () => {
  let root: string;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'mirrorswap-precompress-'));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  const setup = async (name: string) => {
    const master = join(root, name, 'master');
    const cache = join(root, name, 'cache');
    await mkdir(master, { recursive: true });
    const p = new Precompress({ master, cache, settings, log: memoryLogger() as unknown as Logger });
    // the cache is made in the background, as the agent starts
    await waitFor('the cache made', async () => (await lstat(cache).catch(() => null)) !== null);
    return { master, cache, p };
  };
  const idle = (p: Precompress, files: number) =>
    waitFor(`${files} files precompressed`, async () => {
      const s = p.status();
      return s.files >= files && s.queued === 0 ? s : null;
    });

  it('an entry made while a prune runs is not forgotten by that prune', async () => {
    const { master, cache, p } = await setup('prune-race');
    await idle(p, 0);
    // a cache with many young temp files: a prune lstats each (kept: a write under way is younger)
    for (let i = 0; i < 3000; i++) await writeFile(join(cache, `.tmp-${i.toString(16).padStart(16, '0')}`), '');
    await writeFile(join(master, 'a.js'), text('a'));
    const pruning = p.prune(); // the prune after a swap, as the agent runs it (not awaited there)
    p.add(['a.js']); // a file landing right after the copy: precompress resumed
    await pruning;
    await idle(p, 1);
    const names = (await readdir(cache)).filter((n) => !n.startsWith('.tmp-'));
    assert.equal(names.length, 2, 'both entries are on disk');
    assert.equal(p.status().entries, 2, 'and the agent still knows them (else no sync takes them)');
    await p.pause();
  });

  it('a cache at its byte budget takes no more: what lands then is left to the sync', async () => {
    const master = join(root, 'budget', 'master');
    const cache = join(root, 'budget', 'cache');
    await mkdir(master, { recursive: true });
    const p = new Precompress({ master, cache, settings, log: memoryLogger() as unknown as Logger, maxBytes: 1024 });
    for (let i = 0; i < 3; i++) await writeFile(join(master, `f${i}.js`), text(`f${i}`));
    p.add(['f0.js']);
    await idle(p, 1);
    p.add(['f1.js', 'f2.js']);
    await waitFor('the others dropped', () => (p.status().dropped >= 2 && p.status().queued === 0 ? true : null));
    assert.equal(p.status().files, 1);
    assert.equal((await readdir(cache)).length, 2, "f0's two entries only");
    await p.close();
  });

  it('a file rewritten again and again before a sync keeps a bounded cache (its latest bytes only)', async () => {
    const { master, cache, p } = await setup('rewrites');
    const rounds = 20;
    for (let i = 0; i < rounds; i++) {
      await writeFile(join(master, 'live.js'), text(`version ${i}`));
      p.add(['live.js']);
      await idle(p, i + 1);
    }
    const names = await readdir(cache);
    // every version's entries stay until an hour has passed (and a prune runs: only after a swap)
    assert.ok(names.length <= 2, `${names.length} entries for one file; ${p.status().entries} known`);
    await p.pause();
  });
});

describe('a variant linked from the cache has its original mode', () => {
  let store: TempStore;
  let agent: TestAgent;
  before(async () => {
    store = await tempStore();
    await store.fill('master', { 'site/keep.js': text('keep') });
    agent = await startTestAgent(store, { auto: false, watchMaster: true });
  });
  after(async () => {
    await agent.close();
    await store.dispose();
  });

  it('a file made private in master after it landed: its variants are as private as it is', async () => {
    const file = join(store.master, 'site/private.js');
    await writeFile(file, text('private'), { mode: 0o644 });
    await chmod(file, 0o644);
    await waitFor('precompressed', async () => {
      const p = (await status(agent)).precompress;
      return p && p.files >= 1 && p.queued === 0 ? p : null;
    });
    await chmod(file, 0o600); // mtime unchanged: the cache entry's time still matches
    const record = await sync(agent);
    const mounted = store.slots[(await readEpochFile(store.epochFile))?.mounted ?? 'a'];
    const orig = (await lstat(join(mounted, 'site/private.js'))).mode & 0o777;
    const br = (await lstat(join(mounted, 'site/private.js.br'))).mode & 0o777;
    assert.equal(orig, 0o600);
    assert.equal(br, 0o600, `variant mode ${br.toString(8)} (cached: ${record.variants?.cached})`);
  });
});

describe('close() leaves no prune of the variant cache running', () => {
  it('the start prune is over when close returns', async () => {
    const store = await tempStore();
    try {
      await mkdir(store.variantCacheDir, { recursive: true });
      // entries of an agent before this one (unknown: each one removed by the start prune)
      for (let i = 0; i < 3000; i++) await writeFile(join(store.variantCacheDir, `x${i}.br5`), 'stale');
      const agent = await startTestAgent(store, { auto: false });
      await agent.close();
      const atClose = (await readdir(store.variantCacheDir)).length;
      await new Promise((r) => setTimeout(r, 1000));
      const later = (await readdir(store.variantCacheDir)).length;
      assert.equal(
        later,
        atClose,
        `the cache changed after close: ${atClose} entries at close, ${later} a second later`,
      );
    } finally {
      await store.dispose();
    }
  });
});

describe('a file made private keeps no open variant (no precompress: the kept path)', () => {
  let store: TempStore;
  let agent: TestAgent;
  before(async () => {
    store = await tempStore();
    await store.fill('master', { 'site/private.js': text('private') });
    agent = await startTestAgent(store, { auto: false, watchMaster: true, precompress: false });
  });
  after(async () => {
    await agent.close();
    await store.dispose();
  });

  it('chmod 600 in master: the next copy has no 644 variant of it', async () => {
    await chmod(join(store.master, 'site/private.js'), 0o644);
    await sync(agent);
    await sync(agent); // both copies hold 0644 variants
    await chmod(join(store.master, 'site/private.js'), 0o600);
    await sync(agent);
    const mounted = store.slots[(await readEpochFile(store.epochFile))?.mounted ?? 'a'];
    assert.equal((await lstat(join(mounted, 'site/private.js'))).mode & 0o777, 0o600);
    const br = (await lstat(join(mounted, 'site/private.js.br'))).mode & 0o777;
    assert.equal(br & ~0o600, 0, `variant mode ${br.toString(8)}`);
  });
});
