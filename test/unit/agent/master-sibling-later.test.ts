import assert from 'node:assert/strict';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { gunzipSync, gzipSync } from 'node:zlib';
import { readCopyIndex } from '../../../src/store/recent-records.js';
import { startTestAgent, syncOk } from '../../../testkit/agent.js';
import { startApp } from '../../../testkit/app.js';
import { rawGet } from '../../../testkit/server.js';
import { tempStore } from '../../../testkit/store.js';
import { compressibleText } from '../../../testkit/variants.js';

/*
 * Master's own `X.gz` is named as X's variant when it decodes to X. One that comes beside an X the
 * sync leaves unchanged, whose record names no gzip variant (X of a type the agent does not compress),
 * changes only the sibling: the derive of X must look at it all the same, or X's record stands and
 * the sibling is served only under its own name. Likewise when it goes.
 */
describe("master's own variant that comes or goes beside an unchanged file", () => {
  it('is named as its variant by the next syncs, and served; once gone, no longer', async () => {
    const store = await tempStore();
    const notes = compressibleText('notes', 12_000);
    await store.fill('master', { 'docs/notes.dat': notes });
    // the write API keeps the journal: the syncs are journal syncs of the sibling alone
    const agent = await startTestAgent(store, { watchMaster: false });
    const web = await startApp({ store: store.root, serverId: 'web-sibling', heartbeatInterval: 100 });
    const codings = async () =>
      Promise.all(
        (['a', 'b'] as const).map(async (slot) =>
          Object.entries((await readCopyIndex(store.slots[slot], 'docs'))?.files['notes.dat']?.variants ?? {}).map(
            ([coding, v]) => `${coding}:${v.made ? 'made' : 'master'}`,
          ),
        ),
      );
    try {
      await syncOk(agent);
      await syncOk(agent);
      assert.deepEqual(await codings(), [[], []], '.dat is no type the agent compresses');
      const put = await agent.call('PUT', '/v1/files/docs/notes.dat.gz', { body: gzipSync(notes) });
      assert.equal(put.status, 201, await put.text());
      await syncOk(agent);
      await syncOk(agent);
      assert.deepEqual(await codings(), [['gzip:master'], ['gzip:master']]);
      const gz = await rawGet(web.port, '/docs/notes.dat', { 'accept-encoding': 'gzip' });
      assert.equal(gz.headers['content-encoding'], 'gzip');
      assert.equal(gunzipSync(gz.body).toString(), notes);
      const del = await agent.call('DELETE', '/v1/files/docs/notes.dat.gz');
      assert.equal(del.status, 200, await del.text());
      await syncOk(agent);
      await syncOk(agent);
      assert.deepEqual(await codings(), [[], []]);
      const plain = await rawGet(web.port, '/docs/notes.dat', { 'accept-encoding': 'gzip' });
      assert.equal(plain.headers['content-encoding'], undefined);
      assert.equal(plain.body.toString(), notes);
    } finally {
      await web.close();
      await agent.close();
      await store.dispose();
    }
  });

  it('a sibling rewritten by a tool in master, found by a full sync, is looked at too', async () => {
    const store = await tempStore();
    const notes = compressibleText('tool', 9_000);
    await store.fill('master', { 'notes.dat': notes });
    const agent = await startTestAgent(store, { watchMaster: false });
    try {
      await syncOk(agent);
      await writeFile(join(store.master, 'notes.dat.gz'), gzipSync(notes));
      await syncOk(agent, '&full=1');
      await syncOk(agent, '&full=1');
      for (const slot of ['a', 'b'] as const)
        assert.deepEqual(
          Object.keys((await readCopyIndex(store.slots[slot], ''))?.files['notes.dat']?.variants ?? {}),
          ['gzip'],
          `slot ${slot}`,
        );
      await rm(join(store.master, 'notes.dat.gz'));
      await syncOk(agent, '&full=1');
      await syncOk(agent, '&full=1');
      for (const slot of ['a', 'b'] as const)
        assert.equal((await readCopyIndex(store.slots[slot], ''))?.files['notes.dat']?.variants, undefined);
    } finally {
      await agent.close();
      await store.dispose();
    }
  });
});
