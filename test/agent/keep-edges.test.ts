import assert from 'node:assert/strict';
import { link, mkdir, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { writeFileAtomic } from '../../src/store/atomic-write.js';
import type { SwapRecord } from '../../src/agent/agent-types.js';
import { type EpochRecord, readEpochFile, slotRoot } from '../../src/store/epoch-file.js';
import { type TestAgent, startTestAgent } from '../../testkit/agent.js';
import { type TempStore, tempStore } from '../../testkit/store.js';
import { treeOf } from '../../testkit/trees.js';
import { compareTreesSync } from '../../src/tree/compare-trees.js';

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

  it('a copy reused releases behind links from the mounted copy what master kept since, never what a directory renamed over replaced', async () => {
    const store = await tempStore();
    stores.push(store);
    await store.fill('master', { 'page.txt': 'v0', 'd/c.txt': 'zero-000' });
    const agent = await startTestAgent(store, { keep: 3 });
    agents.push(agent);
    const slotPath = async (rel: string) =>
      join(slotRoot((await readEpochFile(store.epochFile)) as EpochRecord, store.epochFile), rel);
    // releases 1 and 2 change d/c.txt; release 3 reuses the copy of release 0, two releases behind
    for (const [r, body] of [
      ['r1', 'one-1111'],
      ['r2', 'two-2222'],
    ] as const) {
      await writeFile(join(store.master, 'd/c.txt'), body);
      assert.equal((await sync(agent, r)).result, 'ok');
    }
    const r2Copy = await slotPath('d/c.txt');
    await put(agent, 'r3');
    const r3 = await sync(agent, 'r3');
    assert.equal(r3.result, 'ok', JSON.stringify(r3.error));
    assert.ok(r3.reused, 'release 3 went into a reused copy');
    // d/c.txt, unchanged since release 2's copy, is that copy's file: one inode
    const r3Copy = await slotPath('d/c.txt');
    assert.notEqual(r3Copy, r2Copy);
    assert.equal((await stat(r3Copy)).ino, (await stat(r2Copy)).ino);
    assert.equal(await readFile(r3Copy, 'utf8'), 'two-2222');

    // A deploy renames a build over d: its c.txt has the same size and mtime as the one it
    // replaces, other bytes. Release 4 reuses the copy of release 1 (d/c.txt changed since);
    // the mounted copy's d/c.txt is not what master holds now.
    const old = await stat(join(store.master, 'd/c.txt'));
    await mkdir(join(store.root, 'build'));
    await writeFile(join(store.root, 'build/c.txt'), 'XXX-XXXX');
    await utimes(join(store.root, 'build/c.txt'), old.atime, old.mtime);
    await rename(join(store.master, 'd'), join(store.master, 'd.old'));
    await rename(join(store.root, 'build'), join(store.master, 'd'));
    await rm(join(store.master, 'd.old'), { recursive: true });
    const r4 = await sync(agent, 'r4');
    assert.equal(r4.result, 'ok', JSON.stringify(r4.error));
    assert.equal(await readFile(await slotPath('d/c.txt'), 'utf8'), 'XXX-XXXX');
    assert.deepEqual(compareTreesSync(store.master, await slotPath('')), []);
    // the release before keeps its bytes
    assert.equal(await readFile(r3Copy, 'utf8'), 'two-2222');
  });

  it('a change the journal missed, found by a full sync, reaches a newer copy too: a rollback to it, then a reuse, publishes master', async () => {
    const store = await tempStore();
    stores.push(store);
    await store.fill('master', { 'x.txt': 'x0', 'p.txt': 'p0' });
    // no watcher: a tool writing master directly is seen only by a comparison (a full sync here)
    const agent = await startTestAgent(store, { keep: 3, watchMaster: false });
    agents.push(agent);
    const served = async (rel: string) => {
      const e = (await readEpochFile(store.epochFile)) as EpochRecord;
      return readFile(join(slotRoot(e, store.epochFile), rel), 'utf8');
    };
    const put = async (path: string, body: string) =>
      assert.equal((await agent.call('PUT', `/v1/files/${path}`, { body })).status, 201);
    const syncAs = async (query: string) => {
      const record = (await (await agent.call('POST', `/v1/sync?wait=1&${query}`)).json()) as SwapRecord;
      assert.equal(record.result, 'ok', JSON.stringify(record.error));
      return record;
    };
    await put('x.txt', 'x1');
    await syncAs('release=rA');
    await put('x.txt', 'x2');
    await syncAs('release=rB');
    await put('p.txt', 'v1');
    await syncAs('release=rC');
    await writeFile(join(store.master, 'p.txt'), 'v2-by-a-tool');
    await syncAs('release=rD&full=1');
    assert.equal(await served('p.txt'), 'v2-by-a-tool');
    // back to rC's copy (p at v1): the next sync reuses the oldest copy and must publish master's p
    const back = (await (await agent.call('POST', '/v1/rollback?to=rC')).json()) as SwapRecord;
    assert.equal(back.result, 'ok', JSON.stringify(back.error));
    assert.equal(await served('p.txt'), 'v1');
    await put('q.txt', 'q');
    await syncAs('release=rE');
    assert.equal(await served('p.txt'), 'v2-by-a-tool');
    const e = (await readEpochFile(store.epochFile)) as EpochRecord;
    assert.deepEqual(compareTreesSync(store.master, slotRoot(e, store.epochFile)), []);
  });

  it('a file of master with two names, written through the other name, is published with its new bytes', async () => {
    const store = await tempStore();
    stores.push(store);
    await store.fill('master', { 'p.txt': 'v0', 'page.txt': 'v0' });
    // a tree made with `cp -al`: a write through q.txt changes p.txt too, and the journal names q.txt only
    await link(join(store.master, 'p.txt'), join(store.master, 'q.txt'));
    const agent = await startTestAgent(store, { keep: 3 });
    agents.push(agent);
    const served = async (rel: string) => {
      const e = (await readEpochFile(store.epochFile)) as EpochRecord;
      return readFile(join(slotRoot(e, store.epochFile), rel), 'utf8');
    };
    for (const r of ['r1', 'r2', 'r3']) {
      await put(agent, r);
      assert.equal((await sync(agent, r)).result, 'ok');
    }
    await writeFile(join(store.master, 'p.txt'), 'v1');
    await put(agent, 'r4');
    assert.equal((await sync(agent, 'r4')).result, 'ok');
    assert.deepEqual([await served('p.txt'), await served('q.txt')], ['v1', 'v1']);
    await writeFile(join(store.master, 'q.txt'), 'v2');
    await put(agent, 'r5');
    assert.equal((await sync(agent, 'r5')).result, 'ok');
    assert.deepEqual([await served('p.txt'), await served('q.txt')], ['v2', 'v2']);
  });
});
