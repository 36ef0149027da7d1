import assert from 'node:assert/strict';
import { readFile, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { SwapRecord } from '../../../src/agent/agent.js';
import { readEpochFile } from '../../../src/store/epoch-file.js';
import { msInside } from '../../../src/tree/copy-times.js';
import { type TestAgent, startTestAgent } from '../../../testkit/agent.js';
import { type TempStore, tempStore } from '../../../testkit/store.js';
import { waitFor } from '../../../testkit/wait.js';

/**
 * A full sync compares trees by size and mtime, as rsync's quick check
 * does: a rewrite that keeps both (a build with fixed times, a tool that
 * restores them) is not a difference to it. The journal knows better: it
 * recorded the write. A full sync that left out what the journal recorded
 * published the standby's old bytes, while the same sync without `full`
 * would have copied them.
 */
describe('a full sync copies what the journal recorded too', () => {
  let store: TempStore;
  let agent: TestAgent;
  before(async () => {
    store = await tempStore();
    await store.fill('master', { 'c.css': 'body { color: red;  }\n', 'other.txt': 'x' });
    agent = await startTestAgent(store, { auto: false, watchMaster: true, variants: false });
  });
  after(async () => {
    await agent.close();
    await store.dispose();
  });

  it('a rewrite of the same size, its time restored, reaches the copy a full sync publishes', async () => {
    const path = join(store.master, 'c.css');
    const was = await stat(path);
    await writeFile(path, 'body { color: blue; }\n');
    // its time as it was, to the millisecond (a Date may land a nanosecond below it)
    await utimes(path, msInside(was.atimeMs), msInside(was.mtimeMs));
    const now = await stat(path);
    assert.equal(now.size, was.size);
    assert.equal(Math.floor(now.mtimeMs), Math.floor(was.mtimeMs));
    await waitFor('the watcher to journal it', async () => {
      const s = (await (await agent.call('GET', '/v1/status')).json()) as { pendingChanges: number };
      return s.pendingChanges > 0 ? true : null;
    });
    const record = (await (await agent.call('POST', '/v1/sync?wait=1&full=1')).json()) as SwapRecord;
    assert.equal(record.result, 'ok', JSON.stringify(record.error ?? record));
    assert.equal(record.mode, 'full');
    const mounted = store.slots[(await readEpochFile(store.epochFile))?.mounted ?? 'a'];
    assert.equal(await readFile(join(mounted, 'c.css'), 'utf8'), 'body { color: blue; }\n', 'the old bytes published');
  });
});
