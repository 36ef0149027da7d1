import assert from 'node:assert/strict';
import { chmod, lstat, mkdir, mkdtemp, readFile, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { lstatOrNull } from '../../../src/core/lstat-or-null.js';
import { compareTrees } from '../../../src/tree/compare-trees.js';
import { TreeCopier } from '../../../src/tree/tree-copy.js';
import { walkPool } from '../../../src/tree/walk-pool.js';
import { tempFilesIn } from '../../../testkit/store.js';

/** The bytes of every file kept in the copier's replaced directory of `target` (none: 0). */
async function keptBytes(target: string): Promise<{ files: number; bytes: number }> {
  const keptDir = (await tempFilesIn(target)).find((n) => n.endsWith('.replaced'));
  if (!keptDir) return { files: 0, bytes: 0 };
  const dir = join(target, '.mirrorswap-tmp', keptDir);
  let bytes = 0;
  const names = await readdir(dir);
  for (const name of names) bytes += (await lstat(join(dir, name))).size;
  return { files: names.length, bytes };
}

describe('TreeCopier, attacks on the files placed by the walk threads', () => {
  let root: string;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'mirrorswap-stage-attack-'));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
    await walkPool.close();
  });

  it('a copier whose temp directory was cleared (as a failed copy clears it) still removes and replaces what it must', async () => {
    const source = join(root, 'src-reuse');
    const target = join(root, 'dst-reuse');
    await mkdir(join(source, 'site'), { recursive: true });
    await mkdir(join(target, 'site/x/deep'), { recursive: true });
    await writeFile(join(source, 'site/a.txt'), 'new');
    await writeFile(join(target, 'site/a.txt'), 'old');
    await writeFile(join(target, 'site/gone.txt'), 'master deleted me');
    await writeFile(join(source, 'site/x'), 'a file now');
    await writeFile(join(target, 'site/x/deep/old.txt'), 'old');
    const copier = new TreeCopier(source, target, { durable: false, keepReplacedBytes: 1 << 20 });
    // a first copy keeps what it replaces: the temp directory gets its directory of what is kept
    await copier.copyPaths(['site/a.txt']);
    assert.ok((await keptBytes(target)).files > 0, 'nothing was kept');
    // what a failed copy does before it throws (copyPaths' catch), and a swap after its publish
    await copier.clearTemp();
    // the same copier again: what master deleted goes (not left in place, the copy reported done), ...
    const stats = await copier.copyPaths(['site/gone.txt']);
    assert.equal(stats.deleted, 1);
    assert.equal(await lstatOrNull(join(target, 'site/gone.txt')), null, 'a file master deleted is left in the copy');
    // ... and a directory in the way is replaced (not an EISDIR failure)
    await copier.copyPaths(['site/x']);
    assert.equal(await readFile(join(target, 'site/x'), 'utf8'), 'a file now');
    assert.deepEqual(await compareTrees(source, target), []);
    await copier.clearTemp();
    assert.deepEqual(await tempFilesIn(target), []);
  });

  it('keeps no more bytes of what the files replace than the budget, when they are linked from the copy shared with', async () => {
    const source = join(root, 'src-shared');
    const share = join(root, 'share-shared');
    const target = join(root, 'dst-shared');
    const when = new Date('2026-01-02T03:04:05Z');
    const names: string[] = [];
    for (const dir of [source, share, target]) await mkdir(join(dir, 'site'), { recursive: true });
    for (let i = 0; i < 16; i++) {
      const rel = `site/f${i}.bin`;
      names.push(rel);
      for (const dir of [source, share]) {
        await writeFile(join(dir, rel), `release two, file ${i}`);
        await utimes(join(dir, rel), when, when);
      }
      // what the standby holds: an older release, each file 64 KiB
      await writeFile(join(target, rel), Buffer.alloc(64 * 1024, i));
    }
    const budget = 100 * 1024; // room for one of the files replaced, not two
    for (const settled of [new Set(names), undefined]) {
      const copier = new TreeCopier(source, target, { durable: false, keepReplacedBytes: budget, share, settled });
      await copier.copyPaths(names);
      assert.equal(copier.sharedFiles, names.length, 'every file was linked from the copy shared with');
      const kept = await keptBytes(target);
      assert.ok(
        kept.bytes <= budget,
        `${kept.files} files of ${kept.bytes} bytes kept against a budget of ${budget} (settled: ${Boolean(settled)})`,
      );
      await copier.clearTemp();
      // the standby's old files again, for the next round
      for (const [i, rel] of names.entries()) {
        await rm(join(target, rel));
        await writeFile(join(target, rel), Buffer.alloc(64 * 1024, i));
      }
    }
  });

  it('keeps nothing when keepReplacedBytes is 0, also of a file linked from the copy shared with (clearTemp then fails on none)', async () => {
    const source = join(root, 'src-nokeep');
    const share = join(root, 'share-nokeep');
    const target = join(root, 'dst-nokeep');
    const when = new Date('2026-01-02T03:04:05Z');
    for (const dir of [source, share, target]) await mkdir(join(dir, 'ro'), { recursive: true });
    for (const dir of [source, share]) {
      await writeFile(join(dir, 'ro/a.txt'), 'same bytes');
      await utimes(join(dir, 'ro/a.txt'), when, when);
    }
    await writeFile(join(target, 'ro/a.txt'), 'old');
    // a directory its owner may not write: the copier places the file, not the walk thread
    await chmod(join(target, 'ro'), 0o555);
    try {
      const copier = new TreeCopier(source, target, { durable: false, share });
      await copier.copyPaths(['ro/a.txt']);
      assert.equal(copier.sharedFiles, 1);
      assert.deepEqual(await tempFilesIn(target), [], 'a copy that keeps nothing leaves no temp directory');
      await copier.clearTemp();
    } finally {
      await chmod(join(target, 'ro'), 0o755);
    }
  });

  it('keepReplacedBytes of Infinity, or of a fraction, keeps what fits (BigInt takes neither)', async () => {
    const source = join(root, 'src-inf');
    const target = join(root, 'dst-inf');
    await mkdir(join(source, 'site'), { recursive: true });
    await mkdir(join(target, 'site'), { recursive: true });
    for (const keepReplacedBytes of [Number.POSITIVE_INFINITY, 1000.5]) {
      await writeFile(join(source, 'site/a.txt'), `new ${keepReplacedBytes}`);
      await writeFile(join(target, 'site/a.txt'), 'old');
      const copier = new TreeCopier(source, target, { durable: false, keepReplacedBytes });
      await copier.copyPaths(['site/a.txt']);
      assert.equal(await readFile(join(target, 'site/a.txt'), 'utf8'), `new ${keepReplacedBytes}`);
      assert.deepEqual(await keptBytes(target), { files: 1, bytes: 3 });
      await copier.clearTemp();
    }
  });
});
