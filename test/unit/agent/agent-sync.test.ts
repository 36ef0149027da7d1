import assert from 'node:assert/strict';
import { mkdir, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { SwapRecord } from '../../../src/agent/agent.js';
import { readEpochFile } from '../../../src/store/epoch-file.js';
import { type TestAgent, startTestAgent } from '../../../testkit/agent.js';
import { type TestApp, startApp } from '../../../testkit/app.js';
import { rawGet } from '../../../testkit/server.js';
import { type TempStore, tempFilesIn, tempStore } from '../../../testkit/store.js';
import { waitFor } from '../../../testkit/wait.js';

// The agent's readiness during the init of a 2,000-file store is in the full tier:
// test/agent/agent-sync.test.ts.

describe('agent sync and rollback through the API', () => {
  let store: TempStore;
  let agent: TestAgent;
  let web: TestApp;

  before(async () => {
    store = await tempStore();
    await store.fill('master', { 'page.html': 'v1', 'keep.txt': 'same' });
    agent = await startTestAgent(store);
    web = await startApp({ store: store.root, serverId: 'web-test', heartbeatInterval: 100 });
  });
  after(async () => {
    await web.close();
    await agent.close();
    await store.dispose();
  });

  const body = async (path: string) => (await rawGet(web.port, path)).body.toString();

  it('init mirrored master into both slots and published epoch 1', async () => {
    const epoch = await readEpochFile(store.epochFile);
    assert.equal(epoch?.epoch, 1);
    assert.equal(await readFile(join(store.slots.a, 'page.html'), 'utf8'), 'v1');
    assert.equal(await readFile(join(store.slots.b, 'page.html'), 'utf8'), 'v1');
    assert.equal(await body('/page.html'), 'v1');
  });

  it('a sync with wait copies only the changes, swaps, and reports each phase', async () => {
    await agent.call('PUT', '/v1/files/page.html', { body: 'v2' });
    await agent.call('PUT', '/v1/files/added.txt', { body: 'new' });
    const res = await agent.call('POST', '/v1/sync?wait=1');
    assert.equal(res.status, 200);
    const record = (await res.json()) as SwapRecord;
    assert.equal(record.result, 'ok');
    assert.equal(record.mode, 'incremental');
    assert.equal(record.epoch, 2);
    assert.equal(record.copied.files, 2);
    for (const phase of ['wait', 'copy', 'publish', 'drain'] as const)
      assert.equal(typeof record.phases[phase], 'number');
    assert.equal(await body('/page.html'), 'v2');
    assert.equal(await body('/added.txt'), 'new');
  });

  it('a delete reaches the served copy on the next sync', async () => {
    await agent.call('DELETE', '/v1/files/added.txt');
    const record = (await (await agent.call('POST', '/v1/sync?wait=1')).json()) as SwapRecord;
    assert.equal(record.result, 'ok');
    assert.equal((await rawGet(web.port, '/added.txt')).status, 404);
  });

  it('rollback mounts the previous copy at once and pauses automatic syncs', async () => {
    assert.equal(await body('/added.txt').catch(() => ''), 'app fallthrough');
    const res = await agent.call('POST', '/v1/rollback');
    assert.equal(res.status, 200);
    const record = (await res.json()) as SwapRecord;
    assert.equal(record.kind, 'rollback');
    assert.equal(record.copied.files, 0);
    assert.equal(await body('/added.txt'), 'new');
    const status = (await (await agent.call('GET', '/v1/status')).json()) as { paused: boolean; epoch: number };
    assert.equal(status.paused, true);
    assert.equal(status.epoch, 4);
  });

  it('the next explicit sync brings master back and lifts the pause', async () => {
    const record = (await (await agent.call('POST', '/v1/sync?wait=1')).json()) as SwapRecord;
    assert.equal(record.result, 'ok');
    assert.equal((await rawGet(web.port, '/added.txt')).status, 404);
    const status = (await (await agent.call('GET', '/v1/status')).json()) as {
      paused: boolean;
      pendingChanges: number;
    };
    assert.equal(status.paused, false);
    assert.equal(status.pendingChanges, 0);
  });

  it('a journal sync of hundreds of files replaced, added and deleted leaves each slot equal to master and no temp file', async () => {
    // enough paths that what the copy replaces is kept aside and freed after the publish
    const syncOk = async () => {
      const record = (await (await agent.call('POST', '/v1/sync?wait=1')).json()) as SwapRecord;
      assert.equal(record.result, 'ok');
      return record;
    };
    await mkdir(join(store.master, 'many/gone'), { recursive: true });
    for (let i = 0; i < 300; i++) await writeFile(join(store.master, 'many', `f${i}.txt`), `one ${i}`);
    for (let i = 0; i < 20; i++) await writeFile(join(store.master, 'many/gone', `g${i}.txt`), `gone ${i}`);
    for (let round = 0; round < 2; round++) await syncOk();
    await rm(join(store.master, 'many/gone'), { recursive: true });
    for (let i = 0; i < 300; i++) await writeFile(join(store.master, 'many', `f${i}.txt`), `two ${i}`);
    for (let i = 300; i < 320; i++) await writeFile(join(store.master, 'many', `f${i}.txt`), `two ${i}`);
    for (let round = 0; round < 2; round++) {
      const record = await syncOk();
      assert.equal(record.mode, 'incremental');
      // the moment the sync returns, the copy just mounted holds no temp directory
      assert.deepEqual(await tempFilesIn(store.slots[record.to]), []);
      const names = (await readdir(join(store.slots[record.to], 'many'))).sort();
      assert.deepEqual(names, (await readdir(join(store.master, 'many'))).sort());
      for (const i of [0, 150, 299, 319])
        assert.equal(await readFile(join(store.slots[record.to], 'many', `f${i}.txt`), 'utf8'), `two ${i}`);
      assert.equal(await body('/many/f7.txt'), 'two 7');
    }
    for (const slot of ['a', 'b'] as const) assert.deepEqual(await tempFilesIn(store.slots[slot]), []);
  });

  it('a sync with nothing to copy still swaps, and leaves the slot positions file alone', async () => {
    // one more sync brings the other slot up to date too; after it neither has anything to copy
    assert.equal(((await (await agent.call('POST', '/v1/sync?wait=1')).json()) as SwapRecord).result, 'ok');
    const before = await stat(store.slotPositionsFile);
    const record = (await (await agent.call('POST', '/v1/sync?wait=1')).json()) as SwapRecord;
    assert.equal(record.result, 'ok');
    assert.equal(record.mode, 'incremental');
    assert.deepEqual(record.copied, { files: 0, bytes: 0, deleted: 0, dirs: 0, skipped: 0, unreadable: 0 });
    assert.equal((await readEpochFile(store.epochFile))?.mounted, record.to);
    assert.equal(await body('/page.html'), 'v2');
    const after = await stat(store.slotPositionsFile);
    assert.equal(after.ino, before.ino, 'the slot positions file was rewritten for a sync that copied nothing');
    assert.equal(after.mtimeMs, before.mtimeMs);
  });

  it('verify reports no difference, and one after a hand edit of the mounted copy', async () => {
    const ok = (await (await agent.call('GET', '/v1/verify')).json()) as { slot: string; differences: unknown[] };
    assert.deepEqual(ok.differences, []);
    await writeFile(join(store.slots[ok.slot as 'a' | 'b'], 'stray.txt'), 'not from master');
    const bad = (await (await agent.call('GET', '/v1/verify')).json()) as {
      differences: { path: string; kind: string }[];
    };
    assert.deepEqual(bad.differences, [{ path: 'stray.txt', kind: 'extra' }]);
  });

  it('status lists the web server with its epoch and in-flight counts', async () => {
    const status = (await (await agent.call('GET', '/v1/status')).json()) as {
      epoch: number;
      servers: { id: string; epoch: number; live: boolean }[];
    };
    const server = await waitFor('the server at the current epoch', () =>
      status.servers.find((s) => s.id === 'web-test' && s.epoch === status.epoch),
    );
    assert.equal(server.live, true);
  });

  it('picks up a file written straight into master by another tool', async () => {
    await mkdir(join(store.master, 'tool'), { recursive: true });
    await writeFile(join(store.master, 'tool/out.txt'), 'from a tool');
    await waitFor('the watcher to journal it', async () => {
      const s = (await (await agent.call('GET', '/v1/status')).json()) as { pendingChanges: number };
      return s.pendingChanges > 0;
    });
    await agent.call('POST', '/v1/sync?wait=1');
    assert.equal(await body('/tool/out.txt'), 'from a tool');
  });
});

describe('a file and a directory trading places in master', () => {
  let store: TempStore;
  let agent: TestAgent;
  let web: TestApp;

  before(async () => {
    store = await tempStore();
    await store.fill('master', { 'kind/x/inner.txt': 'dir at first' });
    agent = await startTestAgent(store);
    web = await startApp({ store: store.root, serverId: 'web-kind', heartbeatInterval: 100 });
  });
  after(async () => {
    await web.close();
    await agent.close();
    await store.dispose();
  });

  /** Two syncs: the change reaches both copies, the second over the copy that held the old kind. */
  const syncBoth = async (query = '') => {
    for (let i = 0; i < 2; i++) {
      const record = (await (await agent.call('POST', `/v1/sync?wait=1${query}`)).json()) as SwapRecord;
      assert.equal(record.result, 'ok', JSON.stringify(record));
    }
  };

  for (const [how, query] of [
    ['incremental', ''],
    ['full', '&full=1'],
  ] as const) {
    it(`reaches both copies by ${how} syncs, both ways`, async () => {
      assert.equal((await agent.call('DELETE', '/v1/files/kind/x')).status, 200);
      assert.equal((await agent.call('PUT', '/v1/files/kind/x', { body: `file (${how})` })).status, 201);
      await syncBoth(query);
      assert.equal((await rawGet(web.port, '/kind/x')).body.toString(), `file (${how})`);
      for (const slot of [store.slots.a, store.slots.b]) {
        assert.equal(await readFile(join(slot, 'kind/x'), 'utf8'), `file (${how})`);
      }

      assert.equal((await agent.call('DELETE', '/v1/files/kind/x')).status, 200);
      assert.equal((await agent.call('PUT', '/v1/files/kind/x/inner.txt', { body: `dir (${how})` })).status, 201);
      await syncBoth(query);
      assert.equal((await rawGet(web.port, '/kind/x/inner.txt')).body.toString(), `dir (${how})`);
      for (const slot of [store.slots.a, store.slots.b]) {
        assert.equal(await readFile(join(slot, 'kind/x/inner.txt'), 'utf8'), `dir (${how})`);
        assert.deepEqual(await tempFilesIn(slot), []);
      }
    });
  }
});
