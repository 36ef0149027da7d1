import assert from 'node:assert/strict';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { lstatOrNull } from '../../../src/core/lstat-or-null.js';
import { type TestAgent, startTestAgent, syncOk } from '../../../testkit/agent.js';
import { type TempStore, tempStore } from '../../../testkit/store.js';
import { compressibleText as text } from '../../../testkit/variants.js';

const sync = syncOk;

/**
 * A file that becomes a directory (or a link) takes the variants the agent
 * made of it along: left beside the directory, nothing names them made any
 * more, and nginx's gzip_static, which reads no index, serves them by name.
 */
describe('a file of master that becomes a directory', () => {
  let store: TempStore;
  let agent: TestAgent;
  before(async () => {
    store = await tempStore();
    await store.fill('master', { 'x.js': text('x'), 'keep.js': text('keep') });
    agent = await startTestAgent(store, { auto: false, watchMaster: true, precompress: false });
  });
  after(async () => {
    await agent.close();
    await store.dispose();
  });

  it('leaves none of its made variants in either copy after a journal sync of each', async () => {
    for (const slot of ['a', 'b'] as const) assert.ok(await lstatOrNull(join(store.slots[slot], 'x.js.br')));
    await rm(join(store.master, 'x.js'));
    await mkdir(join(store.master, 'x.js'));
    await writeFile(join(store.master, 'x.js/inner.txt'), 'inner');
    for (let i = 0; i < 2; i++) {
      // (the watcher sees it; each sync brings one copy up to master)
      const record = await sync(agent);
      assert.equal(record.mode, 'incremental');
    }
    for (const slot of ['a', 'b'] as const) {
      for (const v of ['x.js.br', 'x.js.gz'])
        assert.equal(await lstatOrNull(join(store.slots[slot], v)), null, `${slot}/${v} left behind`);
      assert.ok(await lstatOrNull(join(store.slots[slot], 'keep.js.br')), `${slot}: keep.js.br kept`);
    }
  });
});
