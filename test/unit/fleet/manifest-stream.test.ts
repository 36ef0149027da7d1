import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { chmod, mkdir, readFile, readdir, readlink, stat, utimes, writeFile } from 'node:fs/promises';
import { type IncomingMessage, get } from 'node:http';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { frameHeader } from '../../../src/fleet/coordinator/fleet-api.js';
import { type PullOptions, pullSnapshot } from '../../../src/fleet/host/pull.js';
import { PullProgress } from '../../../src/fleet/host/pull-progress.js';
import { pathPrint } from '../../../src/core/path-print.js';
import { receiveManifest } from '../../../src/fleet/host/manifest-receive.js';
import { Pace } from '../../../src/fleet/host/pull-checks.js';
import { PULL_LIMITS } from '../../../src/tree/fleet-limits.js';
import { readCopyIndex } from '../../../src/store/recent-records.js';
import type { ManifestEntry } from '../../../src/tree/manifest.js';
import { tempDirs } from '../../../testkit/store.js';
import { type StubHandler, pathsAsked, stubCoordinator } from '../../../testkit/stub-coordinator.js';
import { flood } from '../../../testkit/flood.js';

// A host reads a manifest answer as it comes, an element at a time, into sorted runs on disk, and
// works out its delta by merging them: whatever the chunks, the order or the layout of the JSON,
// the slot becomes the snapshot, and what is malformed is refused before it is held.
const temp = tempDirs();
after(() => temp.removeAll());
const TIME = 1_700_000_000_000;

const sha = (b: Buffer) => createHash('sha256').update(b).digest();
const fileEntry = (path: string, content: Buffer): ManifestEntry => ({
  path,
  type: 'file',
  mode: 0o644,
  size: content.length,
  mtimeMs: TIME,
  hash: sha(content).toString('hex'),
});
const dirEntry = (path: string): ManifestEntry => ({ path, type: 'dir', mode: 0o755, size: 0, mtimeMs: TIME });

/** Frames for every path asked for. */
const framesOf =
  (contents: Record<string, Buffer>): StubHandler =>
  (_req, res, body) => {
    const paths = pathsAsked(body);
    res.end(
      Buffer.concat(
        paths.map((p) => {
          const c = contents[p] ?? Buffer.alloc(0);
          return Buffer.concat([frameHeader(p, c.length), c, sha(c)]);
        }),
      ),
    );
  };

/** Send `body` a few bytes at a time, a timer between writes: its chunks end anywhere, inside strings and characters. */
const trickled =
  (body: Buffer, piece = 3): StubHandler =>
  (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    let at = 0;
    const next = () => {
      if (res.destroyed) return;
      if (at >= body.length) return void res.end();
      res.write(body.subarray(at, at + piece));
      at += piece;
      setTimeout(next, 1);
    };
    next();
  };

const pull = (at: { url: string; token: string }, into: string, extra: Partial<PullOptions> = {}) =>
  pullSnapshot({
    from: at.url,
    token: at.token,
    snapshot: 's2',
    base: null,
    into,
    durable: false,
    timeoutMs: 5000,
    ...extra,
  });

describe('a manifest answer read as it comes', () => {
  it('cut anywhere, laid out any way, its entries in any order: the slot becomes the snapshot', async () => {
    const into = await temp.make('mirrorswap-stream-');
    // names whose JSON holds escapes, and characters of two, three and four bytes, cut by the chunks
    const contents: Record<string, Buffer> = {
      'quote"d/a "b".txt': Buffer.from('quoted'),
      'été/naïve.css': Buffer.from('body{}'),
      'emoji/😀.txt': Buffer.from('smile'),
      'plain.txt': Buffer.from('plain'),
      'deep/er/est/file.txt': Buffer.from('deepest'),
    };
    const changed: ManifestEntry[] = [
      ...Object.entries(contents).map(([p, c]) => fileEntry(p, c)),
      dirEntry('quote"d'),
      dirEntry('été'),
      dirEntry('emoji'),
      dirEntry('deep'),
      dirEntry('deep/er'),
      dirEntry('deep/er/est'),
      { path: 'link', type: 'link', mode: 0o777, size: 0, mtimeMs: TIME, target: 'plain.txt' } as ManifestEntry,
    ].reverse(); // children before their parents: the host sorts
    // its fields in another order than the coordinator's, whitespace everywhere
    const body = Buffer.from(JSON.stringify({ removed: [], changed, base: null, snapshot: 's2' }, null, 2));
    const c = await stubCoordinator(trickled(body), framesOf(contents));
    try {
      const stats = await pull(c, into);
      assert.equal(stats.files, 5);
      assert.equal(stats.received >= body.length, true);
      for (const [p, content] of Object.entries(contents)) assert.deepEqual(await readFile(join(into, p)), content);
      assert.equal(await readlink(join(into, 'link')), 'plain.txt');
      assert.deepEqual((await readdir(into)).sort(), [
        '.mirrorswap-meta',
        'deep',
        'emoji',
        'link',
        'plain.txt',
        'quote"d',
        'été',
      ]);
    } finally {
      await c.close();
    }
  });

  it('a whole manifest of more entries than one run holds, in no order, is compared with the slot entry by entry', async () => {
    const into = await temp.make('mirrorswap-stream-');
    // the slot holds the snapshot already: 34,000 files, each its own content. The answer names
    // them column by column (d0/f0, d1/f0, ...), 32,768 lines a run: only runs each sorted and
    // merged meet every file of the slot with its own entry; any other pairing would fetch files
    // (their sizes and hashes differ) and remove others
    const changed: ManifestEntry[] = [];
    for (let d = 0; d < 100; d++) await mkdir(join(into, `d${d}`));
    const writes: Promise<void>[] = [];
    for (let f = 0; f < 340; f++)
      for (let d = 0; d < 100; d++) {
        const path = `d${d}/f${f}`;
        const content = Buffer.from(`content of ${path}`);
        changed.push(fileEntry(path, content));
        writes.push(
          writeFile(join(into, path), content, { mode: 0o644 }).then(() =>
            utimes(join(into, path), TIME / 1000, TIME / 1000),
          ),
        );
        if (writes.length >= 256) await Promise.all(writes.splice(0));
      }
    await Promise.all(writes);
    for (let d = 0; d < 100; d++) {
      changed.push(dirEntry(`d${d}`));
      await chmod(join(into, `d${d}`), 0o755);
      await utimes(join(into, `d${d}`), TIME / 1000, TIME / 1000);
    }
    let asked = 0;
    const c = await stubCoordinator(
      (_req, res) => res.end(JSON.stringify({ snapshot: 's2', changed, removed: [] })),
      (req, res, body) => {
        asked += pathsAsked(body).length;
        framesOf({})(req, res, body);
      },
    );
    try {
      const stats = await pull(c, into, { contentIndex: false });
      assert.equal(asked, 0, 'no file was asked for');
      assert.equal(stats.files, 0);
      assert.equal(stats.removed, 0);
      assert.equal(stats.full, true);
      assert.equal((await readdir(join(into, 'd99'))).length, 340);
    } finally {
      await c.close();
    }
  });

  it('a path named twice is refused, however far apart the two are', async () => {
    const into = await temp.make('mirrorswap-stream-');
    const changed: ManifestEntry[] = [dirEntry('twice')];
    for (let i = 0; i < 40_000; i++) changed.push(dirEntry(`d${i}`));
    changed.push(dirEntry('twice'));
    const c = await stubCoordinator((_req, res) => res.end(JSON.stringify({ snapshot: 's2', changed, removed: [] })));
    try {
      await assert.rejects(pull(c, into), /twice twice in one manifest/);
      assert.deepEqual(await readdir(into), ['.mirrorswap-tmp']); // nothing made: refused before the first change
    } finally {
      await c.close();
    }
  });

  it('an element larger than any entry is refused before it is held, and the host stops reading', async () => {
    const into = await temp.make('mirrorswap-stream-');
    let sent = () => 0;
    const c = await stubCoordinator((_req, res) => {
      sent = flood(res, '{"snapshot":"s2","changed":[{"path":"', 0x61);
    });
    try {
      await assert.rejects(pull(c, into), /a manifest entry over the bound of \d+ bytes/);
      assert.ok(sent() < 16 * 1024 * 1024, `the host stopped reading: ${sent()} bytes sent`);
    } finally {
      await c.close();
    }
  });

  for (const [name, body, refusal] of [
    ['cut short', '{"snapshot":"s2","changed":[{"path":"a","type":"dir","mode":493', /cut short/],
    ['more after its end', '{"snapshot":"s2","changed":[],"removed":[]} {}', /followed by more/],
    ['an array given twice', '{"changed":[],"removed":[],"changed":[]}', /another shape/],
    ['a value of the answer given twice', '{"changed":[],"removed":[],"base":null,"base":"s1"}', /another shape/],
    ['a path to remove that is not a string', '{"base":"s1","changed":[],"removed":[1]}', /another shape/],
    ['an entry that is not an object', '{"changed":["a"],"removed":[]}', /another shape/],
    ['a bare value that is no JSON', '{"changed":[],"removed":[],"base":nul}', /not JSON/],
    ['an entry that is no JSON', '{"changed":[{"path":"a",}],"removed":[]}', /not JSON/],
    ['no changed array', '{"removed":[]}', /malformed/],
    ['a trailing comma', '{"changed":[],"removed":[],}', /another shape/],
    ['an array not in an object', '[]', /malformed/],
  ] as const) {
    it(`an answer ${name} is refused`, async () => {
      const into = await temp.make('mirrorswap-stream-');
      const c = await stubCoordinator(trickled(Buffer.from(body), 2));
      try {
        await assert.rejects(pull(c, into, { base: 's1' }), refusal);
      } finally {
        await c.close();
      }
    });
  }
});

describe("a pull's progress, held as prints", () => {
  it('paths of one print are all waited for until each is placed', async () => {
    const progress = new PullProgress();
    // two paths that share a print, as two of a million may
    const print = pathPrint('a');
    progress.begin(Float64Array.of(print, print, pathPrint('b')));
    const early = progress.ready('a', 20);
    progress.placed('a');
    assert.equal(await early, false, 'one of the two paths of the print is still to place');
    const later = progress.ready('a', 1000);
    progress.placed('a');
    assert.equal(await later, true);
    assert.equal(await progress.ready('not-fetched'), true);
    assert.equal(await progress.ready('b', 10), false);
    progress.finish();
    assert.equal(await progress.ready('b', 10), true);
  });
});

/** The files this process holds open under `dir` (Linux: read from /proc; elsewhere none are seen). */
async function openUnder(dir: string): Promise<string[]> {
  const fds = await readdir('/proc/self/fd').catch(() => [] as string[]);
  const open: string[] = [];
  for (const fd of fds) {
    const target = await readlink(`/proc/self/fd/${fd}`).catch(() => '');
    if (target.startsWith(dir)) open.push(target);
  }
  return open;
}

describe('a refused manifest leaves nothing behind', () => {
  it('a path named twice leaves no descriptor open on the delta, nor the delta on disk', async () => {
    const into = await temp.make('mirrorswap-stream-');
    const changed: ManifestEntry[] = [dirEntry('twice'), dirEntry('other'), dirEntry('twice')];
    const c = await stubCoordinator((_req, res) => res.end(JSON.stringify({ snapshot: 's2', changed, removed: [] })));
    try {
      for (let i = 0; i < 3; i++) await assert.rejects(pull(c, into), /twice twice in one manifest/);
      assert.deepEqual(await openUnder(into), [], 'descriptors left open');
      assert.deepEqual(await readdir(join(into, '.mirrorswap-tmp')).catch(() => []), [], 'files left behind');
    } finally {
      await c.close();
    }
  });

  it('an answer refused once read (a delta from another base) leaves none of its runs in the slot', async () => {
    const into = await temp.make('mirrorswap-stream-');
    const changed: ManifestEntry[] = [];
    for (let i = 0; i < 40_000; i++) changed.push(dirEntry(`d${i}`));
    const c = await stubCoordinator((_req, res) =>
      res.end(JSON.stringify({ snapshot: 's2', changed, removed: ['gone'], base: 's0' })),
    );
    try {
      // (a slot without a content index is pulled whole: pull-first-index.test.ts)
      await assert.rejects(
        pull(c, into, { base: 's1', contentIndex: false }),
        /a delta from snapshot "s0" where one from s1/,
      );
      assert.deepEqual(await readdir(join(into, '.mirrorswap-tmp')).catch(() => []), [], 'files left behind');
    } finally {
      await c.close();
    }
  });
});

describe('the runs of a manifest answer', () => {
  it('are bounded by their bytes, not only by their lines: long paths make no run of hundreds of MB', async () => {
    // 4,000 entries of 4,000-byte paths (16 MB of answer): a run of 32,768 lines of such entries
    // would hold 32,768 x 8 KB (the path twice a line), 256 MB, in memory before it is written
    const seg = (i: number, k: number) => `${i}-${k}-`.padEnd(250, 'x');
    const changed: ManifestEntry[] = [];
    for (let i = 0; i < 4000; i++)
      changed.push(
        fileEntry(
          Array.from({ length: 16 }, (_, k) => seg(i, k))
            .join('/')
            .slice(0, 4000),
          Buffer.from(''),
        ),
      );
    const body = Buffer.from(JSON.stringify({ snapshot: 's2', changed, removed: [] }));
    const c = await stubCoordinator((_req, res) => res.end(body));
    const dir = await temp.make('mirrorswap-runs-');
    try {
      const res = await new Promise<IncomingMessage>((resolve, reject) =>
        get(`${c.url}/v1/fleet/manifest`, { headers: { authorization: `Bearer ${c.token}` } }, resolve).on(
          'error',
          reject,
        ),
      );
      const answer = await receiveManifest(res, dir, 's2', null, PULL_LIMITS, new Pace(5000, 1));
      assert.equal(answer.changed, 4000);
      const sizes = await Promise.all(answer.changedRuns.map(async (f) => (await stat(f)).size));
      assert.ok(
        sizes.every((n) => n <= 9 * 1024 * 1024),
        `runs of ${sizes.map((n) => Math.round(n / 2 ** 20)).join(', ')} MiB`,
      );
    } finally {
      await c.close();
    }
  });
});

describe("the content index of a pull's delta", () => {
  it('reads nothing under a path that became a link, however far apart the link and the paths under it are', async () => {
    const into = await temp.make('mirrorswap-stream-');
    await mkdir(join(into, '.mirrorswap-meta')); // a slot indexed already: what changed is derived
    await mkdir(join(into, 'a'));
    await writeFile(join(into, 'a', 'x'), 'inside');
    const outside = await temp.make('mirrorswap-outside-');
    await writeFile(join(outside, 'x'), 'a file outside the slot');
    // the directory a becomes a link out of the slot; between its removal and that of a/x, in the
    // order of their keys, more paths than one derive is given at a time
    const removed = ['a', ...Array.from({ length: 17_000 }, (_, i) => `a-${i}`), 'a/x'];
    const changed = [{ path: 'a', type: 'link', mode: 0o777, size: 0, mtimeMs: TIME, target: outside }];
    const c = await stubCoordinator((_req, res) =>
      res.end(JSON.stringify({ snapshot: 's2', base: 's1', changed, removed })),
    );
    try {
      await pull(c, into, { base: 's1' });
      assert.equal(await readlink(join(into, 'a')), outside);
      const index = await readCopyIndex(into, 'a');
      assert.equal(index?.files.x, undefined, 'a file outside the slot was read into its index');
    } finally {
      await c.close();
    }
  });
});

describe('a durable pull', () => {
  it('removes a directory and what is under it, fsyncing only directories still there', async () => {
    const into = await temp.make('mirrorswap-stream-');
    await mkdir(join(into, 'old', 'deeper'), { recursive: true });
    await writeFile(join(into, 'old', 'deeper', 'x'), 'x');
    await writeFile(join(into, 'old', 'y'), 'y');
    const content = Buffer.from('kept');
    const changed = [fileEntry('new.txt', content)];
    const c = await stubCoordinator(
      (_req, res) => res.end(JSON.stringify({ snapshot: 's2', changed, removed: [] })),
      framesOf({ 'new.txt': content }),
    );
    try {
      const stats = await pull(c, into, { durable: true, contentIndex: false });
      assert.equal(stats.files, 1);
      assert.deepEqual((await readdir(into)).sort(), ['new.txt']);
    } finally {
      await c.close();
    }
  });
});
