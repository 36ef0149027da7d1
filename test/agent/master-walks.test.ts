import assert from 'node:assert/strict';
import { link } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import type { AgentStatus, SwapRecord } from '../../src/agent/agent.js';
import type { WalkProgress } from '../../src/agent/master/master-walks.js';
import { startTestAgent } from '../../testkit/agent.js';
import { tempStore } from '../../testkit/store.js';
import { countEntries } from '../../testkit/trees.js';

/*
 * The walk of a full sync seen through the agent's status API, on a master of 6,000 files: an agent
 * started on a store it initialises (12,000 copies), a full sync, status polled throughout. The walk
 * counting itself (compares, copies, the watcher's listing, walks at once, the ETA) is unit-tested in
 * test/unit/agent/master-walks.test.ts.
 */

describe('status shows a full sync walking master, against the size the watcher found at start', () => {
  it('reports the walk while it runs (entries never going back), and none once it is done', async () => {
    const store = await tempStore();
    // 6,000 files for the walk to take its time over; each directory's are hard links to its first:
    // as many entries to walk and copy, not as many inodes to create (each one of those costs a
    // busy machine's kernel the better part of a millisecond, and this fill took most of the test)
    for (let d = 0; d < 60; d++) {
      await store.fill('master', { [`d${d}/f0.txt`]: `${d}` });
      for (let f = 1; f < 100; f++)
        await link(join(store.master, `d${d}`, 'f0.txt'), join(store.master, `d${d}`, `f${f}.txt`));
    }
    const entries = await countEntries(store.master);
    assert.equal(entries, 6060);
    const agent = await startTestAgent(store, { watchMaster: true });
    try {
      let done = false;
      const seen: WalkProgress[] = [];
      const poll = (async () => {
        while (!done) {
          const s = (await (await agent.call('GET', '/v1/status')).json()) as AgentStatus;
          seen.push(...s.walks.filter((w) => w.purpose === 'sync'));
          // a pause between looks: back-to-back status calls slowed the very walk they watch
          await delay(10);
        }
      })();
      const record = (await (await agent.call('POST', '/v1/sync?wait=1&full=1')).json()) as SwapRecord;
      done = true;
      await poll;
      assert.equal(record.result, 'ok');
      assert.ok(seen.length > 0, 'no status showed the full sync walking master');
      for (const w of seen) assert.equal(w.expected, entries, 'the watcher listed master at start');
      for (let i = 1; i < seen.length; i++)
        assert.ok((seen[i]?.entries ?? 0) >= (seen[i - 1]?.entries ?? 0), 'a walk went backwards');
      assert.ok((seen.at(-1)?.entries ?? 0) <= entries);
      const after = (await (await agent.call('GET', '/v1/status')).json()) as AgentStatus;
      assert.deepEqual(after.walks, []);
    } finally {
      await agent.close();
      await store.dispose();
    }
  });
});
