import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import {
  chmod,
  lstat,
  mkdir,
  mkdtemp,
  readFile,
  readdir,
  rename,
  rm,
  stat,
  symlink,
  truncate,
  unlink,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { brotliCompressSync, brotliDecompressSync, gunzipSync, gzipSync } from 'node:zlib';
import { lstatOrNull } from '../../../src/core/lstat-or-null.js';
import {
  contentHash,
  directoryIndexPath,
  stampMatches,
  variantMatches,
  VARIANT_SUFFIX,
  type VariantEncoding,
} from '../../../src/store/content-index.js';
import { readCopyIndex, recentRecordsPath } from '../../../src/store/recent-records.js';
import { VARIANT_MAX_BYTES, type VariantSettings } from '../../../src/tree/compressible.js';
import { compareTrees } from '../../../src/tree/compare-trees.js';
import { TREE_DEFAULTS } from '../../../src/tree/tree-defaults.js';
import { TreeCopier } from '../../../src/tree/tree-copy.js';
import { tempFilesIn } from '../../../testkit/store.js';

const settings = TREE_DEFAULTS.variantSettings;

/** Text that compresses well, different for each seed. */
function text(seed: string, bytes = 8192): string {
  let out = '';
  for (let i = 0; out.length < bytes; i++) out += `function ${seed}_${i}(a, b) { return a + b * ${i}; }\n`;
  return out.slice(0, bytes);
}

/** Every variant in `root` decodes to exactly the file beside it; returns how many there are. */
async function checkVariants(root: string, dir = ''): Promise<number> {
  let count = 0;
  for (const e of await readdir(join(root, dir), { withFileTypes: true })) {
    const rel = dir === '' ? e.name : `${dir}/${e.name}`;
    if (dir === '' && e.name.startsWith('.mirrorswap-')) continue;
    if (e.isDirectory()) count += await checkVariants(root, rel);
    else if (e.isFile() && (e.name.endsWith('.br') || e.name.endsWith('.gz'))) {
      const base = rel.slice(0, -3);
      const original = await readFile(join(root, base)).catch(() => null);
      if (original === null) continue; // a file of its own
      const bytes = await readFile(join(root, rel));
      const decoded = e.name.endsWith('.br') ? brotliDecompressSync(bytes) : gunzipSync(bytes);
      assert.ok(decoded.equals(original), `${rel} decodes to ${base}`);
      count++;
    }
  }
  return count;
}

/** The index of `rel`'s directory agrees with the files: stamps, hashes and variants. */
async function checkRecord(root: string, rel: string): Promise<void> {
  const cut = rel.lastIndexOf('/');
  const dir = cut === -1 ? '' : rel.slice(0, cut);
  const name = rel.slice(cut + 1);
  const index = await readCopyIndex(root, dir);
  const record = index?.files[name];
  assert.ok(record, `a record of ${rel}`);
  const st = await stat(join(root, rel));
  assert.ok(stampMatches(record, st), `the record of ${rel} matches it`);
  assert.equal(record.sha256, contentHash(await readFile(join(root, rel))));
  for (const [encoding, variant] of Object.entries(record.variants ?? {})) {
    const vpath = join(root, rel + VARIANT_SUFFIX[encoding as VariantEncoding]);
    assert.ok(variantMatches(variant, await stat(vpath)), `${rel}'s ${encoding} record matches its file`);
    assert.equal(variant.sha256, contentHash(await readFile(vpath)));
  }
}

describe('variants made at copy', () => {
  let root: string;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'mirrorswap-variants-'));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  const setup = async (name: string) => {
    const master = join(root, name, 'master');
    const a = join(root, name, 'a');
    const b = join(root, name, 'b');
    for (const d of [master, a, b]) await mkdir(d, { recursive: true });
    return { master, a, b };
  };
  const copier = (
    master: string,
    slot: string,
    other: string | null,
    over: Partial<VariantSettings> = {},
    cutShort = false,
  ) =>
    new TreeCopier(master, slot, { durable: false, variants: { settings: { ...settings, ...over }, other }, cutShort });

  it('makes variants for compressible files above the floor, not for png or tiny files; every one decodes', async () => {
    const { master, a } = await setup('basic');
    await mkdir(join(master, 'js'));
    await writeFile(join(master, 'js/app.js'), text('app'));
    await writeFile(join(master, 'index.html'), text('html'));
    await writeFile(join(master, 'tiny.css'), 'a{}');
    await writeFile(join(master, 'logo.png'), text('png'));
    const c = copier(master, a, null);
    await c.mirrorAll();
    for (const p of ['js/app.js.br', 'js/app.js.gz', 'index.html.br', 'index.html.gz'])
      assert.ok(await lstatOrNull(join(a, p)), p);
    for (const p of ['tiny.css.br', 'tiny.css.gz', 'logo.png.br', 'logo.png.gz'])
      assert.equal(await lstatOrNull(join(a, p)), null, p);
    assert.equal(await checkVariants(a), 4);
    for (const p of ['js/app.js', 'index.html', 'tiny.css', 'logo.png']) await checkRecord(a, p);
    assert.equal(c.variantStats.compressed, 4);
    // the variant has its original's time
    const [orig, br] = [await stat(join(a, 'js/app.js')), await stat(join(a, 'js/app.js.br'))];
    assert.equal(Math.floor(br.mtimeMs), Math.floor(orig.mtimeMs));
    // master untouched; a compare that knows of variants finds nothing, one that does not finds them extra
    assert.deepEqual((await readdir(master)).sort(), ['index.html', 'js', 'logo.png', 'tiny.css']);
    assert.deepEqual(await compareTrees(master, a, { variants: true }), []);
    assert.equal((await compareTrees(master, a)).filter((d) => d.kind === 'extra').length, 4);
  });

  it('follows a change, a deletion, a shrink and a file that stops saving; reuses the other copy', async () => {
    const { master, a, b } = await setup('changes');
    for (let i = 0; i < 10; i++) await writeFile(join(master, `f${i}.js`), text(`f${i}`));
    await copier(master, a, b).mirrorAll();
    // a second full copy compresses nothing: every variant comes from the other copy
    const second = copier(master, b, a);
    await second.mirrorAll();
    assert.equal(second.variantStats.compressed, 0);
    assert.equal(second.variantStats.reused, 20);
    assert.equal(await checkVariants(b), 20);
    for (let i = 0; i < 10; i++) await checkRecord(b, `f${i}.js`);
    // changes, as a journal sync of slot a sees them
    await writeFile(join(master, 'f0.js'), text('changed'));
    await unlink(join(master, 'f1.js'));
    await writeFile(join(master, 'f2.js'), 'tiny');
    // random bytes: no coding saves 10%
    const random = Buffer.alloc(4096);
    for (let i = 0; i < random.length; i++) random[i] = (i * 2654435761) >>> 24;
    await writeFile(join(master, 'f3.js'), random);
    const sync = copier(master, a, b);
    await sync.copyPaths(['f0.js', 'f1.js', 'f2.js', 'f3.js']);
    assert.equal(brotliDecompressSync(await readFile(join(a, 'f0.js.br'))).toString(), text('changed'));
    await checkRecord(a, 'f0.js');
    for (const p of ['f1.js.br', 'f1.js.gz', 'f2.js.br', 'f2.js.gz'])
      assert.equal(await lstatOrNull(join(a, p)), null, p);
    const index = await readCopyIndex(a, '');
    assert.equal(index?.files['f1.js'], undefined, 'the record of a deleted file goes');
    assert.equal(index?.files['f2.js']?.variants, undefined);
    assert.equal(await checkVariants(a), await countVariantFiles(a));
    // a 10-file sync compresses 10 files (two codings each), and nothing else
    for (let i = 0; i < 10; i++) await writeFile(join(master, `g${i}.js`), text(`g${i}`));
    const ten = copier(master, a, b);
    await ten.copyPaths(Array.from({ length: 10 }, (_, i) => `g${i}.js`));
    assert.equal(ten.variantStats.compressed, 20);
    assert.equal(ten.variantStats.hashed, 10);
  });

  it('a full copy derives each directory as it clones it, from the bytes it copied: no file is read twice', async () => {
    const { master, a, b } = await setup('fused');
    for (let d = 0; d < 4; d++) {
      await mkdir(join(master, `d${d}/sub`), { recursive: true });
      for (let i = 0; i < 5; i++) {
        await writeFile(join(master, `d${d}/f${i}.js`), text(`d${d}f${i}`));
        await writeFile(join(master, `d${d}/sub/g${i}.css`), text(`d${d}g${i}`));
      }
      await writeFile(join(master, `d${d}/logo.png`), text(`png${d}`));
    }
    await writeFile(join(master, 'index.html'), text('index'));
    const first = copier(master, a, null);
    await first.mirrorAll();
    assert.equal(first.variantStats.compressed, 2 * 41);
    // the second copy takes every variant from the first, and reads no file to hash it
    const second = copier(master, b, a);
    await second.mirrorAll();
    assert.equal(second.variantStats.compressed, 0);
    assert.equal(second.variantStats.reused, 2 * 41);
    assert.equal(second.variantStats.read, 0);
    assert.equal(second.variantStats.hashed, 45);
    for (const slot of [a, b]) {
      assert.equal(await checkVariants(slot), 2 * 41);
      for (let d = 0; d < 4; d++) {
        await checkRecord(slot, `d${d}/logo.png`);
        for (let i = 0; i < 5; i++) {
          await checkRecord(slot, `d${d}/f${i}.js`);
          await checkRecord(slot, `d${d}/sub/g${i}.css`);
        }
      }
      await checkRecord(slot, 'index.html');
    }
    assert.deepEqual(await compareTrees(master, b, { variants: true }), []);
    // with the compression kept to fewer threads than the clone's, the derive runs after the clone
    const c = join(root, 'fused', 'c');
    await mkdir(c);
    const kept = copier(master, c, a, { threads: 1 });
    await kept.mirrorAll();
    assert.equal(kept.variantStats.read, 45, 'every file read again');
    assert.equal(kept.variantStats.reused, 2 * 41);
  });

  it('a full copy into a slot that holds part of the tree and no index yet indexes all of it', async () => {
    const { master, a, b } = await setup('fused-partial');
    for (const d of ['held', 'new']) {
      await mkdir(join(master, d));
      for (let i = 0; i < 3; i++) await writeFile(join(master, `${d}/f${i}.js`), text(`${d}${i}`));
    }
    // the slot holds `held` as master does, copied with variants off: no index, no variants
    await new TreeCopier(master, a, { durable: false, variants: null }).mirrorAll();
    await rm(join(a, 'new'), { recursive: true });
    const c = copier(master, a, b);
    await c.mirrorAll();
    for (let i = 0; i < 3; i++) {
      await checkRecord(a, `held/f${i}.js`);
      await checkRecord(a, `new/f${i}.js`);
    }
    assert.equal(await checkVariants(a), 12);
  });

  it('a directory made again where one was removed is indexed afresh: no record of the old one stands', async () => {
    // A removed directory's index stays in the copy's meta (so does one a clone cut short wrote);
    // ext4 gives a freed inode number to the next file made, so the new directory's file can have
    // the old one's inode, size and time with other bytes (a build that sets every time alike)
    const { master, a } = await setup('made-again');
    const time = new Date(2020, 0, 1);
    const put = async (bytes: string) => {
      await mkdir(join(master, 'd'), { recursive: true });
      await writeFile(join(master, 'd/logo.png'), bytes);
      await utimes(join(master, 'd/logo.png'), time, time);
    };
    const ways: [string, (slot: string) => Promise<unknown>][] = [
      ['a full copy', (slot) => copier(master, slot, null).mirrorAll()],
      ['a full copy deriving after its clone', (slot) => copier(master, slot, null, { threads: 1 }).mirrorAll()],
      ['a journal sync', (slot) => copier(master, slot, null).copyPaths(['d'])],
    ];
    for (const [i, [way, copy]] of ways.entries()) {
      await put('A'.repeat(5000));
      await copier(master, a, null).mirrorAll();
      await checkRecord(a, 'd/logo.png');
      await rm(join(master, 'd'), { recursive: true });
      await copier(master, a, null).copyPaths(['d']);
      assert.equal(await lstatOrNull(join(a, 'd')), null);
      await put(String.fromCharCode(66 + i).repeat(5000));
      await copy(a);
      await checkRecord(a, 'd/logo.png').catch((err: Error) => assert.fail(`${way}: ${err.message}`));
      await rm(join(master, 'd'), { recursive: true });
      await copier(master, a, null).copyPaths(['d']);
    }
  });

  it('never reads the other copy through a link: its index of a directory now a link names no file outside', async (t) => {
    // the other copy's d was a directory, then master made it a link to a directory outside: d's
    // index stays there. Whoever writes outside takes the freed inode numbers again (ext4 gives
    // them out first) for files of the recorded sizes and time; a copy of d made a directory
    // again looks for variants to reuse in the other copy's d
    const { master, a, b } = await setup('other-link');
    const outside = join(root, 'other-link', 'outside');
    await mkdir(outside);
    await mkdir(join(master, 'd'));
    await writeFile(join(master, 'd/x.js'), text('x'));
    await copier(master, b, null).mirrorAll();
    const record = (await readCopyIndex(b, 'd'))?.files['x.js'];
    assert.ok(record?.variants?.br && record.variants.gzip);
    await rm(join(master, 'd'), { recursive: true });
    await symlink(outside, join(master, 'd'));
    await copier(master, b, null).copyPaths(['d']);
    assert.ok((await lstat(join(b, 'd'))).isSymbolicLink());
    const take = async (name: string, ino: number, bytes: string | Buffer): Promise<boolean> => {
      for (let i = 0; i < 2000; i++) {
        const probe = join(outside, `probe-${name}-${i}`);
        await writeFile(probe, bytes);
        if ((await stat(probe)).ino === ino) {
          await rename(probe, join(outside, name));
          return true;
        }
      }
      return false;
    };
    const took =
      (await take('x.js', record.ino, text('x'))) &&
      (await take('x.js.br', record.variants.br.ino, Buffer.alloc(record.variants.br.size, 'A'))) &&
      (await take('x.js.gz', record.variants.gzip.ino, Buffer.alloc(record.variants.gzip.size, 'B')));
    if (!took) return t.skip('this file system gives no freed inode number out again');
    await utimes(join(outside, 'x.js'), record.mtimeMs / 1000, record.mtimeMs / 1000);
    await unlink(join(master, 'd'));
    await mkdir(join(master, 'd'));
    await writeFile(join(master, 'd/x.js'), text('x'));
    await utimes(join(master, 'd/x.js'), record.mtimeMs / 1000, record.mtimeMs / 1000);
    const copy = copier(master, a, b);
    await copy.mirrorAll();
    assert.equal(copy.variantStats.reused, 0, 'nothing taken from outside');
    assert.equal(await checkVariants(a), 2);
    await checkRecord(a, 'd/x.js');
  });

  it('the copy after one cut short once its files were in place derives the whole copy, full or by path', async () => {
    const { master, a } = await setup('cut-short');
    const files = Array.from({ length: 30 }, (_, i) => `d/f${i}.js`);
    await mkdir(join(master, 'd'));
    for (const p of files) await writeFile(join(master, p), text(`v1 ${p}`));
    await copier(master, a, null).mirrorAll();
    const script = join(root, 'cut-short', 'copy.mjs');
    await writeFile(
      script,
      `import { TreeCopier } from ${JSON.stringify(new URL('../../../src/tree/tree-copy.js', import.meta.url).href)};
      const [master, slot, settings, ...paths] = process.argv.slice(2);
      const variants = { settings: JSON.parse(settings), other: null };
      // killed once the last file is in place, before the derive
      const onProgress = (s) => s.files === paths.length && process.kill(process.pid, 'SIGKILL');
      await new TreeCopier(master, slot, { durable: false, variants, onProgress }).copyPaths(paths);`,
    );
    for (const [round, next] of [
      ['v2', () => copier(master, a, null, {}, true).mirrorAll()],
      ['v3', () => copier(master, a, null, {}, true).copyPaths(['other.js'])],
    ] as const) {
      for (const p of files) await writeFile(join(master, p), text(`${round} ${p}`));
      const killed = spawn(process.execPath, [script, master, a, JSON.stringify(settings), ...files], {
        stdio: 'ignore',
      });
      assert.equal((await once(killed, 'exit'))[1], 'SIGKILL');
      assert.equal(await readFile(join(a, 'd/f0.js'), 'utf8'), text(`${round} d/f0.js`), 'placed');
      // the next copy: a full one, whose compare finds every file as master has it; or one by path
      // of the journal's changes, which do not name them (the copy cut short repaired drift, say)
      await next();
      assert.equal(await checkVariants(a), 2 * files.length, round);
      for (const p of files) await checkRecord(a, p);
    }
  });

  it('a journal sync keeping what it replaces sets aside the variants and indexes it would free, until clearTemp', async () => {
    const { master, a, b } = await setup('set-aside');
    for (const d of ['d1', 'd2']) await mkdir(join(master, d));
    for (const p of ['d1/x.js', 'd1/y.js', 'd2/z.js', 'd2/w.js']) await writeFile(join(master, p), text(p));
    await copier(master, a, null).mirrorAll();
    await copier(master, b, a).mirrorAll(); // b's variants are links to a's
    const inodes = async (slot: string, paths: string[]) =>
      Promise.all(paths.map(async (p) => (await lstat(p.startsWith('/') ? p : join(slot, p))).ino));
    /** The inodes of the files in the slot's temp directory, at any depth. */
    const inTemp = async (slot: string) => {
      const out = new Set<number>();
      const walk = async (dir: string) => {
        for (const e of await readdir(dir, { withFileTypes: true })) {
          if (e.isDirectory()) await walk(join(dir, e.name));
          else out.add((await lstat(join(dir, e.name))).ino);
        }
      };
      await walk(join(slot, '.mirrorswap-tmp')).catch(() => {});
      return out;
    };
    await writeFile(join(master, 'd1/x.js'), text('x changed'));
    await unlink(join(master, 'd2/w.js'));
    const replaced = ['d1/x.js.br', 'd1/x.js.gz', 'd2/w.js.br', 'd2/w.js.gz'];
    // b's variants are links to a's: a has the last link of none of them yet
    const shared = await inodes(b, replaced);
    // slot a (its variants shared with b) then slot b (the last links of what a replaced)
    const syncA = new TreeCopier(master, a, {
      durable: true,
      keepReplacedBytes: 1024 * 1024,
      variants: { settings, other: b },
    });
    await syncA.copyPaths(['d1/x.js', 'd2/w.js']);
    // a link b still holds is removed, not set aside; the indexes a replaced are its own
    const asideA = await inTemp(a);
    for (const ino of shared) assert.ok(!asideA.has(ino), 'a variant still linked in b was set aside');
    await syncA.clearTemp();
    const oldIndexesB = await inodes(b, [directoryIndexPath(b, 'd1'), directoryIndexPath(b, 'd2')]);
    const syncB = new TreeCopier(master, b, {
      durable: true,
      keepReplacedBytes: 1024 * 1024,
      variants: { settings, other: a },
    });
    await syncB.copyPaths(['d1/x.js', 'd2/w.js']);
    // the copy is whole: new variants, records, w's variants and record gone
    for (const slot of [a, b]) {
      assert.equal(brotliDecompressSync(await readFile(join(slot, 'd1/x.js.br'))).toString(), text('x changed'));
      assert.equal(gunzipSync(await readFile(join(slot, 'd1/x.js.gz'))).toString(), text('x changed'));
      await checkRecord(slot, 'd1/x.js');
      await checkRecord(slot, 'd2/z.js');
      for (const p of ['d2/w.js.br', 'd2/w.js.gz']) assert.equal(await lstatOrNull(join(slot, p)), null, p);
      assert.equal((await readCopyIndex(slot, 'd2'))?.files['w.js'], undefined);
      assert.equal(await checkVariants(slot), await countVariantFiles(slot));
    }
    // what b replaced held the last links (a let go of them): each waits in the temp directory, freed by nothing yet
    const asideB = await inTemp(b);
    for (const ino of shared) assert.ok(asideB.has(ino), `inode ${ino} was freed, not set aside`);
    // a sync this small writes no index: its records are the copy's recent ones
    assert.deepEqual(await inodes(b, [directoryIndexPath(b, 'd1'), directoryIndexPath(b, 'd2')]), oldIndexesB);
    assert.ok(await lstatOrNull(recentRecordsPath(b)), 'the recent records of b');
    await syncB.clearTemp();
    assert.deepEqual(await tempFilesIn(b), []);
    // a copy that keeps nothing frees as it goes, and leaves no temp directory
    await writeFile(join(master, 'd1/y.js'), text('y changed'));
    const plain = new TreeCopier(master, a, { durable: true, variants: { settings, other: b } });
    await plain.copyPaths(['d1/y.js']);
    await checkRecord(a, 'd1/y.js');
    assert.deepEqual(await tempFilesIn(a), []);
  });

  it('the whole derive after a copy cut short frees what it replaces as it goes, however few paths it names', async () => {
    const { master, a } = await setup('cut-short-aside');
    const files = Array.from({ length: 30 }, (_, i) => `d/f${i}.js`);
    await mkdir(join(master, 'd'));
    for (const p of files) await writeFile(join(master, p), text(`v1 ${p}`));
    await copier(master, a, null).mirrorAll();
    const made = await countVariantFiles(a);
    // a copy cut short placed a new release of every file, and derived none of it
    for (const p of files) await writeFile(join(master, p), text(`v2 ${p}`));
    await new TreeCopier(master, a, { durable: false }).copyPaths(files);
    // the next copy names one path: its derive is of the whole copy, and remakes every variant
    const next = new TreeCopier(master, a, {
      durable: false,
      keepReplacedBytes: 1 << 20,
      variants: { settings, other: null },
      cutShort: true,
    });
    await next.copyPaths(['other.js']);
    assert.equal(await checkVariants(a), made);
    for (const p of files) await checkRecord(a, p);
    // never room for two sets of every variant: none of those it replaced waits for clearTemp
    const aside = (await tempFilesIn(a)).filter((n) => n.includes('.aside.'));
    assert.deepEqual(aside, []);
    await next.clearTemp();
  });

  it("reuses the other copy's variants of a read-only file whose time differs: copied, given this file's time", async () => {
    const { master, a, b } = await setup('read-only');
    await writeFile(join(master, 'ro.js'), text('ro'));
    await chmod(join(master, 'ro.js'), 0o444);
    await copier(master, a, null).mirrorAll();
    // the same bytes with another time: b takes a's variants by copy (a link would carry a's time)
    await utimes(join(master, 'ro.js'), new Date(2001, 0, 1), new Date(2001, 0, 1));
    const second = copier(master, b, a);
    await second.mirrorAll();
    assert.deepEqual(
      {
        compressed: second.variantStats.compressed,
        reused: second.variantStats.reused,
        denied: second.variantStats.denied,
      },
      { compressed: 0, reused: 2, denied: 0 },
    );
    const mtime = Math.floor((await stat(join(b, 'ro.js'))).mtimeMs);
    for (const suffix of ['.br', '.gz']) {
      const st = await stat(join(b, `ro.js${suffix}`));
      assert.equal(Math.floor(st.mtimeMs), mtime, `ro.js${suffix} has its original's time`);
      assert.notEqual(st.ino, (await stat(join(a, `ro.js${suffix}`))).ino, 'a copy, not a link to the other copy');
    }
    await checkRecord(b, 'ro.js');
  });

  it('a file over VARIANT_MAX_BYTES gets no variant, and its record the hash of all its bytes (read as a stream)', async () => {
    const { master, a } = await setup('large');
    const big = join(master, 'huge.js');
    await writeFile(big, 'export const x = 1;\n');
    await truncate(big, VARIANT_MAX_BYTES + 1); // sparse: cheap to make and to read
    await writeFile(join(master, 'huge.js.gz'), gzipSync(await readFile(big)));
    const copy = copier(master, a, null);
    await copy.mirrorAll();
    assert.equal(copy.variantStats.compressed, 0);
    assert.equal(await lstatOrNull(join(a, 'huge.js.br')), null);
    const record = (await readCopyIndex(a, ''))?.files['huge.js'];
    assert.equal(record?.sha256, contentHash(await readFile(join(a, 'huge.js'))));
    assert.equal(record?.variants, undefined, "master's huge.js.gz is not checked, so not named");
  });

  it("a made variant master's new sibling was not copied over (unreadable, or late) never outlives its original", async () => {
    const { master, a } = await setup('late-sibling');
    await writeFile(join(master, 'x.js'), text('v1'));
    await copier(master, a, null).mirrorAll();
    assert.equal(gunzipSync(await readFile(join(a, 'x.js.gz'))).toString(), text('v1'));
    // master's x.js changes and master gains an x.js.gz of its own, which this copy does not take
    // (as for a file the agent cannot read): only x.js is copied
    await writeFile(join(master, 'x.js'), text('v2'));
    await writeFile(join(master, 'x.js.gz'), 'not a gzip of anything');
    const sync = copier(master, a, null);
    await sync.copyPaths(['x.js']);
    assert.equal(await lstatOrNull(join(a, 'x.js.gz')), null, "the v1 variant is gone, not left as master's");
    assert.equal(brotliDecompressSync(await readFile(join(a, 'x.js.br'))).toString(), text('v2'));
    assert.equal((await readCopyIndex(a, ''))?.files['x.js']?.variants?.gzip, undefined);
  });

  it("keeps master's own X.gz, never overwritten, recorded only when it decodes to X", async () => {
    const { master, a } = await setup('own');
    await writeFile(join(master, 'good.js'), text('good'));
    await writeFile(join(master, 'good.js.gz'), gzipSync(text('good')));
    await writeFile(join(master, 'bad.js'), text('bad'));
    await writeFile(join(master, 'bad.js.gz'), 'not gzip at all, but master says so');
    await writeFile(join(master, 'bomb.js'), text('bomb'));
    await writeFile(join(master, 'bomb.js.br'), brotliCompressSync(`${text('bomb')}more`));
    await copier(master, a, null).mirrorAll();
    const index = await readCopyIndex(a, '');
    assert.equal(index?.files['good.js']?.variants?.gzip?.made, false);
    assert.equal(index?.files['good.js']?.variants?.br?.made, true);
    assert.equal(index?.files['bad.js']?.variants?.gzip, undefined);
    assert.equal(await readFile(join(a, 'bad.js.gz'), 'utf8'), 'not gzip at all, but master says so');
    assert.equal(index?.files['bomb.js']?.variants?.br, undefined);
    assert.ok(await lstatOrNull(join(a, 'bomb.js.gz')), 'a gzip variant is made beside master br');
    // master's siblings are files of their own, recorded as such
    assert.ok(index?.files['bad.js.gz']);
    assert.deepEqual(await compareTrees(master, a, { variants: true }), []);
  });

  it('is not fooled by hostile names: a variant-named file, a link, a directory named X.br, newlines', async () => {
    const { master, a } = await setup('hostile');
    const outside = join(root, 'hostile', 'outside.txt');
    await writeFile(outside, 'secret');
    await writeFile(join(master, 'x.js'), text('x'));
    await symlink(outside, join(master, 'x.js.br'));
    await writeFile(join(master, 'y.css'), text('y'));
    await mkdir(join(master, 'y.css.br'));
    await writeFile(join(master, 'y.css.br/inner.js'), text('inner'));
    await writeFile(join(master, 'line\nbreak.js'), text('nl'));
    await writeFile(join(master, 'lonely.js.br'), 'a file named as a variant, with no original');
    await copier(master, a, null).mirrorAll();
    assert.ok((await lstat(join(a, 'x.js.br'))).isSymbolicLink(), "master's link stays a link");
    assert.equal(await readFile(outside, 'utf8'), 'secret');
    assert.ok((await lstat(join(a, 'y.css.br'))).isDirectory());
    assert.ok(await lstatOrNull(join(a, 'y.css.br/inner.js.br')));
    assert.ok(await lstatOrNull(join(a, 'line\nbreak.js.br')));
    await checkRecord(a, 'line\nbreak.js');
    const index = await readCopyIndex(a, '');
    assert.equal(index?.files['x.js']?.variants?.br, undefined);
    assert.ok(index?.files['x.js']?.variants?.gzip);
    assert.equal(await readFile(join(a, 'lonely.js.br'), 'utf8'), 'a file named as a variant, with no original');
    assert.equal(await checkVariants(a), await countVariantFiles(a));
    assert.deepEqual(await compareTrees(master, a, { variants: true }), []);
  });

  it("master's root files named as variants of the reserved names never take a journal sync's derive into the temp or meta directory", async () => {
    const { master, a, b } = await setup('reserved-variant-names');
    for (const d of ['d1', 'old']) await mkdir(join(master, d));
    await writeFile(join(master, 'd1/x.js'), text('x'));
    await writeFile(join(master, 'old/app.js'), text('app'));
    await writeFile(join(master, '.mirrorswap-tmp.br'), 'a file of master, not a variant');
    await writeFile(join(master, '.mirrorswap-meta.gz'), 'another');
    await copier(master, a, null).mirrorAll();
    await copier(master, b, a).mirrorAll();
    // a sync changing them, with a directory deleted: its tree (variants and all) waits in the temp directory
    await writeFile(join(master, 'd1/x.js'), text('x changed'));
    await writeFile(join(master, '.mirrorswap-tmp.br'), 'changed');
    await writeFile(join(master, '.mirrorswap-meta.gz'), 'changed too');
    await rm(join(master, 'old'), { recursive: true });
    const sync = new TreeCopier(master, a, {
      durable: false,
      keepReplacedBytes: 1 << 20,
      variants: { settings, other: b },
    });
    await sync.copyPaths(['d1/x.js', '.mirrorswap-tmp.br', '.mirrorswap-meta.gz', 'old']);
    // no directory of the temp or meta directory is derived: nothing there is compressed or indexed
    for (const dir of ['.mirrorswap-tmp', '.mirrorswap-meta', '.mirrorswap-meta/index'])
      assert.equal(await readCopyIndex(a, dir), null, `an index of ${dir}`);
    assert.equal(sync.variantStats.compressed + sync.variantStats.reused + sync.variantStats.cached, 2);
    assert.equal(await readFile(join(a, '.mirrorswap-tmp.br'), 'utf8'), 'changed');
    assert.equal(await readFile(join(a, '.mirrorswap-meta.gz'), 'utf8'), 'changed too');
    await checkRecord(a, 'd1/x.js');
    await checkRecord(a, '.mirrorswap-tmp.br');
    assert.equal(await checkVariants(a), await countVariantFiles(a));
    assert.deepEqual(await compareTrees(master, a, { variants: true }), []);
    await sync.clearTemp();
    assert.deepEqual(await tempFilesIn(a), []);
  });

  it('copies sharing files by link share their indexes; copies that do not write their own', async () => {
    const { master, a, b } = await setup('shared-index');
    const c = join(root, 'shared-index', 'c');
    await mkdir(c);
    for (let i = 0; i < 4; i++) await writeFile(join(master, `s${i}.js`), text(`s${i}`));
    await copier(master, a, null).mirrorAll();
    await new TreeCopier(master, b, { durable: false, share: a, variants: { settings, other: a } }).mirrorAll();
    await copier(master, c, a).mirrorAll();
    const indexOf = (slot: string) => stat(directoryIndexPath(slot, ''));
    assert.equal((await indexOf(b)).ino, (await indexOf(a)).ino, 'the same records: one index, linked');
    assert.notEqual((await indexOf(c)).ino, (await indexOf(a)).ino, 'other inodes: an index of its own');
    await checkRecord(b, 's1.js');
    await checkRecord(c, 's1.js');
  });

  it('variants off: made variants and the index are removed by the next full copy', async () => {
    const { master, a } = await setup('off');
    await writeFile(join(master, 'app.js'), text('app'));
    await copier(master, a, null).mirrorAll();
    assert.ok(await lstatOrNull(join(a, 'app.js.br')));
    await new TreeCopier(master, a, { durable: false, variants: null }).mirrorAll();
    assert.equal(await lstatOrNull(join(a, 'app.js.br')), null);
    assert.equal(await lstatOrNull(join(a, '.mirrorswap-meta')), null);
    assert.deepEqual(await compareTrees(master, a), []);
    // on again: the whole copy is derived, not only what changed
    const on = copier(master, a, null);
    await on.mirrorAll();
    assert.ok(await lstatOrNull(join(a, 'app.js.br')));
    await checkRecord(a, 'app.js');
  });

  it("variants off: a journal sync removes every variant the index or recent records name as made, wherever; master's own and what is reached through a link stay", async () => {
    const { master, a } = await setup('off-journal');
    const outside = join(root, 'off-journal', 'outside');
    for (const d of ['js', 'far']) await mkdir(join(master, d), { recursive: true });
    await writeFile(join(master, 'app.js'), text('app'));
    await writeFile(join(master, 'js/lib.js'), text('lib'));
    await writeFile(join(master, 'far/away.js'), text('away'));
    await writeFile(join(master, 'own.js'), text('own'));
    await writeFile(join(master, 'own.js.gz'), gzipSync(text('own'))); // master's own sibling
    await writeFile(join(master, 'note.txt'), 'one');
    await copier(master, a, null).mirrorAll();
    // a small sync keeps its records in the recent ones: a made variant named there only
    await writeFile(join(master, 'recent.js'), text('recent'));
    await copier(master, a, null).copyPaths(['recent.js']);
    assert.ok(await lstatOrNull(recentRecordsPath(a)), 'the small sync kept recent records');
    for (const rel of ['app.js.br', 'js/lib.js.gz', 'far/away.js.br', 'recent.js.br', 'own.js.gz'])
      assert.ok(await lstatOrNull(join(a, rel)), rel);
    // drift: the copy's `far` moved out of it, a link left in its place (its files keep their inodes)
    await mkdir(outside, { recursive: true });
    await rename(join(a, 'far'), join(outside, 'far'));
    await symlink(join(outside, 'far'), join(a, 'far'));
    // variants off: a journal sync of one unrelated file
    await writeFile(join(master, 'note.txt'), 'two');
    await new TreeCopier(master, a, { durable: false, variants: null }).copyPaths(['note.txt']);
    assert.equal(await lstatOrNull(join(a, '.mirrorswap-meta')), null, 'the index is dropped');
    for (const rel of ['app.js.br', 'app.js.gz', 'js/lib.js.br', 'js/lib.js.gz', 'recent.js.br', 'recent.js.gz'])
      assert.equal(
        await lstatOrNull(join(a, rel)),
        null,
        `${rel}: made, and no reader could tell it from master's now`,
      );
    assert.deepEqual(await readFile(join(a, 'own.js.gz')), await readFile(join(master, 'own.js.gz')), "master's own");
    assert.ok(await lstatOrNull(join(outside, 'far/away.js.br')), 'never removed through a link');
    assert.equal(await readFile(join(a, 'note.txt'), 'utf8'), 'two');
  });

  it('variants off: an index forged to name a directory above the copy removes nothing there', async () => {
    const { master } = await setup('off-forged');
    // the copy one level deeper than master: the forged path reaches from it what it does not from master
    const a = join(root, 'off-forged', 'deep', 'a');
    await mkdir(a, { recursive: true });
    const victimDir = join(root, 'off-forged', 'victim');
    await mkdir(victimDir, { recursive: true });
    await writeFile(join(victimDir, 'f.br'), "not the copy's");
    await writeFile(join(master, 'app.js'), text('app'));
    await copier(master, a, null).mirrorAll();
    const hash = contentHash(Buffer.from('x'));
    {
      const dir = '../../victim';
      const st = await stat(join(victimDir, 'f.br'));
      const forged = {
        v: 1,
        dir,
        files: {
          f: {
            ino: 1,
            size: 1,
            mtimeMs: 1,
            sha256: hash,
            variants: { br: { ino: st.ino, size: st.size, sha256: hash, made: true } },
          },
        },
      };
      await writeFile(directoryIndexPath(a, dir), JSON.stringify(forged));
    }
    await writeFile(join(master, 'app.js'), text('app2'));
    await new TreeCopier(master, a, { durable: false, variants: null }).copyPaths(['app.js']);
    assert.equal(await readFile(join(victimDir, 'f.br'), 'utf8'), "not the copy's");
    assert.equal(await lstatOrNull(join(a, 'app.js.br')), null);
  });

  // an immutable directory (chattr +i: root included) stands for one this process may neither write nor open
  it('variants off: a directory of the copy that may not be opened keeps its variant and stops no sync', {
    skip: process.getuid?.() !== 0 && 'chattr +i needs root',
  }, async (t) => {
    const { master, a } = await setup('off-locked');
    await mkdir(join(master, 'locked'));
    await writeFile(join(master, 'app.js'), text('app'));
    await writeFile(join(master, 'locked/lib.js'), text('lib'));
    await copier(master, a, null).mirrorAll();
    const locked = join(a, 'locked');
    await chmod(locked, 0o555); // read-only: the copier would open it (chmod) to remove an entry
    if (spawnSync('chattr', ['+i', locked]).status !== 0) {
      t.skip('this file system takes no chattr +i');
      return;
    }
    try {
      await writeFile(join(master, 'note.txt'), 'two');
      await new TreeCopier(master, a, { durable: false, variants: null }).copyPaths(['note.txt']);
      assert.equal(await lstatOrNull(join(a, '.mirrorswap-meta')), null, 'the index is dropped');
      assert.equal(await lstatOrNull(join(a, 'app.js.br')), null);
      assert.ok(await lstatOrNull(join(locked, 'lib.js.br')), 'left where it may not be removed');
      assert.equal(await readFile(join(a, 'note.txt'), 'utf8'), 'two');
    } finally {
      spawnSync('chattr', ['-i', locked]);
      await chmod(locked, 0o755);
    }
  });

  // root reads whatever a mode denies: the test needs a user the kernel holds to modes
  it('variants off: meta its owner may not read (drifted modes) stops no sync: it goes, with every variant it still names', {
    skip: process.getuid?.() === 0 && 'run as root, which modes do not stop',
  }, async () => {
    const { master, a } = await setup('off-modes');
    await mkdir(join(master, 'js'));
    await writeFile(join(master, 'app.js'), text('app'));
    await writeFile(join(master, 'js/lib.js'), text('lib'));
    await copier(master, a, null).mirrorAll();
    await writeFile(join(master, 'recent.js'), text('recent'));
    await copier(master, a, null).copyPaths(['recent.js']);
    for (const rel of ['app.js.br', 'js/lib.js.br', 'recent.js.br']) assert.ok(await lstatOrNull(join(a, rel)), rel);
    // drift: an index, the recent records and the index directory denied to their owner (the copy's files keep theirs)
    await chmod(directoryIndexPath(a, 'js'), 0o000);
    await chmod(recentRecordsPath(a), 0o000);
    await chmod(join(a, '.mirrorswap-meta', 'index'), 0o000);
    await writeFile(join(master, 'note.txt'), 'two');
    await new TreeCopier(master, a, { durable: false, variants: null }).copyPaths(['note.txt']);
    assert.equal(await lstatOrNull(join(a, '.mirrorswap-meta')), null, 'the index is dropped');
    // the index directory is opened, as it is to be removed; a file of records none may read is no word (a server's
    // reader could not read it either), whatever it named stays
    assert.equal(
      await lstatOrNull(join(a, 'app.js.br')),
      null,
      'named by an index in a directory its owner could not read',
    );
    assert.equal(await readFile(join(a, 'note.txt'), 'utf8'), 'two');
  });
});

async function countVariantFiles(root: string, dir = ''): Promise<number> {
  let n = 0;
  for (const e of await readdir(join(root, dir), { withFileTypes: true })) {
    const rel = dir === '' ? e.name : `${dir}/${e.name}`;
    if (dir === '' && e.name.startsWith('.mirrorswap-')) continue;
    if (e.isDirectory()) n += await countVariantFiles(root, rel);
    else if (e.isFile() && /\.(br|gz)$/.test(e.name) && (await lstatOrNull(join(root, rel.slice(0, -3))))?.isFile())
      n++;
  }
  return n;
}
