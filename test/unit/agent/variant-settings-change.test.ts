import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { lstat, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { brotliDecompressSync, gunzipSync } from 'node:zlib';
import type { AgentOptions } from '../../../src/agent/agent.js';
import { readEpochFile } from '../../../src/store/epoch-file.js';
import { readCopyIndex } from '../../../src/store/recent-records.js';
import { variantSelectionPath } from '../../../src/tree/variant-selection.js';
import { startTestAgent, syncOk } from '../../../testkit/agent.js';
import { startApp } from '../../../testkit/app.js';
import { rawGet } from '../../../testkit/server.js';
import { type TempStore, tempStore } from '../../../testkit/store.js';
import { compressibleText } from '../../../testkit/variants.js';

/*
 * A derive brings up to date only what a copy changed, so settings that decide which variants a copy
 * holds (codings, types, size floor, saving) would apply to each file only once it changed: a coding
 * turned off kept being served from every file left as it was. Each copy records the selection its
 * variants follow, and a sync into a copy that follows another derives it whole, changes or none.
 */

const js = compressibleText('app', 20_000);
const css = compressibleText('style', 8_000);
/** Base64 of random bytes: its variants save about a quarter (6 bits of 8), and none under a 60% saving floor. */
const plain = randomBytes(9000).toString('base64');

async function withStore(run: (store: TempStore) => Promise<void>): Promise<void> {
  const store = await tempStore();
  await store.fill('master', { 'js/app.js': js, 'css/site.css': css, 'data/plain.txt': plain });
  try {
    await run(store);
  } finally {
    await store.dispose();
  }
}

/** Start an agent with `options`, sync twice (both copies), close it; the messages it logged of copies derived whole. */
async function syncBoth(store: TempStore, options: Partial<AgentOptions>): Promise<string[]> {
  const agent = await startTestAgent(store, { watchMaster: false, ...options });
  try {
    await syncOk(agent);
    await syncOk(agent);
  } finally {
    await agent.close();
  }
  return agent.logs.lines.filter((l) => l.msg.includes('whole')).map((l) => l.msg);
}

/** The made variants on disk in both copies, as `slot:path` names, sorted. */
async function variantsOnDisk(store: TempStore): Promise<string[]> {
  const out: string[] = [];
  for (const slot of ['a', 'b'] as const)
    for (const dir of ['js', 'css', 'data'])
      for (const name of await readdir(join(store.slots[slot], dir)))
        if (/\.(br|gz)$/.test(name)) out.push(`${slot}:${dir}/${name}`);
  return out.sort();
}

/** The codings the copy's index lists for `path`, in both copies. */
async function indexed(store: TempStore, dir: string, name: string): Promise<string[][]> {
  return Promise.all(
    (['a', 'b'] as const).map(async (slot) =>
      Object.keys((await readCopyIndex(store.slots[slot], dir))?.files[name]?.variants ?? {}).sort(),
    ),
  );
}

describe('settings that decide which variants a copy holds apply to the whole copy at the next syncs', () => {
  it('a coding turned off is gone from every file of both copies, and no longer served; turned on again, it is back', async () => {
    await withStore(async (store) => {
      await syncBoth(store, {});
      assert.deepEqual(await indexed(store, 'js', 'app.js'), [
        ['br', 'gzip'],
        ['br', 'gzip'],
      ]);
      // nothing changed in master: the syncs still bring both copies to the new selection
      const said = await syncBoth(store, { variantEncodings: ['br'] });
      assert.equal(said.length, 2, 'each copy derived whole is logged');
      assert.match(said[0] ?? '', /derived slot [ab] whole for the variant settings/);
      assert.deepEqual(await indexed(store, 'js', 'app.js'), [['br'], ['br']]);
      assert.deepEqual(
        (await variantsOnDisk(store)).filter((n) => n.endsWith('.gz')),
        [],
        'a gz variant left on disk',
      );
      const web = await startApp({ store: store.root, serverId: 'web-selection', heartbeatInterval: 100 });
      try {
        const gz = await rawGet(web.port, '/js/app.js', { 'accept-encoding': 'gzip' });
        assert.equal(gz.headers['content-encoding'], undefined, 'gzip still served after it was turned off');
        assert.equal(gz.body.toString(), js);
        const br = await rawGet(web.port, '/js/app.js', { 'accept-encoding': 'br' });
        assert.equal(brotliDecompressSync(br.body).toString(), js);
      } finally {
        await web.close();
      }
      await syncBoth(store, {});
      assert.deepEqual(await indexed(store, 'js', 'app.js'), [
        ['br', 'gzip'],
        ['br', 'gzip'],
      ]);
      for (const slot of ['a', 'b'] as const) {
        const gz = await readFile(join(store.slots[slot], 'js/app.js.gz'));
        assert.equal(gunzipSync(gz).toString(), js);
      }
    });
  });

  it('a type dropped loses its variants, a type added gets them, in both copies', async () => {
    await withStore(async (store) => {
      await syncBoth(store, { variantTypes: ['css'] });
      assert.deepEqual(await variantsOnDisk(store), [
        'a:css/site.css.br',
        'a:css/site.css.gz',
        'b:css/site.css.br',
        'b:css/site.css.gz',
      ]);
      await syncBoth(store, { variantTypes: ['js'] });
      assert.deepEqual(await variantsOnDisk(store), [
        'a:js/app.js.br',
        'a:js/app.js.gz',
        'b:js/app.js.br',
        'b:js/app.js.gz',
      ]);
      assert.deepEqual(await indexed(store, 'css', 'site.css'), [[], []]);
    });
  });

  it('a higher size floor or saving floor removes the variants it no longer allows', async () => {
    await withStore(async (store) => {
      await syncBoth(store, {});
      assert.deepEqual(await indexed(store, 'data', 'plain.txt'), [
        ['br', 'gzip'],
        ['br', 'gzip'],
      ]);
      await syncBoth(store, { variantMinSaving: 60 });
      assert.deepEqual(await indexed(store, 'data', 'plain.txt'), [[], []], 'a variant saving too little was kept');
      assert.deepEqual(await indexed(store, 'js', 'app.js'), [
        ['br', 'gzip'],
        ['br', 'gzip'],
      ]);
      await syncBoth(store, { variantMinSize: 10_000 });
      assert.deepEqual(await indexed(store, 'css', 'site.css'), [[], []], 'a file under the floor kept its variants');
      assert.deepEqual(await indexed(store, 'js', 'app.js'), [
        ['br', 'gzip'],
        ['br', 'gzip'],
      ]);
    });
  });

  it('a new level alone derives nothing again: the variants stand (they decode the same)', async () => {
    await withStore(async (store) => {
      await syncBoth(store, {});
      const before = await Promise.all(
        (['a', 'b'] as const).map((s) => lstat(join(store.slots[s], 'js/app.js.br')).then((st) => st.ino)),
      );
      const agent = await startTestAgent(store, { watchMaster: false, brotliQuality: 5, gzipLevel: 4 });
      try {
        const record = await syncOk(agent);
        assert.equal(record.variants?.compressed, 0);
        assert.equal(record.variants?.kept, 0, 'a copy with nothing changed was derived again');
      } finally {
        await agent.close();
      }
      const after = await Promise.all(
        (['a', 'b'] as const).map((s) => lstat(join(store.slots[s], 'js/app.js.br')).then((st) => st.ino)),
      );
      assert.deepEqual(after, before);
    });
  });

  it('a record lost or torn costs one derive of the whole copy, and nothing else', async () => {
    await withStore(async (store) => {
      await syncBoth(store, {});
      const epoch = await readEpochFile(store.epochFile);
      const standby = epoch?.mounted === 'a' ? 'b' : 'a';
      const ino = (await lstat(join(store.slots[standby], 'js/app.js.br'))).ino;
      await writeFile(variantSelectionPath(store.slots[standby]), '{"v":1,"encod');
      await rm(variantSelectionPath(store.slots[epoch?.mounted as 'a' | 'b']));
      const agent = await startTestAgent(store, { watchMaster: false });
      try {
        const record = await syncOk(agent);
        assert.equal(record.to, standby);
        assert.equal(record.variants?.compressed, 0);
        // its three files' records stand (the selection is the same): derived whole, nothing remade
        assert.equal(record.variants?.kept, 3, JSON.stringify(record.variants));
        const again = await syncOk(agent);
        assert.equal(again.variants?.kept, 3, 'the copy without a record was not derived whole');
        const third = await syncOk(agent);
        assert.equal(third.variants?.kept ?? 0, 0, 'a copy that records its selection was derived again');
      } finally {
        await agent.close();
      }
      assert.equal((await lstat(join(store.slots[standby], 'js/app.js.br'))).ino, ino, 'a variant made again');
      assert.equal(gunzipSync(await readFile(join(store.slots[standby], 'js/app.js.gz'))).toString(), js);
    });
  });
});
