import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { type MirrorProxy, mirrorProxy } from '../../../middleware/proxy/mirror-proxy.js';
import { publishEpoch } from '../../../src/store/publish.js';
import { memoryLogger } from '../../../testkit/logger.js';
import { type Running, listen, rawGet } from '../../../testkit/server.js';
import { type TempStore, tempStore } from '../../../testkit/store.js';

/** An upstream answering with fields it repeats, as an application's login answer does. */
const named = (name: string) =>
  listen((_req, res) => {
    res.writeHead(200, [
      'Set-Cookie',
      'session=1; Path=/',
      'Set-Cookie',
      'csrf=2; Path=/',
      'Link',
      '</a.css>; rel=preload; as=style',
      'Link',
      '</b.js>; rel=preload; as=script',
      'Cache-Control',
      'public, max-age=600',
    ]);
    res.end(name);
  });

/**
 * An answer pinned to a retained release by the header or the cookie is
 * made private by the proxy. Every field the upstream repeats must still
 * reach the client, each time it was sent: a second `Set-Cookie` dropped
 * logs a user out of the release it pinned, a `Link` dropped loses a
 * preload.
 */
describe('mirrorProxy: an answer pinned outside the URL keeps the fields its upstream repeats', () => {
  let store: TempStore;
  let upstreams: Running[];
  let proxy: MirrorProxy;
  let front: Running;

  before(async () => {
    store = await tempStore();
    upstreams = [await named('a'), await named('b')];
    await mkdir(store.slots.c, { recursive: true });
    const replacedAt = new Date().toISOString();
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
      serverId: 'proxy-pins-duplicates',
      heartbeatInterval: 100,
      logger: memoryLogger(),
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

  for (const [how, headers, body, cacheControl] of [
    ['pinned by the header', { 'x-deployment-id': 'v1' }, 'b', 'private, no-cache'],
    ['pinned by the cookie', { cookie: '__dpl=v1' }, 'b', 'private, no-cache'],
    ['not pinned', {}, 'a', 'public, max-age=600'],
  ] as [string, Record<string, string>, string, string][]) {
    it(how, async () => {
      const res = await rawGet(front.port, '/login', headers);
      assert.equal(res.body.toString(), body);
      assert.equal(res.headers['cache-control'], cacheControl);
      assert.deepEqual(res.headers['set-cookie'], ['session=1; Path=/', 'csrf=2; Path=/']);
      assert.equal(res.headers.link, '</a.css>; rel=preload; as=style, </b.js>; rel=preload; as=script');
    });
  }
});
