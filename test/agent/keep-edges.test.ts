import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { writeFileAtomic } from '../../src/store/atomic-write.js';
import type { SwapRecord } from '../../src/agent/agent-types.js';
import { type EpochRecord, readEpochFile, slotRoot } from '../../src/store/epoch-file.js';
import { type TestAgent, startTestAgent } from '../../testkit/agent.js';
import { type TempStore, tempStore } from '../../testkit/store.js';
import { treeOf } from '../../testkit/trees.js';

const sync = async (agent: TestAgent, release: string) =>
  (await (await agent.call('POST', `/v1/sync?wait=1&release=${release}`)).json()) as SwapRecord;
const put = (agent: TestAgent, body: string) => agent.call('PUT', '/v1/files/page.txt', { body });

describe('keeping releases at the edges', () => {
  const stores: TempStore[] = [];
  const agents: TestAgent[] = [];
  after(async () => {
    for (const a of agents) await a.close().catch(() => {});
    for (const s of stores) await s.dispose();
  });

  it('a copy retired by a sync that then failed is not written while a live server is still on an epoch retaining it', async () => {
    const store = await tempStore();
    stores.push(store);
    await store.fill('master', { 'page.txt': 'v0' });
    const agent = await startTestAgent(store, { keep: 3, drainTimeoutMs: 1200, serverTtlMs: 5000 });
    agents.push(agent);
    for (const r of ['r1', 'r2']) {
      await put(agent, r);
      assert.equal((await sync(agent, r)).result, 'ok');
    }
    const before = (await readEpochFile(store.epochFile)) as EpochRecord;
    assert.equal(before.retained?.length, 2, 'every copy holds a release');
    // a live server that never moves past this epoch (a stalled NFS client, say), nothing in flight
    // replaced by rename, as servers do: a heartbeat read half-written is skipped
    const beat = () =>
      writeFileAtomic(
        join(store.serversDir, 'lagging.json'),
        JSON.stringify({
          format: 1,
          id: 'lagging',
          host: 'h',
          pid: 1,
          epoch: before.epoch,
          mounted: before.mounted,
          inflight: { a: 0, b: 0, c: 0 },
          at: new Date().toISOString(),
          interval: 200,
          kind: 'static',
        }),
      );
    await beat();
    const timer = setInterval(() => void beat(), 200);
    try {
      await put(agent, 'r3');
      const first = await sync(agent, 'r3');
      assert.equal(first.error?.code, 'DRAIN_TIMEOUT', 'the retire publish landed, the wait timed out');
      const retired = (await readEpochFile(store.epochFile)) as EpochRecord;
      const freed = before.retained?.find((r) => !retired.retained?.some((x) => x.slot === r.slot));
      assert.ok(freed, 'one release left retained');
      const tree = await treeOf(slotRoot(retired, store.epochFile, freed.slot));
      // the next sync finds that copy free in the epoch file, but the server still pins to it
      const second = await sync(agent, 'r3');
      assert.equal(second.error?.code, 'DRAIN_TIMEOUT', JSON.stringify(second));
      assert.match(second.error?.message ?? '', /lagging.*still at epoch/);
      assert.deepEqual(await treeOf(slotRoot(retired, store.epochFile, freed.slot)), tree, 'not written');
    } finally {
      clearInterval(timer);
    }
    await writeFile(join(store.serversDir, 'lagging.json'), '{}');
    assert.equal((await sync(agent, 'r3')).result, 'ok');
  });

  it('--keep lowered (4 to 3): the release on the slot no longer kept is retired, and every epoch file reads back', async () => {
    const store = await tempStore();
    stores.push(store);
    await store.fill('master', { 'page.txt': 'v0' });
    let agent = await startTestAgent(store, { keep: 4 });
    for (const r of ['r1', 'r2', 'r3']) {
      await put(agent, r);
      assert.equal((await sync(agent, r)).result, 'ok');
    }
    assert.equal((await readEpochFile(store.epochFile))?.retained?.length, 3);
    await agent.close();
    agent = await startTestAgent(store, { keep: 3 });
    agents.push(agent);
    for (const r of ['r4', 'r5']) {
      await put(agent, r);
      const record = await sync(agent, r);
      assert.equal(record.result, 'ok', JSON.stringify(record.error));
      const e = (await readEpochFile(store.epochFile)) as EpochRecord;
      assert.ok(
        e.retained?.every((x) => ['a', 'b', 'c'].includes(x.slot)),
        JSON.stringify(e.retained),
      );
      assert.ok((e.retained?.length ?? 0) <= 2);
    }
    const status = (await (await agent.call('GET', '/v1/status')).json()) as { previous?: { retained: boolean } };
    assert.equal(status.previous?.retained, true, 'the release before is retained, and status says so');
  });
});
