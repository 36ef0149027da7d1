import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { writeInclude } from '../../src/nginx/include-file.js';
import { type TestNginx, startNginx } from '../../testkit/nginx.js';
import { rawGet } from '../../testkit/server.js';

/**
 * An answer a header or a cookie sent to a retained release is marked
 * `Cache-Control: private, no-cache` whatever its status, as mirrorStatic
 * marks it (it sets the header before it looks the file up): a 404 of the
 * retained release is no answer a shared cache may keep for the URL either
 * (a CDN keeps 404s a few minutes by default), and the mounted release may
 * well hold that path.
 */
describe("the nginx include's pinned answers that are not a 200", () => {
  let root: string;
  let nginx: TestNginx;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'mirrorswap-nginx-pin-'));
    const a = join(root, 'a');
    const b = join(root, 'b');
    await mkdir(a);
    await mkdir(b);
    await writeFile(join(a, 'page.txt'), 'release 2');
    await writeFile(join(a, 'new.txt'), 'only in release 2');
    await writeFile(join(b, 'page.txt'), 'release 1');
    nginx = await startNginx();
    await writeInclude(nginx.includeFile, 2, 'a', a, [{ slot: 'b', root: b, names: ['r1', '1'] }]);
    await nginx.start();
  });
  after(async () => {
    await nginx?.dispose();
    await rm(root, { recursive: true, force: true });
  });

  it('a 404 of the retained release, pinned by the header or the cookie, is private too', async () => {
    for (const headers of [{ 'x-deployment-id': 'r1' }, { cookie: '__dpl=r1' }] as Record<string, string>[]) {
      const ok = await rawGet(nginx.port, '/page.txt', headers);
      assert.equal(ok.body.toString(), 'release 1');
      assert.equal(ok.headers['cache-control'], 'private, no-cache');
      const missing = await rawGet(nginx.port, '/new.txt', headers);
      assert.equal(missing.status, 404);
      assert.equal(missing.headers['cache-control'], 'private, no-cache', JSON.stringify(headers));
    }
    // not pinned, or by the query: as nginx sends it
    assert.equal((await rawGet(nginx.port, '/new.txt')).headers['cache-control'], undefined);
    assert.equal((await rawGet(nginx.port, '/new.txt?dpl=r1')).headers['cache-control'], undefined);
    assert.equal((await rawGet(nginx.port, '/nothing.txt')).headers['cache-control'], undefined);
  });
});
