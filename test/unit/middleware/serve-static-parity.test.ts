import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { after, before, describe, it } from 'node:test';
import express, { type NextFunction, type Request, type Response } from 'express';
import createError from 'http-errors';
import serveStatic from 'serve-static';
import { mirrorStatic } from '../../../middleware/static/mirror-static.js';
import type { StaticOptions } from '../../../middleware/options.js';
import { memoryLogger } from '../../../testkit/logger.js';
import { type RawResponse, type Running, listen, rawGet } from '../../../testkit/server.js';
import { type TempStore, tempStore } from '../../../testkit/store.js';

/**
 * mirrorStatic is a drop-in for express.static: each case is asked of
 * serve-static 2.x itself (what Express ships) and of mirrorStatic, over the
 * same files, and the answers must agree on what a client or an error
 * handler can see.
 */
describe('mirrorStatic answers as serve-static does', () => {
  let store: TempStore;
  const running: Running[] = [];
  let serverIds = 0;

  before(async () => {
    store = await tempStore();
    await store.fill('a', {
      'index.html': 'root index',
      'todo.txt': 'todo',
      'users/index.html': 'users index',
      'users/list.txt': 'users',
      'snow ☃/index.html': 'snow',
      'evil.test/index.html': 'not a redirect elsewhere',
      '.hidden': 'dot',
    });
    await store.publish(1, 'a');
  });
  after(async () => {
    for (const r of running) await r.close();
    await store.dispose();
  });

  type Handler = (req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void) => void;

  /** Both middlewares with the same options, each mounted under `mount` in its own Express app. */
  const pair = async (options: Omit<StaticOptions, 'store'> & Record<string, unknown>, mount = '/static') => {
    const errors: { ss?: unknown; ms?: unknown } = {};
    const make = async (kind: 'ss' | 'ms', mw: Handler) => {
      const app = express();
      app.disable('x-powered-by');
      app.use(mount, mw);
      app.use((_req: Request, res: Response) => res.status(404).type('text').send('app fallthrough'));
      app.use((err: { status?: number }, _req: Request, res: Response, _next: NextFunction) => {
        errors[kind] = err;
        res
          .status(err.status ?? 500)
          .type('text')
          .send(`error ${err.status ?? 500}`);
      });
      const server = await listen(app);
      running.push(server);
      return server;
    };
    const ms = mirrorStatic({
      store: store.root,
      serverId: `parity-${serverIds++}`,
      logger: memoryLogger(),
      ...options,
    });
    await ms.ready;
    running.push({ close: () => ms.close() } as Running);
    const ss = serveStatic(store.slots.a, options as serveStatic.ServeStaticOptions) as unknown as Handler;
    return { ss: await make('ss', ss), ms: await make('ms', ms), errors };
  };

  /** What must agree between the two answers. */
  const seen = (r: RawResponse) => ({
    status: r.status,
    location: r.headers.location,
    contentType: r.headers['content-type'],
    csp: r.headers['content-security-policy'],
    nosniff: r.headers['x-content-type-options'],
    cacheControl: r.headers['cache-control'],
    body: r.body.toString(),
  });
  const agree = async (p: Awaited<ReturnType<typeof pair>>, path: string, headers: Record<string, string> = {}) => {
    const [a, b] = await Promise.all([rawGet(p.ss.port, path, headers), rawGet(p.ms.port, path, headers)]);
    assert.deepEqual(seen(b), seen(a), `mirrorStatic and serve-static differ on ${path}`);
    return b;
  };

  it('redirects the mount point itself to its slash form, with the query, also with index: false', async () => {
    for (const index of [undefined, false] as const) {
      const p = await pair(index === false ? { index: false } : {});
      assert.equal((await agree(p, '/static')).status, 301);
      assert.equal((await agree(p, '/static?x=1&y=%20')).headers.location, '/static/?x=1&y=%20');
    }
  });

  it('with redirect: false, the mount point falls through as serve-static does', async () => {
    const p = await pair({ redirect: false });
    assert.equal((await agree(p, '/static')).status, 404);
  });

  it("redirect responses carry serve-static's page and headers, and never point off-site", async () => {
    const p = await pair({}, '/');
    const r = await agree(p, '/users');
    assert.equal(r.status, 301);
    assert.match(String(r.headers['content-type']), /^text\/html; charset=utf-8$/i);
    assert.equal(r.headers['content-security-policy'], "default-src 'none'");
    assert.equal(r.headers['x-content-type-options'], 'nosniff');
    assert.match(r.body.toString(), /Redirecting to <a href="\/users\/">|Redirecting to \/users\//);
    const offsite = await agree(p, '//evil.test');
    assert.equal(offsite.headers.location, '/evil.test/');
  });

  it('percent-encodes a Location built from a req.url rewritten with non-Latin-1 characters, and never hangs', async () => {
    const rewritten =
      (mw: Handler): Handler =>
      (req, res, next) => {
        req.url = '/snow ☃';
        mw(req, res, next);
      };
    const fallthrough = (res: ServerResponse) => () => {
      res.statusCode = 404;
      res.end('fallthrough');
    };
    const ms = mirrorStatic({ store: store.root, serverId: 'parity-snow', logger: memoryLogger() });
    await ms.ready;
    running.push({ close: () => ms.close() } as Running);
    const ss = serveStatic(store.slots.a) as unknown as Handler;
    const servers = await Promise.all(
      [ss, ms as unknown as Handler].map((mw) => listen((req, res) => rewritten(mw)(req, res, fallthrough(res)))),
    );
    running.push(...servers);
    const [a, b] = await Promise.all(servers.map((s) => rawGet(s.port, '/anything')));
    assert.equal((a as RawResponse).headers.location, '/snow%20%E2%98%83/');
    assert.deepEqual(seen(b as RawResponse), seen(a as RawResponse));
  });

  it('hands http-errors objects to next(err) with fallthrough: false', async () => {
    const p = await pair({ fallthrough: false, dotfiles: 'deny' }, '/');
    for (const [path, status, name] of [
      ['/missing.txt', 404, 'NotFoundError'],
      ['/.hidden', 403, 'ForbiddenError'],
      ['/%E0%A4%A', 400, 'BadRequestError'],
    ] as const) {
      await agree(p, path);
      const mine = p.errors.ms as createError.HttpError;
      const theirs = p.errors.ss as createError.HttpError;
      assert.ok(mine instanceof createError.HttpError, `${path}: not an http-errors object`);
      assert.equal(mine.name, name);
      // what an error handler reads is what serve-static gave it (its 404 is the file system's
      // error with a status, expose false; its 403 and 400 are ForbiddenError and BadRequestError)
      assert.ok(createError.isHttpError(theirs));
      assert.equal(mine.status, theirs.status);
      assert.equal(mine.statusCode, theirs.statusCode);
      assert.equal(mine.expose, theirs.expose);
      assert.equal(mine.status, status);
    }
  });

  it('reads maxAge as send does: Infinity capped at one year, negative as 0, and the maxage alias', async () => {
    for (const options of [
      { maxAge: Number.POSITIVE_INFINITY },
      { maxAge: -5000 },
      { maxage: '1h' },
      { maxage: 90_000 },
    ]) {
      const p = await pair(options, '/');
      await agree(p, '/todo.txt');
    }
  });

  it('serves dot segments that stay inside the root, and refuses those that climb out', async () => {
    const p = await pair({}, '/');
    assert.equal((await agree(p, '/users/../todo.txt')).body.toString(), 'todo');
    assert.equal((await agree(p, '/users/./list.txt')).body.toString(), 'users');
    for (const path of ['/../todo.txt', '/users/../../a/todo.txt', '/%2e%2e/todo.txt']) {
      const r = await rawGet(p.ms.port, path);
      assert.ok([403, 404].includes(r.status), `${r.status} for ${path}`);
      assert.notEqual(r.body.toString(), 'todo');
    }
  });

  it('keeps a status and headers an earlier middleware set, and skips the conditional GET then', async () => {
    const ms = mirrorStatic({ store: store.root, serverId: 'parity-preset', logger: memoryLogger() });
    await ms.ready;
    running.push({ close: () => ms.close() } as Running);
    const make = async (mw: Handler) => {
      const app = express();
      app.disable('x-powered-by');
      app.use((req: Request, res: Response, next: NextFunction) => {
        if (req.path.startsWith('/404')) {
          res.status(404);
          req.url = req.url.slice(4);
        }
        if (req.path === '/nostore.txt') {
          res.set('Cache-Control', 'no-store');
          req.url = '/todo.txt';
        }
        next();
      });
      app.use(mw);
      const s = await listen(app);
      running.push(s);
      return s;
    };
    const ss = await make(serveStatic(store.slots.a) as unknown as Handler);
    const mine = await make(ms as unknown as Handler);
    const both = (path: string, headers: Record<string, string> = {}) =>
      Promise.all([rawGet(ss.port, path, headers), rawGet(mine.port, path, headers)]);
    // warm the cache, so the fast path would be taken
    await rawGet(mine.port, '/todo.txt');
    const [a1, b1] = await both('/404/todo.txt');
    assert.equal(b1.status, 404);
    assert.deepEqual(seen(b1), seen(a1));
    const etag = String((await rawGet(mine.port, '/todo.txt')).headers.etag);
    const [a2, b2] = await both('/404/todo.txt', { 'if-none-match': etag });
    assert.equal(b2.status, a2.status, 'a preset 404 must not become a 304');
    assert.deepEqual(seen(b2), seen(a2));
    const [a3, b3] = await both('/nostore.txt');
    assert.equal(b3.headers['cache-control'], 'no-store');
    assert.deepEqual(seen(b3), seen(a3));
  });

  it('warns once about an option it does not know, and ignores it as serve-static does', async () => {
    const warnings: Error[] = [];
    const listener = (w: Error) => warnings.push(w);
    process.on('warning', listener);
    try {
      for (let i = 0; i < 2; i++) {
        const ms = mirrorStatic({
          store: store.root,
          serverId: `parity-typo-${i}`,
          logger: memoryLogger(),
          maxAgee: 1000,
        } as StaticOptions);
        await ms.ready;
        await ms.close();
      }
      await new Promise((r) => setImmediate(r));
      const mine = warnings.filter((w) => (w as Error & { code?: string }).code === 'MIRRORSWAP_UNKNOWN_OPTION');
      assert.equal(mine.length, 1);
      assert.match(mine[0]?.message ?? '', /maxAgee/);
    } finally {
      process.off('warning', listener);
    }
  });
});
