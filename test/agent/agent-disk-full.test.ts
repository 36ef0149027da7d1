import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { AgentStatus, SwapRecord } from '../../src/agent/agent.js';
import { readEpochFile } from '../../src/store/epoch-file.js';
import { type TestAgent, startTestAgent } from '../../testkit/agent.js';
import { type TempStore, tempFilesIn, tempStore } from '../../testkit/store.js';
import { mountTmpfs } from '../../testkit/tools.js';
import { tarOf } from '../../testkit/tar.js';
import { checkCopyIndex, compressibleText } from '../../testkit/variants.js';
import { waitFor } from '../../testkit/wait.js';

describe('agent on a full disk', () => {
  let store: TempStore;
  let agent: TestAgent;
  let unmount: (() => void) | undefined;

  before(async () => {
    store = await tempStore();
    // master on a 1 MiB tmpfs: a real ENOSPC, not an injected one
    unmount = mountTmpfs(store.master, '1m');
    agent = await startTestAgent(store, { watchMaster: false }, 8 * 1024 * 1024);
  });
  after(async () => {
    await agent?.close();
    unmount?.();
    await store.dispose();
  });

  it('answers 507 and leaves no partial file in master', async () => {
    const res = await agent.call('PUT', '/v1/files/huge.bin', { body: Buffer.alloc(2 * 1024 * 1024, 1) });
    assert.equal(res.status, 507);
    assert.equal(((await res.json()) as { error: string }).error, 'DISK_FULL');
    await assert.rejects(stat(join(store.master, 'huge.bin')), { code: 'ENOENT' });
    assert.deepEqual(await tempFilesIn(store.master), []);
    assert.equal((await agent.call('PUT', '/v1/files/small.txt', { body: 'fits' })).status, 201);
  });

  it('answers 507 for a tar batch whose last file does not fit whole, and commits none of it', async () => {
    // leaves master a few pages: the file's one write is cut short, and the rest must fail, not vanish
    const filler = join(store.master, 'filler.bin');
    await writeFile(filler, Buffer.alloc(1024 * 1024 - 32 * 1024, 1));
    try {
      const body = await tarOf([[{ name: 'page.bin' }, Buffer.alloc(48 * 1024, 2)]]);
      const res = await agent.call('POST', '/v1/batch', { headers: { 'content-type': 'application/x-tar' }, body });
      assert.equal(res.status, 507);
      assert.equal(((await res.json()) as { error: string }).error, 'DISK_FULL');
      await assert.rejects(stat(join(store.master, 'page.bin')), { code: 'ENOENT' });
      assert.deepEqual(await tempFilesIn(store.master), []);
    } finally {
      await rm(filler);
    }
  });
});

describe('a write batch that fails half applied', () => {
  let store: TempStore;
  let agent: TestAgent;
  let unmount: (() => void) | undefined;

  before(async () => {
    store = await tempStore();
    // master on a tmpfs of few inodes: a batch's staged files fit, the new directory it needs does not
    unmount = mountTmpfs(store.master, '4m', 64);
    await store.fill('master', { 'old/kept.txt': 'kept' });
    agent = await startTestAgent(store, { watchMaster: false }, 1024 * 1024);
  });
  after(async () => {
    await agent?.close();
    unmount?.();
    await store.dispose();
  });

  it('is finished before anything else runs: no sync copies half of it, and the next write finishes it', async () => {
    assert.equal((await agent.call('PUT', '/v1/files/old/first.txt', { body: '1' })).status, 201);
    const fillers: string[] = [];
    for (;;) {
      const filler = join(store.master, `filler-${fillers.length}`);
      try {
        await writeFile(filler, '');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOSPC') break;
        throw err;
      }
      fillers.push(filler);
    }
    for (const filler of fillers.splice(-2)) await rm(filler); // room for the batch's two staged files only
    const ops = [
      { op: 'put', path: 'old/new.txt', content: 'A' },
      { op: 'put', path: 'fresh/b.txt', content: 'B' },
    ];
    const res = await agent.call('POST', '/v1/batch', {
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ops }),
    });
    assert.equal(res.status, 503);
    assert.equal(((await res.json()) as { error: string }).error, 'BATCH_UNFINISHED');
    // half of it is in master, and stays out of every copy
    assert.equal(await readFile(join(store.master, 'old/new.txt'), 'utf8'), 'A');
    const refused = (await (await agent.call('POST', '/v1/sync?wait=1')).json()) as SwapRecord;
    assert.equal(refused.result, 'failed', JSON.stringify(refused));
    assert.equal(refused.error?.code, 'BATCH_UNFINISHED');
    assert.equal((await readEpochFile(store.epochFile))?.epoch, 1);
    const held = await agent.call('DELETE', '/v1/files/old/kept.txt');
    assert.equal(held.status, 503);
    assert.equal(((await held.json()) as { error: string }).error, 'BATCH_UNFINISHED');
    assert.equal(await readFile(join(store.master, 'old/kept.txt'), 'utf8'), 'kept');
    // room again: the next write finishes the batch first, then goes through
    for (const filler of fillers) await rm(filler);
    assert.equal((await agent.call('DELETE', '/v1/files/old/kept.txt')).status, 200);
    assert.equal(await readFile(join(store.master, 'fresh/b.txt'), 'utf8'), 'B');
    assert.deepEqual(await tempFilesIn(store.master), []);
    const synced = (await (await agent.call('POST', '/v1/sync?wait=1')).json()) as SwapRecord;
    assert.equal(synced.result, 'ok', JSON.stringify(synced.error));
    assert.equal(await readFile(join(store.slots[synced.to], 'fresh/b.txt'), 'utf8'), 'B');
    assert.equal(await readFile(join(store.slots[synced.to], 'old/new.txt'), 'utf8'), 'A');
  });
});

describe('the variant cache on a full disk of its own', () => {
  let store: TempStore;
  let agent: TestAgent;
  let unmount: (() => void) | undefined;

  before(async () => {
    store = await tempStore();
    // the cache on a 256 KiB tmpfs: a real ENOSPC, and another file system than the copies' (no link)
    await mkdir(store.variantCacheDir, { recursive: true });
    unmount = mountTmpfs(store.variantCacheDir, '256k');
    await store.fill('master', { 'site/small.js': compressibleText('small0') });
    agent = await startTestAgent(store, { auto: false, watchMaster: false }, 8 * 1024 * 1024);
  });
  after(async () => {
    await agent?.close();
    unmount?.();
    await store.dispose();
  });

  const precompressStatus = async () =>
    ((await (await agent.call('GET', '/v1/status')).json()) as AgentStatus).precompress;

  it('a full cache costs the sync its compressions, never a variant, and leaves no temp file', async () => {
    assert.equal(
      (await agent.call('PUT', '/v1/files/site/small.js', { body: compressibleText('small1') })).status,
      201,
    );
    await waitFor('small.js precompressed', async () => ((await precompressStatus())?.files ?? 0) >= 1);
    // text that compresses to about three quarters: four of them overflow the cache
    for (let i = 0; i < 4; i++) {
      const body = randomBytes(240 * 1024).toString('base64');
      assert.equal((await agent.call('PUT', `/v1/files/site/big${i}.js`, { body })).status, 201);
    }
    const done = await waitFor('the cache full', async () => {
      const s = await precompressStatus();
      return s && s.queued === 0 && s.failed >= 1 ? s : null;
    });
    assert.ok(done.files < 5, 'not every file fitted');
    assert.equal(agent.logs.lines.filter((l) => l.msg.startsWith('could not precompress')).length, 1, 'said once');
    const record = (await (await agent.call('POST', '/v1/sync?wait=1')).json()) as SwapRecord;
    assert.equal(record.result, 'ok', JSON.stringify(record.error ?? record));
    assert.ok((record.variants?.cached ?? 0) >= 2, 'what fitted is taken');
    assert.ok((record.variants?.compressed ?? 0) >= 2, 'what did not is compressed by the sync');
    const mounted = store.slots[(await readEpochFile(store.epochFile))?.mounted ?? 'a'];
    assert.equal(await checkCopyIndex(mounted), 10, 'every variant decodes to its original');
    assert.equal((await stat(join(mounted, 'site/small.js.br'))).nlink, 1, 'another file system: a copy, not a link');
    assert.deepEqual(
      (await readdir(store.variantCacheDir)).filter((n) => n.startsWith('.tmp-')),
      [],
      'no temp file in the cache',
    );
  });
});
