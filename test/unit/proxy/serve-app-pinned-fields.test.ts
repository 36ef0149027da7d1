import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type StaticServer, startStaticServer } from '../../../src/server/static-server.js';
import { publishEpoch } from '../../../src/store/publish.js';
import { memoryLogger } from '../../../testkit/logger.js';
import { type Running, listen, rawGet } from '../../../testkit/server.js';
import { type TempStore, tempStore } from '../../../testkit/store.js';

/**
 * `mirrorswap serve --app`: what the copy does not hold goes to the
 * application. A request pinned to a retained release by the cookie (sent
 * with every fetch of a page that set it) is marked private by mirrorStatic
 * before it falls through; the application's answer must still reach the
 * client with every field it repeats (two `Set-Cookie`, two `Link`), as an
 * answer pinned by nothing does.
 */
describe('serve --app: an application answer to a pinned request keeps its repeated fields', () => {
  let store: TempStore;
  let app: Running;
  let web: StaticServer;

  before(async () => {
    store = await tempStore();
    for (const slot of ['a', 'b'] as const) {
      await mkdir(store.slots[slot], { recursive: true });
      await writeFile(join(store.slots[slot], 'index.html'), slot);
    }
    await publishEpoch(store, 2, 'a', {
      keep: 3,
      release: 'v2',
      retained: [{ slot: 'b', epoch: 1, release: 'v1', replacedAt: new Date().toISOString() }],
    });
    app = await listen((_req, res) => {
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
        'no-store',
      ]);
      res.end('app');
    });
    web = await startStaticServer('127.0.0.1', 0, { store: store.root, logger: memoryLogger() }, { upstream: app.url });
  });
  after(async () => {
    await web.close();
    await app.close();
    await store.dispose();
  });

  for (const [how, headers, cacheControl] of [
    ['pinned by the cookie', { cookie: '__dpl=v1' }, 'private, no-cache'],
    ['pinned by the header', { 'x-deployment-id': 'v1' }, 'private, no-cache'],
    ['not pinned', {}, 'no-store'],
  ] as [string, Record<string, string>, string][]) {
    it(how, async () => {
      const port = Number(new URL(web.url).port);
      const res = await rawGet(port, '/api/login', headers);
      assert.equal(res.body.toString(), 'app');
      assert.equal(res.headers['cache-control'], cacheControl);
      assert.deepEqual(res.headers['set-cookie'], ['session=1; Path=/', 'csrf=2; Path=/']);
      assert.equal(res.headers.link, '</a.css>; rel=preload; as=style, </b.js>; rel=preload; as=script');
    });
  }
});
