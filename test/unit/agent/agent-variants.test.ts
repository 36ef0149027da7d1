import assert from 'node:assert/strict';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { brotliDecompressSync } from 'node:zlib';
import { lstatOrNull } from '../../../src/core/lstat-or-null.js';
import { readEpochFile } from '../../../src/store/epoch-file.js';
import { type TestAgent, startTestAgent, syncOk } from '../../../testkit/agent.js';
import { type TempStore, tempStore } from '../../../testkit/store.js';
import { checkCopyIndex, compressibleText as text } from '../../../testkit/variants.js';

const sync = syncOk;

describe('the agent makes variants at sync', () => {
  let store: TempStore;
  let agent: TestAgent;
  before(async () => {
    store = await tempStore();
    const files: Record<string, string> = { 'tiny.js': 'x' };
    for (let i = 0; i < 20; i++) files[`site/p${i}.js`] = text(`p${i}`);
    await store.fill('master', files);
    // compressed at sync: what lands in master is not compressed ahead (precompress.test.ts)
    agent = await startTestAgent(store, { auto: false, watchMaster: false, precompress: false });
  });
  after(async () => {
    await agent.close();
    await store.dispose();
  });

  it('init gives both copies their variants, the second reusing the first', async () => {
    for (const slot of ['a', 'b'] as const) {
      assert.equal(await checkCopyIndex(store.slots[slot]), 40, slot);
      assert.equal(await lstatOrNull(join(store.slots[slot], 'tiny.js.br')), null);
    }
    assert.deepEqual((await readdir(join(store.master, 'site'))).length, 20, 'master is never touched');
  });

  it('a journal sync of 10 changed files compresses those 10 (two codings each) and nothing else', async () => {
    for (let i = 0; i < 10; i++) await agent.call('PUT', `/v1/files/site/p${i}.js`, { body: text(`changed${i}`) });
    const record = await sync(agent);
    assert.equal(record.mode, 'incremental');
    assert.equal(record.variants?.compressed, 20);
    assert.equal(record.variants?.hashed, 10);
    const epoch = await readEpochFile(store.epochFile);
    const mounted = store.slots[epoch?.mounted ?? 'a'];
    const br = await readFile(join(mounted, 'site/p3.js.br'));
    assert.equal(brotliDecompressSync(br).toString(), text('changed3'));
    assert.equal(await checkCopyIndex(mounted), 40);
    // the other copy catches up from its own journal position: the same 10 files, reused by content
    const second = await sync(agent);
    assert.equal(second.variants?.compressed, 0);
    assert.equal(second.variants?.reused, 20);
    for (const slot of ['a', 'b'] as const) assert.equal(await checkCopyIndex(store.slots[slot]), 40, slot);
  });

  it('a delete takes the made variants with it', async () => {
    await agent.call('DELETE', '/v1/files/site/p19.js');
    await sync(agent);
    const mounted = store.slots[(await readEpochFile(store.epochFile))?.mounted ?? 'a'];
    assert.equal(await lstatOrNull(join(mounted, 'site/p19.js.br')), null);
    assert.equal(await lstatOrNull(join(mounted, 'site/p19.js.gz')), null);
  });

  it('the write API refuses the reserved meta directory', async () => {
    const res = await agent.call('PUT', '/v1/files/.mirrorswap-meta/x', { body: 'no' });
    assert.equal(res.status, 400);
  });

  it('verify and a full sync keep made variants: they are no difference', async () => {
    const verify = (await (await agent.call('GET', '/v1/verify')).json()) as { differences: unknown[] };
    assert.deepEqual(verify.differences, []);
    await sync(agent); // the standby catches up with the delete first
    const full = await sync(agent, '&full=1');
    assert.equal(full.mode, 'full');
    assert.equal(full.copied.deleted, 0);
    assert.equal(full.variants?.compressed, 0);
  });

  it('with variants off, a full sync removes the variants and the index', async () => {
    await agent.close();
    agent = await startTestAgent(store, { auto: false, watchMaster: false, variants: false });
    // a journal sync takes the variants of what it changes with it (nginx would serve them), and the index
    await agent.call('PUT', '/v1/files/site/p1.js', { body: text('off') });
    const record = await sync(agent);
    assert.equal(record.mode, 'incremental');
    const mounted = store.slots[(await readEpochFile(store.epochFile))?.mounted ?? 'a'];
    assert.equal(await lstatOrNull(join(mounted, 'site/p1.js.br')), null);
    assert.equal(await lstatOrNull(join(mounted, '.mirrorswap-meta')), null);
    for (let n = 0; n < 2; n++) await sync(agent, '&full=1');
    for (const slot of ['a', 'b'] as const) {
      assert.equal(await lstatOrNull(join(store.slots[slot], 'site/p0.js.br')), null, slot);
      assert.equal(await lstatOrNull(join(store.slots[slot], '.mirrorswap-meta')), null, slot);
    }
    const verify = (await (await agent.call('GET', '/v1/verify')).json()) as { differences: unknown[] };
    assert.deepEqual(verify.differences, []);
  });
});
