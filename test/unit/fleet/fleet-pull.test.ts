import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { chmod, lstat, mkdir, readFile, readdir, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { createServer, request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import express from 'express';
import { frameHeader, fleetRouter } from '../../../src/fleet/coordinator/fleet-api.js';
import { type ManifestEntry, diffManifests } from '../../../src/tree/manifest.js';
import { type PullStats, pullSnapshot } from '../../../src/fleet/host/pull.js';
import { Snapshots } from '../../../src/fleet/coordinator/snapshots.js';
import { memoryLogger } from '../../../testkit/logger.js';
import { waitFor } from '../../../testkit/wait.js';
import { treeOf } from '../../../testkit/trees.js';
import { brotliDecompressSync, gzipSync } from 'node:zlib';
import { mirrorStatic } from '../../../middleware/static/mirror-static.js';
import { readCopyIndex } from '../../../src/store/recent-records.js';
import { TreeCopier } from '../../../src/tree/tree-copy.js';
import { TREE_DEFAULTS } from '../../../src/tree/tree-defaults.js';
import { listen, listenUrl, rawGet } from '../../../testkit/server.js';
import { tempDirs, tempStore } from '../../../testkit/store.js';
import { pathsAsked, stubCoordinator } from '../../../testkit/stub-coordinator.js';
import { compressibleText } from '../../../testkit/variants.js';

const temp = tempDirs();
after(() => temp.removeAll());
const TOKEN = `fleet-token-${randomBytes(16).toString('hex')}`;

/** A coordinator's content endpoints over two slot directories, on loopback. */
async function coordinator() {
  const root = await temp.make('mirrorswap-fleet-coord-');
  const slots = { a: join(root, 'a'), b: join(root, 'b') };
  await mkdir(slots.a);
  await mkdir(slots.b);
  const snapshots = new Snapshots(slots, join(root, 'manifests'));
  const app = express();
  app.use('/v1/fleet', fleetRouter(snapshots, TOKEN, memoryLogger()));
  const server = createServer(app);
  const url = await listenUrl(server);
  return { slots, snapshots, url, close: () => new Promise((r) => server.close(r)) };
}

async function write(root: string, files: Record<string, string | Buffer>, mtime = new Date('2026-01-02T03:04:05Z')) {
  for (const [path, content] of Object.entries(files)) {
    await mkdir(join(root, path, '..'), { recursive: true });
    await writeFile(join(root, path), content);
    await utimes(join(root, path), mtime, mtime);
  }
}

/** A pull of `snapshot` into `into` with no base: the whole manifest compared with what the slot holds. */
function wholePull(from: string, snapshot: string, into: string): Promise<PullStats> {
  return pullSnapshot({ from, token: TOKEN, snapshot, base: null, into, durable: false, timeoutMs: 5000 });
}

/** A pull of `snapshot` into `into`, which holds `base`: what changed since. */
function deltaPull(from: string, snapshot: string, base: string, into: string): Promise<PullStats> {
  return pullSnapshot({ from, token: TOKEN, snapshot, base, into, durable: false, timeoutMs: 5000 });
}

describe('fleet content transfer', () => {
  it('a first pull reproduces the tree; the next asks only what changed since, and the copies stay equal', async () => {
    const c = await coordinator();
    const into = await temp.make('mirrorswap-fleet-host-');
    try {
      await write(c.slots.a, {
        'index.html': 'one',
        'css/site.css': 'body{}',
        'deep/er/file.txt': 'x'.repeat(100_000),
        empty: '',
      });
      await symlink('index.html', join(c.slots.a, 'home.html'));
      await chmod(join(c.slots.a, 'css'), 0o750);
      await chmod(join(c.slots.a, 'index.html'), 0o640);
      const first = await c.snapshots.take('a');
      let live: Readonly<PullStats> | undefined;
      const full = await pullSnapshot({
        from: c.url,
        token: TOKEN,
        snapshot: first,
        base: null,
        into,
        durable: false,
        timeoutMs: 5000,
        onStart: (stats) => {
          live = stats;
        },
      });
      assert.equal(full.full, true);
      // the counts a host's status shows while it pulls: the very object, with its totals
      assert.equal(live, full);
      assert.equal(full.totalFiles, 4, 'index.html, css/site.css, deep/er/file.txt, empty');
      assert.equal(full.totalBytes, 3 + 6 + 100_000);
      assert.equal(full.files, full.totalFiles);
      assert.equal(full.bytes, full.totalBytes);
      assert.deepEqual(await treeOf(into), await treeOf(c.slots.a));

      // the next version, in the other slot: one file changed, one removed, one type changed, one added
      await write(c.slots.b, {
        'index.html': 'two',
        'css/site.css': 'body{}',
        'deep/er/file.txt': 'x'.repeat(100_000),
        'new/page.html': 'new',
      });
      await mkdir(join(c.slots.b, 'empty'));
      await symlink('index.html', join(c.slots.b, 'home.html'));
      await chmod(join(c.slots.b, 'css'), 0o750);
      await chmod(join(c.slots.b, 'index.html'), 0o640);
      const second = await c.snapshots.take('b');
      const delta = await deltaPull(c.url, second, first, into);
      assert.equal(delta.full, false, 'the coordinator knew the base: only what changed was sent');
      assert.equal(delta.files, 2, 'index.html and new/page.html');
      assert.ok(delta.received < 5000, `received ${delta.received} bytes for a few changed bytes`);
      assert.deepEqual(await treeOf(into), await treeOf(c.slots.b));
      assert.deepEqual(await readdir(join(into, '.mirrorswap-tmp')).catch(() => []), [], 'no temp file left');
    } finally {
      await c.close();
    }
  });

  it('without a base, compares the whole manifest with what the slot holds and repairs it', async () => {
    const c = await coordinator();
    const into = await temp.make('mirrorswap-fleet-host-');
    try {
      await write(c.slots.a, { 'a.txt': 'A', 'dir/b.txt': 'B' });
      const id = await c.snapshots.take('a');
      // the slot holds something else: a stray file, a changed one, a directory where a file goes
      await write(into, { 'a.txt': 'stale', 'stray.txt': 'gone soon', 'dir/b.txt/inner': 'wrong type' });
      const stats = await wholePull(c.url, id, into);
      assert.equal(stats.full, true);
      assert.deepEqual(await treeOf(into), await treeOf(c.slots.a));
    } finally {
      await c.close();
    }
  });

  it('without a base, removes entries whose names are not UTF-8 (no snapshot names one), a read-only directory among them', async () => {
    const c = await coordinator();
    const into = await temp.make('mirrorswap-fleet-host-');
    try {
      await write(c.slots.a, { 'a.txt': 'A', 'dir/b.txt': 'B' });
      const id = await c.snapshots.take('a');
      await write(into, { 'dir/b.txt': 'B' });
      // names as bytes: 0xff and 0xfe are never UTF-8, and read as a string they come back as U+FFFD
      const bytes = (...parts: (string | number[])[]) =>
        Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : Buffer.from(p))));
      await writeFile(bytes(into, '/top-', [0xff], '.txt'), 'stray');
      await writeFile(bytes(into, '/dir/in-', [0xfe, 0xff]), 'stray');
      const shut = bytes(into, '/shut-', [0xff]);
      await mkdir(shut);
      await writeFile(Buffer.concat([shut, Buffer.from('/inner.txt')]), 'stray');
      await chmod(shut, 0o555);
      const stats = await wholePull(c.url, id, into);
      assert.equal(stats.full, true);
      assert.deepEqual(await treeOf(into), await treeOf(c.slots.a));
      const names = await readdir(into, { encoding: 'buffer' });
      assert.deepEqual(names.map((n) => n.toString()).sort(), ['.mirrorswap-meta', 'a.txt', 'dir']);
      assert.deepEqual((await readdir(join(into, 'dir'), { encoding: 'buffer' })).map(String), ['b.txt']);
    } finally {
      await c.close();
    }
  });

  it('the content endpoints refuse without the token, for a snapshot no slot holds, and for hostile paths', async () => {
    const c = await coordinator();
    try {
      await write(c.slots.a, { 'a.txt': 'A' });
      const id = await c.snapshots.take('a');
      const call = (path: string, init: RequestInit = {}) => fetch(`${c.url}/v1/fleet${path}`, init);
      assert.equal((await call(`/manifest?snapshot=${id}`)).status, 401);
      assert.equal(
        (await call(`/manifest?snapshot=${id}`, { headers: { authorization: 'Bearer wrong-token-xxxxxxxxxxxx' } }))
          .status,
        401,
      );
      const auth = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };
      assert.equal((await call(`/manifest?snapshot=${id}`, { headers: auth })).status, 200);
      assert.equal((await call('/manifest?snapshot=not-a-snapshot', { headers: auth })).status, 410);
      for (const bad of ['../etc/passwd', '/etc/passwd', 'a/../../x', '.mirrorswap-tmp/x', 'a\0b', '']) {
        const res = await call(`/files?snapshot=${id}`, {
          method: 'POST',
          headers: auth,
          body: JSON.stringify({ paths: [bad] }),
        });
        assert.equal(res.status, 400, `path ${JSON.stringify(bad)}`);
      }
      const tooMany = await call(`/files?snapshot=${id}`, {
        method: 'POST',
        headers: auth,
        body: JSON.stringify({ paths: Array.from({ length: 5000 }, (_, i) => `f${i}`) }),
      });
      assert.equal(tooMany.status, 400);
      // a path that is no file of the snapshot
      const res = await call(`/files?snapshot=${id}`, {
        method: 'POST',
        headers: auth,
        body: JSON.stringify({ paths: ['nope.txt'] }),
      });
      assert.equal(res.status, 400);
    } finally {
      await c.close();
    }
  });

  it('a slot being rewritten first waits for pulls reading it, and refuses new ones', async () => {
    const c = await coordinator();
    try {
      await write(c.slots.a, { 'a.txt': 'A' });
      const id = await c.snapshots.take('a');
      const pull = c.snapshots.open(id);
      assert.ok(pull);
      let released = false;
      const release = c.snapshots.release('a', 5000).then(() => {
        released = true;
      });
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(released, false, 'waits for the pull under way');
      assert.equal(c.snapshots.open(id), null, 'no new pull starts');
      pull.done();
      await release;
      assert.equal(c.snapshots.idOf('a'), null, 'the slot holds no snapshot while it is rewritten');
    } finally {
      await c.close();
    }
  });

  it('a host stopped mid-pull does not hold up the next copy: its pull is cut after a moment', async () => {
    const c = await coordinator();
    try {
      // more than the socket buffers take: the answer stays unfinished while its reader is stopped
      // 48 MiB of 'x', made as bytes (a 48 MiB string took longer to build and to encode than to send)
      await write(c.slots.a, { 'big.bin': Buffer.alloc(48 * 1024 * 1024, 0x78) });
      const id = await c.snapshots.take('a');
      const body = JSON.stringify({ paths: ['big.bin'] });
      const { port } = new URL(c.url);
      let resume: () => void = () => {};
      const cutShort = new Promise<number>((resolve) => {
        const req = httpRequest(
          {
            host: '127.0.0.1',
            port,
            path: `/v1/fleet/files?snapshot=${id}`,
            method: 'POST',
            headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
          },
          (res) => {
            let received = 0;
            res.once('data', (chunk: Buffer) => {
              received += chunk.length;
              res.pause(); // the host stops reading, as a SIGSTOPped one does
              resume = () => {
                res.on('data', (c: Buffer) => {
                  received += c.length;
                });
                res.resume();
              };
            });
            res.on('close', () => resolve(received));
          },
        );
        req.on('error', () => {});
        req.end(body);
      });
      const fdsBefore = (await readdir('/proc/self/fd')).length;
      await waitFor('the pull to be under way', () => c.snapshots.pulls().a === 1);
      const started = Date.now();
      await c.snapshots.release('a', 30_000);
      const took = Date.now() - started;
      assert.ok(took >= 900 && took < 5000, `released after ${took} ms: a moment's grace, then the cut`);
      // the host, resumed, reads what was sent before the cut, then the end: never the whole file
      resume();
      assert.ok((await cutShort) < 48 * 1024 * 1024, 'the stopped host got a cut answer, never the whole file');
      // and the coordinator let go of the file it was reading: no descriptor left open by a cut answer
      await waitFor('the file to be closed', async () => (await readdir('/proc/self/fd')).length <= fdsBefore, {
        timeout: 5000,
      });
      assert.equal(c.snapshots.pulls().a, 0);
    } finally {
      await c.close();
    }
  });
});

describe('variants the agent made, on a fleet host', () => {
  it('are marked made in the snapshot and recorded made by the host: never served under their own names there', async () => {
    const c = await coordinator();
    const master = await temp.make('mirrorswap-fleet-master-');
    const host = await tempStore('mirrorswap-fleet-host-store-');
    const mw = mirrorStatic({ store: host.root, logger: memoryLogger() });
    const own = compressibleText('master compressed this one itself');
    try {
      await write(master, {
        'app.js': compressibleText('v1 app'),
        'lib/b.js': compressibleText('v1 b'),
        'own.js': own,
        'own.js.gz': gzipSync(own),
      });
      // the agent's copy: app.js and lib/b.js get made variants, own.js keeps master's own
      const settings = TREE_DEFAULTS.variantSettings;
      await new TreeCopier(master, c.slots.a, { durable: false, variants: { settings, other: null } }).mirrorAll();
      const first = await c.snapshots.take('a');
      await wholePull(c.url, first, host.slots.a);
      const made = async (dir: string, name: string) => {
        const record = (await readCopyIndex(host.slots.a, dir))?.files[name];
        return [record?.variants?.br?.made, record?.variants?.gzip?.made];
      };
      assert.deepEqual(await made('', 'app.js'), [true, true]);
      assert.deepEqual(await made('lib', 'b.js'), [true, true]);
      // the agent made own.js.br; own.js.gz is master's
      assert.deepEqual(await made('', 'own.js'), [true, false], "master's own sibling is master's");

      await host.publish(1, 'a');
      await mw.ready;
      const web = await listen((req, res) =>
        mw(req, res, () => {
          res.statusCode = 404;
          res.end();
        }),
      );
      try {
        for (const path of ['/app.js.br', '/app.js.gz', '/lib/b.js.br', '/own.js.br'])
          assert.equal((await rawGet(web.port, path)).status, 404, `${path} served under its own name`);
        const ownGz = await rawGet(web.port, '/own.js.gz');
        assert.equal(ownGz.status, 200, "master's own file");
        assert.deepEqual(ownGz.body, gzipSync(own));
        const coded = await rawGet(web.port, '/app.js', { 'accept-encoding': 'br' });
        assert.equal(coded.headers['content-encoding'], 'br');
        assert.equal(brotliDecompressSync(coded.body).toString(), compressibleText('v1 app'));
      } finally {
        await web.close();
      }

      // the next release changes app.js and adds a directory (derived as a tree): a delta names them
      // and their variants, not lib/b.js's
      await write(
        master,
        { 'app.js': compressibleText('v2 app'), 'assets/c.js': compressibleText('v2 c') },
        new Date('2026-02-03T04:05:06Z'),
      );
      await new TreeCopier(master, c.slots.b, {
        durable: false,
        variants: { settings, other: c.slots.a },
      }).mirrorAll();
      const second = await c.snapshots.take('b');
      const delta = await deltaPull(c.url, second, first, host.slots.a);
      assert.equal(delta.full, false);
      assert.equal(delta.files, 6, 'app.js, assets/c.js and their variants');
      assert.deepEqual(await made('', 'app.js'), [true, true]);
      assert.deepEqual(await made('assets', 'c.js'), [true, true]);
      assert.deepEqual(await made('lib', 'b.js'), [true, true], 'a record the pull left alone');
      assert.deepEqual(await made('', 'own.js'), [true, false]);
    } finally {
      await mw.close();
      await host.dispose();
      await c.close();
    }
  });
});

/** A hostile coordinator: answers whatever manifest and frames the test gives. */
const hostile = (manifest: ManifestEntry[], frames: (paths: string[]) => Buffer) =>
  stubCoordinator(
    (_req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ base: null, changed: manifest, removed: [] }));
    },
    (_req, res, body) => res.end(frames(pathsAsked(body))),
  );

const entry = (path: string, type: ManifestEntry['type'], size = 0, target?: string): ManifestEntry => ({
  path,
  type,
  mode: type === 'dir' ? 0o755 : 0o644,
  size,
  mtimeMs: 1_700_000_000_000,
  ...(target ? { target } : {}),
});

function frame(path: string, content: Buffer, hash = createHash('sha256').update(content).digest()): Buffer {
  return Buffer.concat([frameHeader(path, content.length), content, hash]);
}

describe('a pull from a hostile or broken coordinator', () => {
  for (const [name, manifest] of [
    ['a path climbing out of the slot', [entry('../escape.txt', 'file', 1)]],
    ['an absolute path', [entry('/tmp/escape.txt', 'file', 1)]],
    ['the temp directory', [entry('.mirrorswap-tmp/x', 'file', 1)]],
    ['a file written through a link', [entry('out', 'link', 0, '/tmp'), entry('out/escape.txt', 'file', 1)]],
  ] as const) {
    it(`refuses ${name}, writing nothing outside the slot`, async () => {
      const outside = await temp.make('mirrorswap-fleet-outside-');
      const into = join(outside, 'slot');
      await mkdir(into);
      const fixed = manifest.map((e) => (e.type === 'link' ? { ...e, target: outside } : e));
      const h = await hostile(fixed, (paths) => Buffer.concat(paths.map((p) => frame(p, Buffer.from('!')))));
      try {
        await assert.rejects(
          pullSnapshot({
            from: h.url,
            token: h.token,
            snapshot: 's',
            base: null,
            into,
            durable: false,
            timeoutMs: 5000,
          }),
          /unsafe path|not a directory/,
        );
        assert.deepEqual((await readdir(outside)).sort(), ['slot']);
        await assert.rejects(lstat(join(outside, 'escape.txt')));
      } finally {
        await h.close();
      }
    });
  }

  it('refuses a file whose content does not match its hash, keeping the old one', async () => {
    const into = await temp.make('mirrorswap-fleet-host-');
    await writeFile(join(into, 'a.txt'), 'old');
    const h = await hostile([entry('a.txt', 'file', 3)], () => frame('a.txt', Buffer.from('new'), Buffer.alloc(32)));
    try {
      await assert.rejects(
        pullSnapshot({ from: h.url, token: h.token, snapshot: 's', base: null, into, durable: false, timeoutMs: 5000 }),
        /arrived damaged/,
      );
      assert.equal(await readFile(join(into, 'a.txt'), 'utf8'), 'old');
    } finally {
      await h.close();
    }
  });

  it('refuses an answer cut short, keeping the old file', async () => {
    const into = await temp.make('mirrorswap-fleet-host-');
    await writeFile(join(into, 'a.txt'), 'old');
    const h = await hostile([entry('a.txt', 'file', 1000)], () => frameHeader('a.txt', 1000));
    try {
      await assert.rejects(
        pullSnapshot({ from: h.url, token: h.token, snapshot: 's', base: null, into, durable: false, timeoutMs: 5000 }),
        /cut its answer short/,
      );
      assert.equal(await readFile(join(into, 'a.txt'), 'utf8'), 'old');
    } finally {
      await h.close();
      await rm(into, { recursive: true, force: true });
    }
  });
});

describe('manifests', () => {
  it('a diff turns one tree into the other: removals deepest first, type changes removed then made', () => {
    const base = [
      entry('a', 'dir'),
      entry('a/b', 'dir'),
      entry('a/b/c.txt', 'file', 1),
      entry('x', 'file', 1),
      entry('y', 'dir'),
    ];
    const target = [entry('a', 'dir'), entry('x', 'dir'), entry('y', 'link', 0, 'a'), entry('z', 'file', 2)];
    const d = diffManifests(base, target);
    assert.deepEqual(d.removed, ['a/b/c.txt', 'a/b', 'y', 'x']);
    assert.deepEqual(
      d.changed.map((e) => `${e.type} ${e.path}`),
      ['dir x', 'link y', 'file z'],
    );
  });
});
