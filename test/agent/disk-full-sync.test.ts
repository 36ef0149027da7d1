import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { SwapRecord } from '../../src/agent/agent.js';
import { readEpochFile } from '../../src/store/epoch-file.js';
import { type TestAgent, startTestAgent } from '../../testkit/agent.js';
import { type TempStore, tempFilesIn, tempStore } from '../../testkit/store.js';
import { mountTmpfs } from '../../testkit/tools.js';

describe('a sync into a standby whose disk fills up', () => {
  let store: TempStore;
  let agent: TestAgent;
  let unmount: (() => void) | undefined;

  before(async () => {
    store = await tempStore();
    await store.fill('master', { 'page.html': 'v1' });
    // slot b on its own 2 MiB disk (a real ENOSPC, not an injected one)
    unmount = mountTmpfs(store.slots.b, '2m');
    agent = await startTestAgent(store, { watchMaster: false }, 8 * 1024 * 1024);
  });
  after(async () => {
    await agent?.close();
    unmount?.();
    await store.dispose();
  });

  it('fails the sync with a clear error, leaves the mounted copy untouched and no temp file behind', async () => {
    assert.equal((await agent.call('PUT', '/v1/files/page.html', { body: 'v2' })).status, 201);
    assert.equal(
      (await agent.call('PUT', '/v1/files/huge.bin', { body: Buffer.alloc(3 * 1024 * 1024, 7) })).status,
      201,
    );
    const res = await agent.call('POST', '/v1/sync?wait=1');
    assert.equal(res.status, 503);
    const record = (await res.json()) as SwapRecord;
    assert.equal(record.result, 'failed');
    assert.match(record.error?.message ?? '', /ENOSPC|no space/i);
    const epoch = await readEpochFile(store.epochFile);
    assert.equal(epoch?.epoch, 1, 'a failed copy published an epoch');
    assert.equal(epoch?.mounted, 'a');
    assert.equal(await readFile(join(store.slots.a, 'page.html'), 'utf8'), 'v1');
    assert.deepEqual(await tempFilesIn(store.slots.b), []);
    const status = (await (await agent.call('GET', '/v1/status')).json()) as { standby: { syncing: boolean } };
    assert.equal(status.standby.syncing, true, 'the half-copied standby must be known as mixed');
    const rollback = (await (await agent.call('POST', '/v1/rollback')).json()) as SwapRecord;
    assert.equal(rollback.error?.code, 'NO_ROLLBACK', 'a half-copied standby was mounted by a rollback');
  });

  it('succeeds once the space is there again', async () => {
    assert.equal((await agent.call('DELETE', '/v1/files/huge.bin')).status, 200);
    const record = (await (await agent.call('POST', '/v1/sync?wait=1')).json()) as SwapRecord;
    assert.equal(record.result, 'ok', JSON.stringify(record.error));
    assert.equal(await readFile(join(store.slots.b, 'page.html'), 'utf8'), 'v2');
    const verify = (await (await agent.call('GET', '/v1/verify')).json()) as { differences: unknown[] };
    assert.deepEqual(verify.differences, []);
  });

  it('fails the same way when the files that do not fit are small ones, copied in the walk threads', async () => {
    // a batch write of 800 files of 4 KiB: 3.2 MiB, where slot b holds 2 MiB
    const ops = Array.from({ length: 800 }, (_, i) => ({
      op: 'put',
      path: `small/f${i}.bin`,
      content: Buffer.alloc(4096, i % 251).toString('base64'),
      encoding: 'base64',
    }));
    const batch = await agent.call('POST', '/v1/batch', {
      body: JSON.stringify({ ops }),
      headers: { 'content-type': 'application/json' },
    });
    assert.equal(batch.status, 200, await batch.text());
    const before = await readEpochFile(store.epochFile);
    let record = (await (await agent.call('POST', '/v1/sync?wait=1')).json()) as SwapRecord;
    if (record.to === 'a') {
      // slot a (the roomy one) first: the next sync goes to b
      assert.equal(record.result, 'ok', JSON.stringify(record.error));
      record = (await (await agent.call('POST', '/v1/sync?wait=1')).json()) as SwapRecord;
    }
    assert.equal(record.to, 'b');
    assert.equal(record.result, 'failed');
    assert.match(record.error?.message ?? '', /ENOSPC|no space/i);
    assert.deepEqual(await tempFilesIn(store.slots.b), [], 'temp copies left in the full slot');
    assert.notEqual((await readEpochFile(store.epochFile))?.mounted, 'b');
    assert.ok(((await readEpochFile(store.epochFile))?.epoch ?? 0) >= (before?.epoch ?? 0));
    // room again: the same sync goes through
    const del = ops.slice(100).map((o) => ({ op: 'delete', path: o.path }));
    const removed = await agent.call('POST', '/v1/batch', {
      body: JSON.stringify({ ops: del }),
      headers: { 'content-type': 'application/json' },
    });
    assert.equal(removed.status, 200, await removed.text());
    for (let i = 0; i < 2; i++) {
      const ok = (await (await agent.call('POST', '/v1/sync?wait=1')).json()) as SwapRecord;
      assert.equal(ok.result, 'ok', JSON.stringify(ok.error));
    }
    assert.deepEqual(await readFile(join(store.slots.b, 'small/f7.bin')), Buffer.alloc(4096, 7));
    const verify = (await (await agent.call('GET', '/v1/verify')).json()) as { differences: unknown[] };
    assert.deepEqual(verify.differences, []);
  });
});
