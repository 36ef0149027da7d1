import assert from 'node:assert/strict';
import { chmod, link, lstat, mkdir, mkdtemp, readFile, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { brotliCompressSync, brotliDecompressSync, gunzipSync, gzipSync } from 'node:zlib';
import { contentHash } from '../../../src/store/content-index.js';
import { readCopyIndex } from '../../../src/store/recent-records.js';
import { META_DIR_NAME, TEMP_DIR_NAME } from '../../../src/store/store-layout.js';
import { compressionOptions } from '../../../src/tree/compressible.js';
import { deriveUnitSync } from '../../../src/tree/derive-variants.js';
import { TREE_DEFAULTS } from '../../../src/tree/tree-defaults.js';
import { TreeCopier } from '../../../src/tree/tree-copy.js';
import {
  type CacheEntry,
  type CacheView,
  cacheEntryName,
  cachedVariantSync,
  pruneCache,
  putCacheEntry,
} from '../../../src/tree/variant-cache.js';
import { compressibleText as text } from '../../../testkit/variants.js';

const settings = TREE_DEFAULTS.variantSettings;

/** The entries a precompress would make for `bytes` (as master's file `like` has them), into `dir`. */
async function precompressInto(
  dir: string,
  bytes: Buffer,
  like: { mode: number; atimeMs: number; mtimeMs: number },
): Promise<Record<string, CacheEntry>> {
  const entries: Record<string, CacheEntry> = {};
  const sha256 = contentHash(bytes);
  for (const encoding of settings.encodings) {
    const options = compressionOptions(encoding, bytes.length, settings);
    const out = encoding === 'br' ? brotliCompressSync(bytes, options) : gzipSync(bytes, options);
    const name = cacheEntryName(sha256, encoding, settings);
    await putCacheEntry(dir, name, out, like);
    entries[name] = { size: out.length, sha256: contentHash(out), mtimeMs: Math.floor(like.mtimeMs) };
  }
  return entries;
}

describe('the variant cache', () => {
  let root: string;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'mirrorswap-cache-'));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  const setup = async (name: string) => {
    const dirs = { master: join(root, name, 'master'), a: join(root, name, 'a'), cache: join(root, name, 'cache') };
    for (const d of Object.values(dirs)) await mkdir(d, { recursive: true });
    return dirs;
  };

  it('an entry is whole under its name, with the mode and time given, and no temp file is left', async () => {
    const { cache } = await setup('put');
    const like = { mode: 0o100640, atimeMs: Date.UTC(2020, 0, 1), mtimeMs: Date.UTC(2021, 5, 1) + 123.5 };
    const entries = await precompressInto(cache, Buffer.from(text('put')), like);
    assert.deepEqual((await readdir(cache)).sort(), Object.keys(entries).sort());
    for (const [name, entry] of Object.entries(entries)) {
      const st = await stat(join(cache, name));
      assert.equal(st.mode & 0o777, 0o640);
      assert.equal(Math.floor(st.mtimeMs), Math.floor(like.mtimeMs));
      assert.equal(st.size, entry.size);
      const bytes = await readFile(join(cache, name));
      assert.equal(contentHash(bytes), entry.sha256);
      const decoded = name.includes('.br') ? brotliDecompressSync(bytes) : gunzipSync(bytes);
      assert.equal(decoded.toString(), text('put'));
    }
    // names carry the level: another quality is another entry
    const sha = contentHash(Buffer.from(text('put')));
    assert.notEqual(
      cacheEntryName(sha, 'br', settings),
      cacheEntryName(sha, 'br', { ...settings, brotliQuality: settings.brotliQuality + 1 }),
    );
  });

  it('an entry is taken only when the view knows it and the file under its name has its size', async () => {
    const { cache } = await setup('lookup');
    const bytes = Buffer.from(text('lookup'));
    const entries = await precompressInto(cache, bytes, { mode: 0o644, atimeMs: 0, mtimeMs: 0 });
    const sha = contentHash(bytes);
    const view: CacheView = { dir: cache, entries };
    assert.ok(cachedVariantSync(view, sha, 'br', settings));
    // a file the view does not know (an agent before a restart made it): not taken
    assert.equal(cachedVariantSync({ dir: cache, entries: {} }, sha, 'br', settings), null);
    // another content's name: nothing
    assert.equal(cachedVariantSync(view, contentHash(Buffer.from('other')), 'br', settings), null);
    // the file swapped for one of another size: not taken
    const name = cacheEntryName(sha, 'gzip', settings);
    await writeFile(join(cache, name), 'not the variant');
    assert.equal(cachedVariantSync(view, sha, 'gzip', settings), null);
    // an inherited name is never an entry
    assert.equal(cachedVariantSync({ dir: cache, entries: {} }, 'constructor', 'br', settings), null);
  });

  it('a prune removes entries two copies took, old ones, unknown ones and stale temp files, and keeps the rest', async () => {
    const { cache, a } = await setup('prune');
    const like = { mode: 0o644, atimeMs: 0, mtimeMs: 0 };
    const taken = await precompressInto(cache, Buffer.from(text('taken')), like);
    const once = await precompressInto(cache, Buffer.from(text('once')), like);
    const fresh = await precompressInto(cache, Buffer.from(text('fresh')), like);
    await precompressInto(cache, Buffer.from(text('unknown')), like);
    for (const name of Object.keys(taken)) {
      await link(join(cache, name), join(a, `1-${name}`));
      await link(join(cache, name), join(a, `2-${name}`));
    }
    for (const name of Object.keys(once)) await link(join(cache, name), join(a, `1-${name}`));
    await writeFile(join(cache, '.tmp-0123456789abcdef'), 'a write cut short');
    const known = new Set([...Object.keys(taken), ...Object.keys(once), ...Object.keys(fresh)]);
    const now = Date.now();
    let left = await pruneCache(cache, 3_600_000, (n) => known.has(n), now);
    assert.deepEqual([...left].sort(), [...Object.keys(once), ...Object.keys(fresh)].sort());
    assert.ok((await readdir(cache)).includes('.tmp-0123456789abcdef'), 'a young temp file may be a write under way');
    // the copies' links are theirs: the bytes they hold stay
    for (const name of Object.keys(taken)) assert.ok((await lstat(join(a, `1-${name}`))).isFile());
    // later: everything is past its age
    left = await pruneCache(cache, 3_600_000, (n) => known.has(n), now + 3_700_000);
    assert.deepEqual([...left], []);
    assert.deepEqual(await readdir(cache), []);
    // a missing cache is an empty one
    assert.deepEqual([...(await pruneCache(join(root, 'none'), 1000, () => true))], []);
  });

  it("a copy links its variants from the cache, by the staged file's hash, without compressing", async () => {
    const { master, a, cache } = await setup('derive');
    await writeFile(join(master, 'app.js'), text('app'));
    const st = await stat(join(master, 'app.js'));
    const entries = await precompressInto(cache, await readFile(join(master, 'app.js')), st);
    const copy = new TreeCopier(master, a, {
      durable: true,
      variants: { settings, other: null, cache: { dir: cache, entries } },
    });
    await copy.copyPaths(['app.js']);
    assert.equal(copy.variantStats.compressed, 0);
    assert.equal(copy.variantStats.cached, 2);
    const record = (await readCopyIndex(a, ''))?.files['app.js'];
    assert.equal(record?.sha256, contentHash(await readFile(join(a, 'app.js'))));
    for (const [encoding, suffix] of [
      ['br', '.br'],
      ['gzip', '.gz'],
    ] as const) {
      const name = cacheEntryName(record?.sha256 ?? '', encoding, settings);
      const vst = await stat(join(a, `app.js${suffix}`));
      assert.equal(vst.ino, (await stat(join(cache, name))).ino, `app.js${suffix} is the cache's entry, linked`);
      assert.equal(record?.variants?.[encoding]?.ino, vst.ino);
      assert.equal(record?.variants?.[encoding]?.sha256, entries[name]?.sha256);
      const bytes = await readFile(join(a, `app.js${suffix}`));
      const decoded = suffix === '.br' ? brotliDecompressSync(bytes) : gunzipSync(bytes);
      assert.equal(decoded.toString(), text('app'));
    }
  });

  it('an entry made from other bytes (the file changed after it was compressed) is never taken', async () => {
    const { master, a, cache } = await setup('changed');
    await writeFile(join(master, 'app.js'), text('first'));
    const st = await stat(join(master, 'app.js'));
    const entries = await precompressInto(cache, await readFile(join(master, 'app.js')), st);
    // the same size, other bytes, the same time: only the hash tells them apart
    const second = text('first').replace('first', 'other');
    assert.equal(second.length, text('first').length);
    await writeFile(join(master, 'app.js'), second);
    await utimes(join(master, 'app.js'), st.atime, st.mtime);
    const copy = new TreeCopier(master, a, {
      durable: false,
      variants: { settings, other: null, cache: { dir: cache, entries } },
    });
    await copy.copyPaths(['app.js']);
    assert.equal(copy.variantStats.cached, 0);
    assert.equal(copy.variantStats.compressed, 2);
    assert.equal(brotliDecompressSync(await readFile(join(a, 'app.js.br'))).toString(), second);
    assert.equal(gunzipSync(await readFile(join(a, 'app.js.gz'))).toString(), second);
  });

  it("an entry with another time than the file is copied and given the file's time, never linked", async () => {
    const { master, a, cache } = await setup('time');
    await writeFile(join(master, 'app.js'), text('time'));
    await chmod(join(master, 'app.js'), 0o444);
    const bytes = await readFile(join(master, 'app.js'));
    const entries = await precompressInto(cache, bytes, { mode: 0o644, atimeMs: 0, mtimeMs: Date.UTC(2001, 0, 1) });
    const copy = new TreeCopier(master, a, {
      durable: false,
      variants: { settings, other: null, cache: { dir: cache, entries } },
    });
    await copy.copyPaths(['app.js']);
    assert.equal(copy.variantStats.cached, 2);
    const fileTime = Math.floor((await stat(join(a, 'app.js'))).mtimeMs);
    for (const suffix of ['.br', '.gz']) {
      const vst = await stat(join(a, `app.js${suffix}`));
      assert.equal(Math.floor(vst.mtimeMs), fileTime);
      assert.equal(vst.nlink, 1, 'a copy of its own');
    }
    // the cache's entries were not changed
    for (const name of Object.keys(entries))
      assert.equal(Math.floor((await stat(join(cache, name))).mtimeMs), Date.UTC(2001, 0, 1));
  });

  it('a staged hash is used only for the very file it was taken of; another is read and hashed', async () => {
    const { a } = await setup('hints');
    await mkdir(join(a, TEMP_DIR_NAME)); // as a copy makes it, for the index's temp file
    await writeFile(join(a, 'x.js'), text('real'));
    const st = await stat(join(a, 'x.js'));
    const wrong = contentHash(Buffer.from('not these bytes'));
    const context = { slot: a, other: null, source: null, settings };
    // a stamp of another inode: not trusted
    deriveUnitSync(context, {
      dir: '',
      names: ['x.js'],
      hashes: { 'x.js': { ino: st.ino + 1, size: st.size, mtimeMs: st.mtimeMs, sha256: wrong } },
    });
    assert.equal((await readCopyIndex(a, ''))?.files['x.js']?.sha256, contentHash(await readFile(join(a, 'x.js'))));
    // its own stamp: its hash is taken as the copy computed it
    await rm(join(a, META_DIR_NAME), { recursive: true });
    const right = contentHash(await readFile(join(a, 'x.js')));
    const result = deriveUnitSync(context, {
      dir: '',
      names: ['x.js'],
      hashes: { 'x.js': { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs, sha256: right } },
    });
    assert.equal(result.stats.hashed, 1);
    assert.equal((await readCopyIndex(a, ''))?.files['x.js']?.sha256, right);
  });
});
