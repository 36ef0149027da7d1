import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { mirrorStatic } from '../../../middleware/static/mirror-static.js';
import { TreeCopier } from '../../../src/tree/tree-copy.js';
import { TREE_DEFAULTS } from '../../../src/tree/tree-defaults.js';
import { contentHash, strongEtag } from '../../../src/store/content-index.js';
import { memoryLogger } from '../../../testkit/logger.js';
import { type RawResponse, type Running, listen, rawGet } from '../../../testkit/server.js';
import { type TempStore, tempStore } from '../../../testkit/store.js';
import { compressibleText, flipInPlace } from '../../../testkit/variants.js';

/**
 * Drift in a mounted copy's variants: a variant rewritten in place after the
 * index recorded it, keeping its inode and size. A strong ETag is a promise
 * about the bytes (RFC 9110 8.8.1): whatever is sent under one must be the
 * bytes whose hash it is, or a cache joins ranges of two contents under it.
 */
describe('mirrorStatic: a variant that drifted after indexing never keeps its strong ETag', () => {
  let store: TempStore;
  let server: Running;
  let mw: ReturnType<typeof mirrorStatic>;

  before(async () => {
    store = await tempStore();
    const app = compressibleText('drift app');
    await store.fill('master', {
      'made/app.js': app, // gets br and gzip variants made by the copy
      'own/app.js': app,
      'own/app.js.gz': gzipSync(Buffer.from(app)), // master's own sibling (made: false)
    });
    const settings = TREE_DEFAULTS.variantSettings;
    await new TreeCopier(store.master, store.slots.a, {
      durable: false,
      variants: { settings, other: null },
    }).mirrorAll();
    const a = store.slots.a;
    await flipInPlace(join(a, 'made/app.js.br'));
    await flipInPlace(join(a, 'own/app.js.gz'));
    await store.publish(1, 'a');
    mw = mirrorStatic({ store: store.root, logger: memoryLogger() });
    await mw.ready;
    server = await listen((req, res) =>
      mw(req, res, () => {
        res.statusCode = 404;
        res.end();
      }),
    );
  });
  after(async () => {
    await server?.close();
    await mw?.close();
    await store?.dispose();
  });

  /** A strong tag names exactly the bytes sent. */
  function assertTagNamesBytes(res: RawResponse, what: string): void {
    assert.equal(res.status, 200, what);
    const tag = String(res.headers.etag);
    if (!tag.startsWith('W/'))
      assert.equal(tag, strongEtag(contentHash(res.body)), `${what}: strong tag of other bytes`);
  }

  it('a made variant rewritten in place (same inode and size)', async () => {
    for (const coding of ['br', 'gzip']) {
      const res = await rawGet(server.port, '/made/app.js', { 'accept-encoding': coding });
      assertTagNamesBytes(res, `made ${coding}`);
    }
  });

  it("master's own sibling rewritten in place in the copy", async () => {
    const res = await rawGet(server.port, '/own/app.js', { 'accept-encoding': 'gzip' });
    assertTagNamesBytes(res, 'own gzip');
  });

  it('and what is unchanged is still served as its variant, under its strong tag', async () => {
    const res = await rawGet(server.port, '/made/app.js', { 'accept-encoding': 'gzip' });
    assert.equal(res.headers['content-encoding'], 'gzip');
    assertTagNamesBytes(res, 'untouched gzip');
  });
});
