import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { brotliDecompressSync, gunzipSync, gzipSync } from 'node:zlib';
import type { SwapRecord } from '../../../src/agent/agent.js';
import { type TestAgent, startTestAgent } from '../../../testkit/agent.js';
import { type TestApp, startApp } from '../../../testkit/app.js';
import { rawGet } from '../../../testkit/server.js';
import { type TempStore, tempStore } from '../../../testkit/store.js';
import { compressibleText } from '../../../testkit/variants.js';

/**
 * The two sides of the content index together: what the agent makes at sync
 * is what mirrorStatic serves, with nothing written by hand in between.
 */
describe('variants made at sync are the ones served', () => {
  let store: TempStore;
  let agent: TestAgent;
  let web: TestApp;
  const v1 = compressibleText('one', 20_000);
  const v2 = compressibleText('two', 21_000);
  const own = compressibleText('own', 12_000);
  /** master's own gzip of own/x.js: the agent names it as a variant (made: false), and keeps it */
  const ownGz = gzipSync(own);

  before(async () => {
    store = await tempStore();
    await store.fill('master', {
      'js/app.js': v1,
      'logo.png': 'not text, never compressed'.repeat(100),
      'own/x.js': own,
      'own/x.js.gz': ownGz,
    });
    agent = await startTestAgent(store);
    web = await startApp({ store: store.root, serverId: 'web-variants', heartbeatInterval: 100 });
  });
  after(async () => {
    await web.close();
    await agent.close();
    await store.dispose();
  });

  const get = (path: string, encoding?: string) =>
    rawGet(web.port, path, encoding === undefined ? {} : { 'accept-encoding': encoding });

  it('serves brotli and gzip variants that decode to the file, each with its own strong ETag', async () => {
    const plain = await get('/js/app.js');
    const br = await get('/js/app.js', 'gzip;q=0.5, br');
    const gz = await get('/js/app.js', 'gzip');
    assert.equal(plain.headers['content-encoding'], undefined);
    assert.equal(plain.body.toString(), v1);
    assert.equal(br.headers['content-encoding'], 'br');
    assert.equal(brotliDecompressSync(br.body).toString(), v1);
    assert.ok(br.body.length < v1.length / 3, `br is ${br.body.length} bytes of ${v1.length}`);
    assert.equal(gz.headers['content-encoding'], 'gzip');
    assert.equal(gunzipSync(gz.body).toString(), v1);
    for (const r of [plain, br, gz]) assert.match(String(r.headers.vary ?? ''), /Accept-Encoding/i);
    const tags = [plain, br, gz].map((r) => r.headers.etag);
    for (const tag of tags) assert.match(String(tag ?? ''), /^"[A-Za-z0-9_-]{22}"$/, 'a strong content ETag');
    assert.equal(new Set(tags).size, 3, 'one tag per representation');
    // a png is sent as it is, whatever the client accepts
    assert.equal((await get('/logo.png', 'br, gzip')).headers['content-encoding'], undefined);
  });

  it('after a sync that changes the file, its variants follow; the same bytes keep the same tag in the other copy', async () => {
    const before = (await get('/js/app.js')).headers.etag;
    await agent.call('PUT', '/v1/files/js/app.js', { body: v2 });
    const record = (await (await agent.call('POST', '/v1/sync?wait=1')).json()) as SwapRecord;
    assert.equal(record.result, 'ok');
    const br = await get('/js/app.js', 'br');
    assert.equal(brotliDecompressSync(br.body).toString(), v2);
    const plain = await get('/js/app.js');
    assert.notEqual(plain.headers.etag, before);
    // a sync that leaves the file alone mounts the other copy: same bytes, same tag
    const again = (await (await agent.call('POST', '/v1/sync?wait=1')).json()) as SwapRecord;
    assert.equal(again.result, 'ok');
    assert.notEqual(again.to, record.to);
    const other = await get('/js/app.js');
    assert.equal(other.headers.etag, plain.headers.etag);
    assert.equal(brotliDecompressSync((await get('/js/app.js', 'br')).body).toString(), v2);
  });

  it("the variants it made are no files of the site: their own URLs are 404s; master's own sibling is served", async () => {
    // a made variant is there to be chosen by Accept-Encoding, never named: serve-static over master
    // would answer 404, and so must the copy (README, "Differences from serve-static")
    for (const path of ['/js/app.js.br', '/js/app.js.gz', '/own/x.js.br', '/js/app.js.br?v=1', '/js/../js/app.js.gz']) {
      for (const method of ['GET', 'HEAD']) {
        const res = await rawGet(web.port, path, { 'accept-encoding': 'br, gzip' }, method);
        assert.equal(res.status, 404, `${method} ${path}`);
        assert.equal(res.headers['content-encoding'], undefined, `${method} ${path}`);
      }
    }
    // master's own X.gz is master's file: served as itself under its name, and chosen as X's gzip variant
    const itself = await get('/own/x.js.gz', 'br, gzip');
    assert.equal(itself.status, 200);
    assert.equal(itself.headers['content-encoding'], undefined);
    assert.deepEqual(itself.body, ownGz);
    const chosen = await get('/own/x.js', 'gzip');
    assert.equal(chosen.headers['content-encoding'], 'gzip');
    assert.equal(gunzipSync(chosen.body).toString(), own);
    // the files themselves are still there for the negotiation
    assert.equal((await get('/js/app.js', 'br')).headers['content-encoding'], 'br');
  });
});
