import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { mirrorStatic } from '../../../middleware/static/mirror-static.js';
import { lstatOrNull } from '../../../src/core/lstat-or-null.js';
import {
  type FileRecord,
  contentHash,
  directoryIndexPath,
  readDirectoryIndex,
  strongEtag,
  writeDirectoryIndexSync,
} from '../../../src/store/content-index.js';
import {
  RECENT_RECORDS_MAX,
  parseRecentRecords,
  readCopyIndex,
  recentRecordsPath,
  withRecent,
} from '../../../src/store/recent-records.js';
import { deriveUnitSync } from '../../../src/tree/derive-variants.js';
import { TREE_DEFAULTS } from '../../../src/tree/tree-defaults.js';
import { TreeCopier } from '../../../src/tree/tree-copy.js';
import { memoryLogger } from '../../../testkit/logger.js';
import { listen, rawGet } from '../../../testkit/server.js';
import { tempFilesIn, tempStore } from '../../../testkit/store.js';
import { checkCopyIndex, compressibleText as text, writeVariantsFor } from '../../../testkit/variants.js';

const settings = TREE_DEFAULTS.variantSettings;
const HASH = 'A'.repeat(43);

/** What the copy's recent records file holds, parsed; null when there is none. */
async function recentOf(slot: string): Promise<Record<string, FileRecord | null> | null> {
  const text = await readFile(recentRecordsPath(slot), 'utf8').catch(() => null);
  return text === null ? null : (parseRecentRecords(text) as Record<string, FileRecord | null>);
}

describe('recent records: the format', () => {
  const record = { ino: 1, size: 2, mtimeMs: 3, sha256: HASH };

  it('keeps well-formed entries, makes a malformed record a tombstone, and leaves out each hostile path', () => {
    const files = {
      'a/b.js': record,
      'gone.js': null,
      '../up.js': record,
      '/abs.js': record,
      'a//b.js': record,
      'a/./b.js': record,
      'a/': record,
      '': record,
      '.mirrorswap-meta/x.json': record,
      'bad.js': { ...record, sha256: 'short' },
      'neg.js': { ...record, ino: -1 },
      'str.js': 'not a record',
      'arr.js': [],
      'line\nbreak.js': record,
    };
    // a key of `__proto__` as JSON may hold one (an object literal would set the prototype instead)
    const json = JSON.stringify({ v: 1, files }).replace(
      '"files":{',
      `"files":{"__proto__":${JSON.stringify(record)},`,
    );
    const parsed = parseRecentRecords(json);
    assert.ok(parsed);
    assert.deepEqual(Object.keys(parsed).sort(), [
      '__proto__',
      'a/b.js',
      'arr.js',
      'bad.js',
      'gone.js',
      'line\nbreak.js',
      'neg.js',
      'str.js',
    ]);
    assert.equal(parsed['gone.js'], null);
    // a malformed record of a path names the path still: none (a tombstone), never its index's record
    for (const p of ['bad.js', 'neg.js', 'str.js', 'arr.js']) assert.equal(parsed[p], null, p);
    assert.equal(Object.getPrototypeOf(parsed), null);
  });

  it('a file of another version, torn or not an object is none', () => {
    for (const text of ['{"v":2,"files":{}}', '{"v":1', 'null', '[]', '{"v":1,"files":3}', '']) {
      assert.equal(parseRecentRecords(text), null, text);
    }
  });

  it('a recent entry replaces the index record: a record, or none for null', () => {
    const index = { v: 1 as const, dir: 'd', files: { 'x.js': record, 'y.js': record, 'z.js': record } };
    const newer = { ...record, ino: 9 };
    const read = withRecent(index, 'd', { 'x.js': newer, 'y.js': null, 'w.js': record });
    assert.deepEqual({ ...read?.files }, { 'x.js': newer, 'z.js': record, 'w.js': record });
    assert.equal(withRecent(index, 'd', undefined), index);
    assert.deepEqual({ ...withRecent(null, 'd', { 'x.js': null })?.files }, {});
  });
});

describe('recent records: what a copy writes', () => {
  let root: string;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'mirrorswap-recent-'));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  const setup = async (name: string, files: Record<string, string>) => {
    const master = join(root, name, 'master');
    const slot = join(root, name, 'a');
    for (const d of [master, slot]) await mkdir(d, { recursive: true });
    for (const [rel, body] of Object.entries(files)) {
      await mkdir(join(master, rel, '..'), { recursive: true });
      await writeFile(join(master, rel), body);
    }
    return { master, slot };
  };
  /** A sync as the agent makes one: what it replaces kept aside until after the publish. */
  const sync = async (master: string, slot: string, paths: string[] | null) => {
    const c = new TreeCopier(master, slot, {
      durable: false,
      keepReplacedBytes: 1 << 20,
      variants: { settings, other: null },
    });
    if (paths === null) await c.mirrorAll();
    else await c.copyPaths(paths);
    await c.clearTemp();
    return c;
  };
  const tenDirs = Object.fromEntries(
    Array.from({ length: 10 }, (_, d) =>
      Array.from({ length: 5 }, (_, f) => [`d${d}/f${f}.js`, text(`${d}.${f}`)]),
    ).flat(),
  );

  it('a small sync writes one file of records, no index; readers take its records over the stale ones', async () => {
    const { master, slot } = await setup('small', tenDirs);
    await sync(master, slot, null);
    assert.equal(await recentOf(slot), null, 'a full copy writes indexes, no recent records');
    const indexes = await Promise.all(
      Array.from({ length: 10 }, async (_, d) => (await stat(directoryIndexPath(slot, `d${d}`))).ino),
    );
    const changed = Array.from({ length: 10 }, (_, d) => `d${d}/f0.js`);
    for (const p of changed) await writeFile(join(master, p), text(`${p} v2`));
    const c = await sync(master, slot, changed);
    assert.equal(c.variantStats.indexes, 0, 'no index written');
    for (let d = 0; d < 10; d++) {
      assert.equal((await stat(directoryIndexPath(slot, `d${d}`))).ino, indexes[d], `d${d}'s index untouched`);
    }
    const recent = await recentOf(slot);
    assert.deepEqual(Object.keys(recent ?? {}).sort(), changed.sort());
    for (const p of changed) {
      const [dir, name] = p.split('/') as [string, string];
      // the index alone is stale for the file; through the recent records it is current
      const st = await stat(join(slot, p));
      assert.notEqual((await readDirectoryIndex(slot, dir))?.files[name]?.ino, st.ino);
      const record = (await readCopyIndex(slot, dir))?.files[name];
      assert.equal(record?.ino, st.ino);
      assert.equal(record?.sha256, contentHash(await readFile(join(slot, p))));
    }
    assert.equal(await checkCopyIndex(slot), 100);
    // a file deleted: its record is none, though its directory's index still names it
    await rm(join(master, 'd3/f1.js'));
    await sync(master, slot, ['d3/f1.js']);
    assert.equal((await recentOf(slot))?.['d3/f1.js'], null);
    assert.ok((await readDirectoryIndex(slot, 'd3'))?.files['f1.js']);
    assert.equal((await readCopyIndex(slot, 'd3'))?.files['f1.js'], undefined);
    assert.equal(await lstatOrNull(join(slot, 'd3/f1.js.br')), null);
    assert.deepEqual(await tempFilesIn(slot), []);
  });

  it('a full sync whose compare finds a few changed files is a small sync: it keeps them in the recent records', async () => {
    const { master, slot } = await setup('full-small', tenDirs);
    await sync(master, slot, null);
    await writeFile(join(master, 'd1/f1.js'), text('d1 f1 full'));
    const c = await sync(master, slot, null);
    assert.equal(c.variantStats.indexes, 0);
    assert.deepEqual(Object.keys((await recentOf(slot)) ?? {}), ['d1/f1.js']);
    assert.equal(await checkCopyIndex(slot), 100);
  });

  it('past RECENT_RECORDS_MAX paths, a sync folds them into the indexes and removes the file', async () => {
    const many = Object.fromEntries(
      Array.from({ length: RECENT_RECORDS_MAX + 40 }, (_, i) => [`m${i % 7}/f${i}.js`, text(`m${i}`)]),
    );
    const { master, slot } = await setup('fold', many);
    await sync(master, slot, null);
    const paths = Object.keys(many);
    const first = paths.slice(0, RECENT_RECORDS_MAX - 10);
    for (const p of first) await writeFile(join(master, p), text(`${p} v2`));
    await sync(master, slot, first);
    assert.equal(Object.keys((await recentOf(slot)) ?? {}).length, first.length);
    const rest = paths.slice(RECENT_RECORDS_MAX - 10);
    for (const p of rest) await writeFile(join(master, p), text(`${p} v2`));
    const c = await sync(master, slot, rest);
    assert.equal(await recentOf(slot), null, 'folded and removed');
    assert.equal(c.variantStats.indexes, 7, 'each directory written once');
    // every record is in its directory's own index now, and current
    for (const p of paths) {
      const cut = p.indexOf('/');
      const record = (await readDirectoryIndex(slot, p.slice(0, cut)))?.files[p.slice(cut + 1)];
      assert.equal(record?.ino, (await stat(join(slot, p))).ino, p);
      assert.equal(record?.sha256, contentHash(Buffer.from(text(`${p} v2`))), p);
    }
    assert.equal(c.variantStats.read, 0, 'folded as they were: no file read again');
    assert.equal(await checkCopyIndex(slot), 2 * paths.length);
  });

  it('a copy that makes a directory voids the recent records: each is derived again from its file', async () => {
    const { master, slot } = await setup('void', tenDirs);
    await sync(master, slot, null);
    await writeFile(join(master, 'd1/f1.js'), text('d1 f1 v2'));
    await sync(master, slot, ['d1/f1.js']);
    // a record that matches the file's stamp but not its bytes: what an inode number taken again
    // by a new file of the same size and time would leave (forged here, to be certain of it)
    const st = await stat(join(slot, 'd1/f1.js'));
    const forged = { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs, sha256: HASH };
    await writeFile(recentRecordsPath(slot), JSON.stringify({ v: 1, files: { 'd1/f1.js': forged } }));
    await mkdir(join(master, 'new'));
    await writeFile(join(master, 'new/x.js'), text('new x'));
    await sync(master, slot, ['new/x.js']); // its parent made by the copy
    assert.equal(await recentOf(slot), null, 'folded and removed');
    const record = (await readCopyIndex(slot, 'd1'))?.files['f1.js'];
    assert.equal(record?.sha256, contentHash(Buffer.from(text('d1 f1 v2'))), 'derived again, not taken');
    assert.equal(await checkCopyIndex(slot), 102);
  });

  it('a small sync of many files in one directory shares them among units: every file and sibling recorded once', async () => {
    const { master, slot } = await setup('one-dir', tenDirs);
    await sync(master, slot, null);
    const names = Array.from({ length: 5 }, (_, f) => `d7/f${f}.js`);
    for (const p of names) await writeFile(join(master, p), text(`${p} v2`));
    // master's own sibling of one, a variant name of a variant, and new files beside them
    await writeFile(join(master, 'd7/f1.js.gz'), 'master keeps its own');
    await writeFile(join(master, 'd7/f2.js.gz.br'), 'odd name, master’s');
    const more = Array.from({ length: 9 }, (_, i) => `d7/n${i}.css`);
    for (const p of more) await writeFile(join(master, p), text(`${p} new`));
    const changed = [...names, 'd7/f1.js.gz', 'd7/f2.js.gz.br', ...more];
    const c = await sync(master, slot, changed);
    assert.equal(c.variantStats.indexes, 0);
    const recent = await recentOf(slot);
    for (const p of [...names, ...more]) {
      const record = recent?.[p];
      assert.equal(record?.sha256, contentHash(await readFile(join(master, p))), p);
    }
    assert.equal(recent?.['d7/f1.js']?.variants?.gzip?.made, undefined, 'master’s own .gz is no variant of f1.js');
    assert.equal(await readFile(join(slot, 'd7/f1.js.gz'), 'utf8'), 'master keeps its own');
    assert.equal(await readFile(join(slot, 'd7/f2.js.gz.br'), 'utf8'), 'odd name, master’s');
    assert.equal(await checkCopyIndex(slot), 100 - 1 + 2 * more.length);
  });

  it('a sync writes nothing of its derive to the process’s stderr (the agent’s log is its own)', async () => {
    const { master, slot } = await setup('quiet', tenDirs);
    await sync(master, slot, null);
    await writeFile(join(master, 'd1/f1.js'), text('d1 f1 quiet'));
    const written: string[] = [];
    const write = process.stderr.write;
    process.stderr.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
      written.push(String(chunk));
      return (write as (...a: unknown[]) => boolean).call(process.stderr, chunk, ...rest);
    }) as typeof process.stderr.write;
    try {
      await sync(master, slot, ['d1/f1.js']);
    } finally {
      process.stderr.write = write;
    }
    assert.deepEqual(written, []);
  });

  it('a variant name named beside a directory of its base goes not into it: a unit of its own derives what is named there', async () => {
    const { master, slot } = await setup('base-dir', tenDirs);
    await writeFile(join(master, 'd2.gz'), 'master’s own, no gzip of anything');
    await sync(master, slot, null);
    // `d2.gz` names the directory `d2` as its original; `d2/f0.js` is named too, and derived by its unit
    await writeFile(join(master, 'd2.gz'), 'master’s own, changed');
    const named = Array.from({ length: 4 }, (_, f) => `d2/f${f}.js`);
    for (const p of named) await writeFile(join(master, p), text(`${p} v2`, 1 << 20));
    const c = await sync(master, slot, ['d2.gz', ...named]);
    assert.equal(c.variantStats.compressed, 2 * named.length, 'each named file compressed once, by one unit');
    for (const p of named) {
      const record = (await readCopyIndex(slot, 'd2'))?.files[p.slice(3)];
      for (const suffix of ['.br', '.gz'] as const) {
        const variant = record?.variants?.[suffix === '.br' ? 'br' : 'gzip'];
        assert.equal(variant?.ino, (await stat(join(slot, p + suffix))).ino, `${p}${suffix}: the one on disk`);
      }
    }
    assert.equal(await checkCopyIndex(slot), 100);
  });

  it('a sync without a directory made takes the recent records as they are (they are the copy’s own)', async () => {
    const { master, slot } = await setup('trusted', tenDirs);
    await sync(master, slot, null);
    await writeFile(join(master, 'd1/f1.js'), text('d1 f1 v2'));
    await sync(master, slot, ['d1/f1.js']);
    await writeFile(join(master, 'd2/f2.js'), text('d2 f2 v2'));
    const c = await sync(master, slot, ['d2/f2.js']);
    assert.equal(c.variantStats.read, 0);
    assert.deepEqual(Object.keys((await recentOf(slot)) ?? {}).sort(), ['d1/f1.js', 'd2/f2.js']);
    assert.equal(await checkCopyIndex(slot), 100);
  });

  it('records under a directory that became a file go with it', async () => {
    const { master, slot } = await setup('purge', tenDirs);
    await sync(master, slot, null);
    await writeFile(join(master, 'd4/f0.js'), text('d4 v2'));
    await sync(master, slot, ['d4/f0.js']);
    assert.ok((await recentOf(slot))?.['d4/f0.js']);
    await rm(join(master, 'd4'), { recursive: true });
    await writeFile(join(master, 'd4'), text('d4 is a file'));
    await sync(master, slot, ['d4']);
    const recent = await recentOf(slot);
    assert.deepEqual(Object.keys(recent ?? {}).sort(), ['d4']);
    assert.equal(recent?.d4?.sha256, contentHash(Buffer.from(text('d4 is a file'))));
    assert.equal(await checkCopyIndex(slot), 90); // the file d4 has no variants (no type to compress)
  });

  it('a record whose stamp a file just written took is not kept: the bytes the copy wrote decide', async () => {
    const { slot } = await setup('stamp-taken', {});
    await mkdir(join(slot, '.mirrorswap-tmp')); // the index is written through it
    await writeFile(join(slot, 'x.js'), text('written'));
    const st = await stat(join(slot, 'x.js'));
    const sha256 = contentHash(Buffer.from(text('written')));
    // an index record of the same inode number, size and time, of other bytes: what an inode taken
    // again by a new file of the same size and time leaves
    writeDirectoryIndexSync(slot, '', { 'x.js': { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs, sha256: HASH } });
    const hint = { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs, sha256 };
    for (const collect of [false, true]) {
      const result = deriveUnitSync(
        { slot, other: null, source: null, settings, collect },
        { dir: '', names: ['x.js'], hashes: { 'x.js': hint } },
      );
      const record = collect ? result.records?.['x.js'] : (await readDirectoryIndex(slot, ''))?.files['x.js'];
      assert.equal(record?.sha256, sha256, collect ? 'collected' : 'written');
    }
  });

  it('torn recent records leave readers no record, and the next sync derives the whole copy from no index', async () => {
    const { master, slot } = await setup('torn', tenDirs);
    await sync(master, slot, null);
    await writeFile(join(master, 'd5/f0.js'), text('d5 v2'));
    await sync(master, slot, ['d5/f0.js']);
    const whole = await readFile(recentRecordsPath(slot), 'utf8');
    await writeFile(recentRecordsPath(slot), whole.slice(0, whole.length >> 1));
    // a reader knows nothing of the path (the index's record is of the file before)
    const st = await stat(join(slot, 'd5/f0.js'));
    assert.notEqual((await readCopyIndex(slot, 'd5'))?.files['f0.js']?.ino, st.ino);
    await writeFile(join(master, 'd6/f0.js'), text('d6 v2'));
    const c = await sync(master, slot, ['d6/f0.js']);
    assert.equal(await recentOf(slot), null, 'removed: the whole copy is in its indexes');
    // from no index: any record the torn file held a tombstone over may stamp-match a new file
    assert.equal(c.variantStats.hashed, 50, 'every file hashed again');
    assert.equal((await readDirectoryIndex(slot, 'd5'))?.files['f0.js']?.ino, st.ino);
    assert.equal(await checkCopyIndex(slot), 100);
  });
});

describe('recent records: what a server sends', () => {
  it('a recent record is the one served; a recent null hides the index’s; torn ones leave none', async () => {
    const store = await tempStore();
    const servers: { close(): Promise<void> }[] = [];
    try {
      const js = text('served', 20_000);
      await store.fill('a', { 'r/app.js': js, 'r/hidden.js': js, 'r/plain.js': js });
      writeVariantsFor(store.slots.a, ['r/app.js', 'r/hidden.js', 'r/plain.js']);
      await store.publish(1, 'a');
      const index = await readDirectoryIndex(store.slots.a, 'r');
      const app = index?.files['app.js'] as FileRecord;
      // the recent record of app.js says other bytes (its variants gone): what a server sends is what it says
      const other = contentHash(Buffer.from('other'));
      const files = {
        'r/app.js': { ino: app.ino, size: app.size, mtimeMs: app.mtimeMs, sha256: other },
        'r/hidden.js': null,
      };
      await writeFile(recentRecordsPath(store.slots.a), JSON.stringify({ v: 1, files }));
      const serve = async () => {
        const mw = mirrorStatic({ store: store.root, logger: memoryLogger() });
        await mw.ready;
        const running = await listen((req: IncomingMessage, res: ServerResponse) =>
          mw(req, res, () => {
            res.statusCode = 404;
            res.end();
          }),
        );
        const server = {
          port: running.port,
          close: async () => {
            await running.close();
            await mw.close();
          },
        };
        servers.push(server);
        return server;
      };
      const s = await serve();
      const get = (port: number, path: string) => rawGet(port, path, { 'accept-encoding': 'br, gzip' });
      const appRes = await get(s.port, '/r/app.js');
      assert.equal(appRes.headers.etag, strongEtag(other));
      assert.equal(appRes.headers['content-encoding'], undefined, 'the recent record names no variant');
      const hidden = await get(s.port, '/r/hidden.js');
      assert.ok(String(hidden.headers.etag).startsWith('W/'), 'no record: the weak tag');
      assert.equal(hidden.headers['content-encoding'], undefined, 'no record: no variant');
      const plain = await get(s.port, '/r/plain.js');
      const variantTag = (name: string) => strongEtag(index?.files[name]?.variants?.br?.sha256 ?? '');
      assert.equal(plain.headers.etag, variantTag('plain.js'), 'the index still speaks');
      assert.equal(plain.headers['content-encoding'], 'br');
      // torn: a new epoch's server knows no record of the copy (an index record the torn file held a
      // tombstone over may stamp-match a new file); the agent's next sync derives the copy whole
      await writeFile(recentRecordsPath(store.slots.a), '{"v":1,"files":{"r/app.js"');
      await store.publish(2, 'a');
      const t = await serve();
      for (const path of ['/r/hidden.js', '/r/plain.js']) {
        const torn = await get(t.port, path);
        assert.ok(String(torn.headers.etag).startsWith('W/'), `${path}: the weak tag`);
        assert.equal(torn.headers['content-encoding'], undefined, `${path}: no variant`);
      }
    } finally {
      for (const s of servers) await s.close();
      await store.dispose();
    }
  });
});
