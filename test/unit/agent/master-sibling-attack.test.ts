import assert from 'node:assert/strict';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { readCopyIndex } from '../../../src/store/recent-records.js';
import { type TestAgent, startTestAgent, syncOk } from '../../../testkit/agent.js';
import { tempStore } from '../../../testkit/store.js';
import { compressibleText } from '../../../testkit/variants.js';

const codings = async (store: Awaited<ReturnType<typeof tempStore>>, dir: string, name: string) =>
  Promise.all(
    (['a', 'b'] as const).map(async (slot) =>
      Object.entries((await readCopyIndex(store.slots[slot], dir))?.files[name]?.variants ?? {})
        .map(([coding, v]) => `${coding}:${v.made ? 'made' : 'master'}`)
        .sort(),
    ),
  );

/** `n` syncs that find the copies settled: nothing compressed, nothing hashed again. */
async function settledSyncs(agent: TestAgent, n: number, query = ''): Promise<void> {
  for (let i = 0; i < n; i++) {
    const r = await syncOk(agent, query);
    assert.equal(r.variants?.compressed ?? 0, 0, `sync ${i}: ${JSON.stringify(r.variants)}`);
    assert.equal(r.variants?.hashed ?? 0, 0, `sync ${i}: ${JSON.stringify(r.variants)}`);
  }
}

describe("attack: master's own sibling beside an unchanged file", () => {
  it('a gzip of other bytes come beside X is never named, and settles; once gone, the agent makes its own gzip of X again (journal syncs)', async () => {
    const store = await tempStore();
    const app = compressibleText('app', 12_000);
    await store.fill('master', { 'js/app.js': app });
    const agent = await startTestAgent(store, { watchMaster: false });
    try {
      await syncOk(agent);
      await syncOk(agent);
      assert.deepEqual(await codings(store, 'js', 'app.js'), [
        ['br:made', 'gzip:made'],
        ['br:made', 'gzip:made'],
      ]);
      const put = await agent.call('PUT', '/v1/files/js/app.js.gz', { body: gzipSync('other bytes') });
      assert.equal(put.status, 201, await put.text());
      await syncOk(agent);
      await syncOk(agent);
      assert.deepEqual(await codings(store, 'js', 'app.js'), [['br:made'], ['br:made']]);
      await settledSyncs(agent, 3);
      // master's sibling gone: the agent's own gzip of X is made again
      const del = await agent.call('DELETE', '/v1/files/js/app.js.gz');
      assert.equal(del.status, 200, await del.text());
      await syncOk(agent);
      await syncOk(agent);
      assert.deepEqual(await codings(store, 'js', 'app.js'), [
        ['br:made', 'gzip:made'],
        ['br:made', 'gzip:made'],
      ]);
    } finally {
      await agent.close();
      await store.dispose();
    }
  });

  it('the same by full syncs', async () => {
    const store = await tempStore();
    const app = compressibleText('full', 12_000);
    await store.fill('master', { 'app.js': app });
    const agent = await startTestAgent(store, { watchMaster: false });
    try {
      await syncOk(agent);
      await syncOk(agent);
      await writeFile(join(store.master, 'app.js.gz'), gzipSync('other bytes'));
      for (let i = 0; i < 4; i++) await syncOk(agent, '&full=1'); // a file just written is looked at again a few syncs
      assert.deepEqual(await codings(store, '', 'app.js'), [['br:made'], ['br:made']]);
      await settledSyncs(agent, 2, '&full=1');
      await rm(join(store.master, 'app.js.gz'));
      await syncOk(agent, '&full=1');
      await syncOk(agent, '&full=1');
      assert.deepEqual(await codings(store, '', 'app.js'), [
        ['br:made', 'gzip:made'],
        ['br:made', 'gzip:made'],
      ]);
    } finally {
      await agent.close();
      await store.dispose();
    }
  });

  it('a sibling made a directory, then a file again, beside X settles', async () => {
    const store = await tempStore();
    const notes = compressibleText('kind', 9_000);
    await store.fill('master', { 'notes.dat': notes, 'notes.dat.gz': gzipSync(notes) });
    const agent = await startTestAgent(store, { watchMaster: false });
    try {
      await syncOk(agent);
      await syncOk(agent);
      assert.deepEqual(await codings(store, '', 'notes.dat'), [['gzip:master'], ['gzip:master']]);
      await rm(join(store.master, 'notes.dat.gz'));
      await mkdir(join(store.master, 'notes.dat.gz'));
      await writeFile(join(store.master, 'notes.dat.gz', 'inner'), 'x');
      await syncOk(agent, '&full=1');
      await syncOk(agent, '&full=1');
      assert.deepEqual(await codings(store, '', 'notes.dat'), [[], []]);
      await rm(join(store.master, 'notes.dat.gz'), { recursive: true });
      await writeFile(join(store.master, 'notes.dat.gz'), gzipSync(notes));
      for (let i = 0; i < 4; i++) await syncOk(agent, '&full=1'); // a file just written is looked at again a few syncs
      assert.deepEqual(await codings(store, '', 'notes.dat'), [['gzip:master'], ['gzip:master']]);
      for (let i = 0; i < 2; i++) {
        const r = await syncOk(agent, '&full=1');
        assert.equal(r.variants?.hashed ?? 0, 0, `sync ${i}: ${JSON.stringify(r.variants)}`);
      }
    } finally {
      await agent.close();
      await store.dispose();
    }
  });
});
