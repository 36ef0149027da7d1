import assert from 'node:assert/strict';
import { utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import request from 'supertest';
import type { StaticOptions } from '../../../middleware/options.js';
import { otherSlot, type SlotName } from '../../../src/store/store-layout.js';
import { type TestApp, startApp } from '../../../testkit/app.js';
import { type TempStore, tempStore } from '../../../testkit/store.js';
import { waitFor } from '../../../testkit/wait.js';

const BIG = Buffer.alloc(512 * 1024, 'x'); // above the default cacheMaxFileSize: streamed

/**
 * The same serving suite with slot a mounted, with slot b mounted (the other
 * holds decoys), and with slot b reached through a swap each server saw happen.
 */
const VARIANTS: { slot: SlotName; acrossSwap: boolean }[] = [
  { slot: 'a', acrossSwap: false },
  { slot: 'b', acrossSwap: false },
  { slot: 'b', acrossSwap: true },
];
for (const { slot, acrossSwap } of VARIANTS) {
  describe(`mirrorStatic serving from slot ${slot}${acrossSwap ? ' after a swap from the other' : ''}`, () => {
    let store: TempStore;
    let epoch = 1;
    const apps: TestApp[] = [];
    const start = async (opts: Partial<StaticOptions> = {}, mountPath = '/') => {
      if (acrossSwap) await store.publish(++epoch, otherSlot(slot));
      const app = await startApp({ store: store.root, ...opts }, mountPath);
      apps.push(app);
      if (acrossSwap) {
        // warm the decoy copy's cache, then swap: nothing of it may survive the switch
        await request(app.url)
          .get(`${mountPath === '/' ? '' : mountPath}/hello.txt`)
          .expect(200, 'WRONG SLOT');
        await store.publish(++epoch, slot);
        await waitFor('the swap', () => app.mw.state().slot === slot);
      }
      return request(app.url);
    };

    before(async () => {
      store = await tempStore();
      const files = {
        'hello.txt': `hello from ${slot}\n`,
        'index.html': '<h1>root index</h1>',
        'docs/index.html': '<h1>docs</h1>',
        'docs/guide.html': 'guide',
        'nodir/file.json': '{"a":1}',
        'big.bin': BIG,
        '.secret': 'dotfile',
        '.hidden/inside.txt': 'hidden dir',
        'empty.txt': '',
      };
      await store.fill(slot, files);
      await store.fill(otherSlot(slot), { 'hello.txt': 'WRONG SLOT', 'only-other.txt': 'WRONG SLOT' });
      await utimes(
        join(store.slots[slot], 'hello.txt'),
        new Date('2026-01-01T00:00:00Z'),
        new Date('2026-01-01T00:00:00Z'),
      );
      await store.publish(1, slot);
    });
    // each test's servers are closed when it ends: left open, every one of them followed each later
    // test's publishes (two per server started across a swap), and wrote its heartbeat every second
    afterEach(async () => {
      await Promise.all(apps.splice(0).map((a) => a.close()));
    });
    after(async () => {
      await store.dispose();
    });

    describe('basic GET and HEAD', () => {
      it('serves a file from the mounted slot with type and length', async () => {
        const agent = await start();
        const res = await agent.get('/hello.txt').expect(200);
        assert.equal(res.text, `hello from ${slot}\n`);
        assert.equal(res.headers['content-type'], 'text/plain; charset=utf-8');
        assert.equal(res.headers['content-length'], String(`hello from ${slot}\n`.length));
      });

      it('never serves what only the other slot holds', async () => {
        const agent = await start();
        await agent.get('/only-other.txt').expect(404, 'app fallthrough');
      });

      it('answers HEAD with headers and no body', async () => {
        const agent = await start();
        const res = await agent.head('/hello.txt').expect(200);
        assert.equal(res.headers['content-length'], String(`hello from ${slot}\n`.length));
        assert.deepEqual(res.body, {});
      });

      it('streams a file larger than the cache limit', async () => {
        const agent = await start();
        const res = await agent
          .get('/big.bin')
          .buffer(true)
          .parse((r, cb) => {
            const chunks: Buffer[] = [];
            r.on('data', (c: Buffer) => chunks.push(c));
            r.on('end', () => cb(null, Buffer.concat(chunks)));
          });
        assert.equal(res.status, 200);
        assert.ok(BIG.equals(res.body as Buffer));
      });

      it('serves an empty file', async () => {
        const agent = await start();
        await agent.get('/empty.txt').expect(200, '');
      });

      it('ignores the query string', async () => {
        const agent = await start();
        await agent.get('/hello.txt?v=3').expect(200, `hello from ${slot}\n`);
      });

      it('tells later handlers which copy the request was resolved against (res.locals)', async () => {
        const agent = await start();
        const res = await agent.get('/missing').expect(404);
        assert.equal(res.headers['x-resolved-slot'], slot);
        assert.equal((apps.at(-1) as TestApp).mw.state().slot, slot);
      });
    });

    describe('index', () => {
      it('serves index.html for a directory with a trailing slash', async () => {
        const agent = await start();
        await agent.get('/docs/').expect(200, '<h1>docs</h1>');
        await agent.get('/').expect(200, '<h1>root index</h1>');
      });
      it('when false, a directory is not served', async () => {
        const agent = await start({ index: false });
        await agent.get('/docs/').expect(404, 'app fallthrough');
      });
      it('takes a list and uses the first that exists', async () => {
        const agent = await start({ index: ['missing.html', 'guide.html'] });
        await agent.get('/docs/').expect(200, 'guide');
      });
      it('falls through when a directory has no index', async () => {
        const agent = await start();
        await agent.get('/nodir/').expect(404, 'app fallthrough');
      });
    });

    describe('redirect', () => {
      it('redirects a directory to its trailing-slash form, keeping the query', async () => {
        const agent = await start();
        const res = await agent.get('/docs?x=1').expect(301);
        assert.equal(res.headers.location, '/docs/?x=1');
      });
      it('uses the mount path in the location', async () => {
        const agent = await start({}, '/static');
        const res = await agent.get('/static/docs').expect(301);
        assert.equal(res.headers.location, '/static/docs/');
      });
      it('when false, falls through instead', async () => {
        const agent = await start({ redirect: false });
        await agent.get('/docs').expect(404, 'app fallthrough');
      });
    });

    describe('extensions', () => {
      it('tries the listed extensions for a missing path', async () => {
        const agent = await start({ extensions: ['htm', 'html'] });
        await agent.get('/docs/guide').expect(200, 'guide');
      });
      it('is off by default', async () => {
        const agent = await start();
        await agent.get('/docs/guide').expect(404);
      });
    });

    describe('dotfiles', () => {
      it('"ignore" (default) answers as if absent', async () => {
        const agent = await start();
        await agent.get('/.secret').expect(404, 'app fallthrough');
        await agent.get('/.hidden/inside.txt').expect(404, 'app fallthrough');
      });
      it('"deny" refuses with 403', async () => {
        const agent = await start({ dotfiles: 'deny', fallthrough: false });
        await agent.get('/.secret').expect(403, 'error 403');
        await agent.get('/.hidden/inside.txt').expect(403);
      });
      it('"allow" serves them', async () => {
        const agent = await start({ dotfiles: 'allow' });
        const res = await agent.get('/.secret').expect(200);
        assert.equal(String(res.body), 'dotfile');
      });
      it('never serves the temp directory, even with "allow"', async () => {
        await store.fill(slot, { '.mirrorswap-tmp/partial': 'half' });
        const agent = await start({ dotfiles: 'allow' });
        await agent.get('/.mirrorswap-tmp/partial').expect(404);
      });
    });

    describe('fallthrough', () => {
      it('when true (default), misses and other methods go to next()', async () => {
        const agent = await start();
        await agent.get('/nope').expect(404, 'app fallthrough');
        await agent.post('/hello.txt').expect(404, 'app fallthrough');
      });
      it('when false, a miss is next(err) with 404 and other methods get 405', async () => {
        const agent = await start({ fallthrough: false });
        await agent.get('/nope').expect(404, 'error 404');
        const res = await agent.post('/hello.txt').expect(405);
        assert.equal(res.headers.allow, 'GET, HEAD');
      });
    });

    describe('caching headers', () => {
      it('sends ETag, Last-Modified and Cache-Control max-age=0 by default', async () => {
        const agent = await start();
        const res = await agent.get('/hello.txt').expect(200);
        assert.match(res.headers.etag, /^W\/"[0-9a-f]+-[0-9a-f]+"$/);
        assert.equal(res.headers['last-modified'], 'Thu, 01 Jan 2026 00:00:00 GMT');
        assert.equal(res.headers['cache-control'], 'public, max-age=0');
        assert.equal(res.headers['accept-ranges'], 'bytes');
      });
      it('maxAge takes milliseconds or a duration string, immutable adds the directive', async () => {
        const a = await start({ maxAge: 60_000 });
        assert.equal((await a.get('/hello.txt')).headers['cache-control'], 'public, max-age=60');
        const b = await start({ maxAge: '1d', immutable: true });
        assert.equal((await b.get('/hello.txt')).headers['cache-control'], 'public, max-age=86400, immutable');
      });
      it('each header can be turned off', async () => {
        const agent = await start({ etag: false, lastModified: false, cacheControl: false, acceptRanges: false });
        const res = await agent.get('/hello.txt').expect(200);
        for (const h of ['etag', 'last-modified', 'cache-control', 'accept-ranges'])
          assert.equal(res.headers[h], undefined);
      });
      it('setHeaders can add headers with the real path and stats', async () => {
        let seen = '';
        const agent = await start({
          setHeaders(res, path, stat) {
            seen = path;
            res.setHeader('X-Size', String(stat.size));
          },
        });
        const res = await agent.get('/hello.txt').expect(200);
        assert.equal(res.headers['x-size'], String(`hello from ${slot}\n`.length));
        assert.ok(seen.endsWith(`/${slot}/hello.txt`), seen);
      });
    });

    describe('conditional requests', () => {
      it('If-None-Match with the current ETag is 304 without body headers', async () => {
        const agent = await start();
        const { headers } = await agent.get('/hello.txt');
        const res = await agent.get('/hello.txt').set('If-None-Match', headers.etag).expect(304);
        assert.equal(res.headers['content-length'], undefined);
        assert.equal(res.headers['content-type'], undefined);
      });
      it('If-Modified-Since at or after the mtime is 304, before it is 200', async () => {
        const agent = await start();
        await agent.get('/hello.txt').set('If-Modified-Since', 'Thu, 01 Jan 2026 00:00:00 GMT').expect(304);
        await agent.get('/hello.txt').set('If-Modified-Since', 'Wed, 31 Dec 2025 00:00:00 GMT').expect(200);
      });
      it('If-Match with another tag is 412, with the current tag or * is 200', async () => {
        const agent = await start();
        const { headers } = await agent.get('/hello.txt');
        const failed = await agent.get('/hello.txt').set('If-Match', '"other"').expect(412);
        // framed by its length, as serve-static frames it, never chunked
        assert.equal(failed.headers['content-length'], String(Buffer.byteLength(failed.text)));
        assert.equal(failed.headers['transfer-encoding'], undefined);
        await agent.get('/hello.txt').set('If-Match', headers.etag).expect(200);
        await agent.get('/hello.txt').set('If-Match', '*').expect(200);
      });
      it('If-Unmodified-Since before the mtime is 412', async () => {
        const agent = await start();
        await agent.get('/hello.txt').set('If-Unmodified-Since', 'Wed, 31 Dec 2025 00:00:00 GMT').expect(412);
        await agent.get('/hello.txt').set('If-Unmodified-Since', 'Fri, 02 Jan 2026 00:00:00 GMT').expect(200);
      });
    });

    describe('ranges', () => {
      it('serves a single range with 206 and Content-Range', async () => {
        const agent = await start();
        const res = await agent.get('/hello.txt').set('Range', 'bytes=0-4').expect(206, 'hello');
        assert.equal(res.headers['content-range'], `bytes 0-4/${`hello from ${slot}\n`.length}`);
      });
      it('serves a suffix range of a streamed file', async () => {
        const agent = await start();
        const res = await agent.get('/big.bin').set('Range', 'bytes=-10').expect(206);
        assert.equal(res.headers['content-length'], '10');
        assert.equal(res.headers['content-range'], `bytes ${BIG.length - 10}-${BIG.length - 1}/${BIG.length}`);
      });
      it('answers an unsatisfiable range with 416 and the size', async () => {
        const agent = await start();
        const res = await agent.get('/hello.txt').set('Range', 'bytes=999-').expect(416);
        assert.equal(res.headers['content-range'], `bytes */${`hello from ${slot}\n`.length}`);
      });
      it('ignores a malformed range and sends the whole file', async () => {
        const agent = await start();
        await agent.get('/hello.txt').set('Range', 'lines=1-2').expect(200, `hello from ${slot}\n`);
      });
      it('If-Range with a stale ETag sends the whole file, with the current one the range', async () => {
        const agent = await start();
        const { headers } = await agent.get('/hello.txt');
        await agent.get('/hello.txt').set('Range', 'bytes=0-4').set('If-Range', 'W/"stale"').expect(200);
        await agent.get('/hello.txt').set('Range', 'bytes=0-4').set('If-Range', headers.etag).expect(206, 'hello');
      });
      it('acceptRanges false ignores Range', async () => {
        const agent = await start({ acceptRanges: false });
        await agent.get('/hello.txt').set('Range', 'bytes=0-4').expect(200, `hello from ${slot}\n`);
      });
    });
  });
}

describe('mirrorStatic options validation', () => {
  const cases: [string, Partial<StaticOptions>, RegExp][] = [
    ['no store', {}, /store option \(or epochFile\) is required/],
    ['bad dotfiles', { dotfiles: 'show' as never }, /dotfiles option must be "allow", "deny", or "ignore"/],
    ['bad watch', { watch: 'inotify' as never }, /watch option must be "auto", "native", or "poll"/],
    ['bad maxAge', { maxAge: 'forever' }, /maxAge option/],
    // a negative maxAge counts as 0, as send reads it (serve-static-parity.test.ts); garbage still throws
    ['bad maxage alias', { maxage: 'soon' } as Partial<StaticOptions>, /maxage option/],
    ['bad index', { index: ['../x'] }, /index option/],
    ['bad etag', { etag: 'yes' as never }, /etag option must be true, false, or "weak"/],
    ['bad serverId', { serverId: '../evil' }, /serverId option/],
    ['bad pollInterval', { pollInterval: 0 }, /pollInterval option must be an integer >= 10/],
    ['bad roots key', { roots: { c: '/x' } as never }, /roots option keys must be "a" or "b"/],
    ['bad setHeaders', { setHeaders: 'x' as never }, /setHeaders option must be a function/],
  ];
  for (const [name, opts, message] of cases) {
    it(`throws a TypeError for ${name}`, async () => {
      const { mirrorStatic } = await import('../../../middleware/static/mirror-static.js');
      const base = name === 'no store' ? {} : { store: '/nonexistent-store' };
      assert.throws(
        () => mirrorStatic({ ...base, ...opts }),
        (err: Error) => err instanceof TypeError && message.test(err.message),
      );
    });
  }
  it('does not mutate the options object', async () => {
    const { mirrorStatic } = await import('../../../middleware/static/mirror-static.js');
    const store = await tempStore();
    const opts = Object.freeze({ store: store.root, index: Object.freeze(['a.html']) });
    const mw = mirrorStatic(opts);
    await mw.close();
    await store.dispose();
  });
});
