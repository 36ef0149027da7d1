import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { type MirrorProxy, mirrorProxy } from '../../../middleware/proxy/mirror-proxy.js';
import { publishEpoch } from '../../../src/store/publish.js';
import { memoryLogger } from '../../../testkit/logger.js';
import { type Running, listen, rawGet } from '../../../testkit/server.js';
import { type TempStore, tempStore } from '../../../testkit/store.js';
import { waitFor } from '../../../testkit/wait.js';

/** An upstream that answers with its name, cacheable by anyone (as a static server's assets are). */
const named = (name: string) =>
  listen((_req, res) => {
    res.setHeader('Cache-Control', 'public, max-age=600');
    // what a CDN reads before Cache-Control (RFC 9213; Fastly's and Akamai's Surrogate-Control)
    res.setHeader('CDN-Cache-Control', 'max-age=600');
    res.setHeader('Cloudflare-CDN-Cache-Control', 'max-age=600');
    res.setHeader('Surrogate-Control', 'max-age=600');
    res.end(name);
  });

describe('mirrorProxy with a store keeping releases', () => {
  let store: TempStore;
  let upstreams: Running[];
  let proxy: MirrorProxy;
  let front: Running;
  const logger = memoryLogger();

  before(async () => {
    store = await tempStore();
    upstreams = [await named('a'), await named('b')];
    await mkdir(store.slots.c, { recursive: true });
    const replacedAt = new Date().toISOString();
    // slot b holds release v1 (epoch 1); slot c (v0), which the proxy has no upstream for
    await publishEpoch(store, 3, 'a', {
      keep: 3,
      release: 'v2',
      retained: [
        { slot: 'b', epoch: 2, release: 'v1', replacedAt },
        { slot: 'c', epoch: 1, release: 'v0', replacedAt },
      ],
    });
    proxy = mirrorProxy({
      store: store.root,
      upstreams: { a: upstreams[0]?.url as string, b: upstreams[1]?.url as string },
      serverId: 'proxy-pins',
      heartbeatInterval: 100,
      logger,
    });
    await proxy.ready;
    front = await listen((req, res) => proxy(req, res, () => res.end('no mount')));
  });
  after(async () => {
    await front.close();
    await proxy.close();
    for (const u of upstreams) await u.close();
    await store.dispose();
  });

  it('forwards a request pinned to a retained release to its slot’s upstream, the rest to the mounted one', async () => {
    assert.equal((await rawGet(front.port, '/x?dpl=v1')).body.toString(), 'b');
    assert.equal((await rawGet(front.port, '/x', { 'x-deployment-id': '2' })).body.toString(), 'b');
    assert.equal((await rawGet(front.port, '/x')).body.toString(), 'a');
    assert.equal((await rawGet(front.port, '/x?dpl=v2')).body.toString(), 'a');
  });

  it('marks an answer pinned outside the URL (header, cookie) private, as mirrorStatic does', async () => {
    // a shared cache keys by the URL: the retained release's answer must not be kept for requests naming none
    for (const headers of [{ 'x-deployment-id': 'v1' }, { cookie: 'a=b; __dpl=v1' }] as Record<string, string>[]) {
      const res = await rawGet(front.port, '/x', headers);
      assert.equal(res.body.toString(), 'b');
      assert.equal(res.headers['cache-control'], 'private, no-cache', JSON.stringify(headers));
    }
    // by the query (part of the URL), naming the mounted release, or nothing: the upstream's word
    for (const [path, headers] of [
      ['/x?dpl=v1', {}],
      ['/x', { 'x-deployment-id': 'v2' }],
      ['/x', {}],
    ] as [string, Record<string, string>][]) {
      assert.equal((await rawGet(front.port, path, headers)).headers['cache-control'], 'public, max-age=600', path);
    }
  });

  it('drops what a CDN reads before Cache-Control from an answer pinned outside the URL', async () => {
    // a CDN keys by the URL too, and obeys CDN-Cache-Control (and its targeted kin) or Surrogate-Control
    // over Cache-Control: kept, they let it keep the retained release's answer for requests naming none
    const cdn = ['cdn-cache-control', 'cloudflare-cdn-cache-control', 'surrogate-control'];
    for (const headers of [{ 'x-deployment-id': 'v1' }, { cookie: '__dpl=v1' }] as Record<string, string>[]) {
      const res = await rawGet(front.port, '/x', headers);
      assert.equal(res.body.toString(), 'b');
      for (const name of cdn) assert.equal(res.headers[name], undefined, `${name} ${JSON.stringify(headers)}`);
    }
    // by the query, or not pinned: the upstream's word
    for (const path of ['/x?dpl=v1', '/x']) {
      const res = await rawGet(front.port, path);
      for (const name of cdn) assert.equal(res.headers[name], 'max-age=600', `${name} ${path}`);
    }
  });

  it('a retained slot with no upstream is left out, said once, and its pins get the mounted release', async () => {
    assert.equal(proxy.state().epoch, 3, 'the epoch was taken all the same');
    assert.equal((await rawGet(front.port, '/x?dpl=v0')).body.toString(), 'a');
    await waitFor('the warning', () => logger.lines.some((l) => /retained release cannot be served/.test(l.msg)));
  });
});
