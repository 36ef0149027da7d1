import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Registry } from 'prom-client';
import { type TestApp, startApp } from '../../../testkit/app.js';
import { HOLD_BYTES, heldDownload } from '../../../testkit/cluster.js';
import { rawGet } from '../../../testkit/server.js';
import { type TempStore, tempStore } from '../../../testkit/store.js';
import { waitFor } from '../../../testkit/wait.js';

function sample(text: string, name: string, labels = ''): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels ? `{${labels}}` : ''} `));
  return line === undefined ? undefined : Number(line.split(' ').at(-1));
}

describe('mirrorStatic metrics', () => {
  let store: TempStore;
  let app: TestApp;
  const registry = new Registry();

  before(async () => {
    store = await tempStore();
    await store.fill('a', { 'small.txt': 'small', 'big.bin': Buffer.alloc(HOLD_BYTES) });
    await store.fill('b', { 'small.txt': 'small in b' });
    await store.publish(1, 'a');
    app = await startApp({ store: store.root, registry, pollInterval: 20 });
  });
  after(async () => {
    await app.close();
    await store.dispose();
  });

  it('registers in the injected registry and serves it at /metrics', async () => {
    const res = await rawGet(app.port, '/metrics');
    assert.equal(res.status, 200);
    assert.match(String(res.headers['content-type']), /^text\/plain/);
    assert.equal(sample(res.body.toString(), 'mirrorswap_server_epoch'), 1);
    assert.ok((await registry.getMetricsAsJSON()).some((m) => m.name === 'mirrorswap_server_requests_total'));
  });

  it('counts requests by slot and status class, and cache hits and misses', async () => {
    for (let i = 0; i < 3; i++) await rawGet(app.port, '/small.txt');
    await rawGet(app.port, '/small.txt', { 'If-None-Match': '*' });
    const text = await registry.metrics();
    assert.equal(sample(text, 'mirrorswap_server_requests_total', 'slot="a",status_class="2xx"'), 3);
    assert.equal(sample(text, 'mirrorswap_server_requests_total', 'slot="a",status_class="3xx"'), 1);
    assert.equal(sample(text, 'mirrorswap_server_cache_misses_total'), 1);
    assert.equal(sample(text, 'mirrorswap_server_cache_hits_total'), 3);
    // bodies at their real allocation: one arena segment; the entry's own cost beside it
    assert.equal(sample(text, 'mirrorswap_server_cache_bytes', 'kind="bodies"'), 1024 * 1024);
    assert.ok((sample(text, 'mirrorswap_server_cache_bytes', 'kind="entries"') ?? 0) > 0);
    assert.equal(sample(text, 'mirrorswap_server_cache_entries', 'kind="file"'), 1);
  });

  it('reports requests in flight per slot, and the switch lag of a swap', async () => {
    const download = heldDownload(app.port, '/big.bin');
    await download.started;
    assert.equal(sample(await registry.metrics(), 'mirrorswap_server_inflight_requests', 'slot="a"'), 1);
    await store.publish(2, 'b');
    await waitFor('the switch', () => app.mw.state().epoch === 2);
    let text = await registry.metrics();
    assert.equal(sample(text, 'mirrorswap_server_inflight_requests', 'slot="a"'), 1);
    assert.equal(sample(text, 'mirrorswap_server_epoch'), 2);
    assert.equal(sample(text, 'mirrorswap_server_switch_lag_seconds_count'), 1);
    assert.ok((sample(text, 'mirrorswap_server_switch_lag_seconds_sum') ?? 1) < 1);
    // the cache is the new epoch's, warmed (from the switch on) with the small file served before it
    text = await waitFor('the warm-up of the new copy', async () => {
      const t = await registry.metrics();
      return sample(t, 'mirrorswap_server_cache_entries', 'kind="file"') === 1 ? t : null;
    });
    assert.equal(
      sample(text, 'mirrorswap_server_cache_bytes', 'kind="bodies"'),
      1024 * 1024,
      'one arena for both epochs',
    );
    download.resume();
    await download.done;
    await waitFor(
      'the drain',
      async () => sample(await registry.metrics(), 'mirrorswap_server_inflight_requests', 'slot="a"') === 0,
    );
  });
});

describe('mirrorStatic warms the new copy around the switch', () => {
  let store: TempStore;
  let app: TestApp;
  const registry = new Registry();

  before(async () => {
    store = await tempStore();
    await store.fill('a', { 'w1.txt': 'a1', 'dir/w2.txt': 'a2' });
    await store.fill('b', { 'w1.txt': 'b1', 'dir/w2.txt': 'b2', 'missing.txt': 'now here' });
    await store.publish(1, 'a');
    app = await startApp({ store: store.root, registry, pollInterval: 20 });
  });
  after(async () => {
    await app.close();
    await store.dispose();
  });

  const metric = async (name: string) => sample((await rawGet(app.port, '/metrics')).body.toString(), name);

  it('answers the paths found in the old copy from memory at once, from the new copy', async () => {
    for (const path of ['/w1.txt', '/dir/w2.txt', '/missing.txt']) await rawGet(app.port, path);
    assert.equal(await metric('mirrorswap_server_cache_misses_total'), 3);
    await store.publish(2, 'b');
    await waitFor('the switch to epoch 2', async () => (await metric('mirrorswap_server_epoch')) === 2);
    assert.equal((await rawGet(app.port, '/w1.txt')).body.toString(), 'b1');
    assert.equal((await rawGet(app.port, '/dir/w2.txt')).body.toString(), 'b2');
    assert.equal(
      await metric('mirrorswap_server_cache_misses_total'),
      3,
      'found paths were looked up by the warm-up, not by these requests',
    );
    // a path refused in the old copy is not carried over: looked up on demand, and found now
    assert.equal((await rawGet(app.port, '/missing.txt')).body.toString(), 'now here');
    assert.equal(await metric('mirrorswap_server_cache_misses_total'), 4);
  });
});
