import assert from 'node:assert/strict';
import { chmod, lstat, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { compareTrees } from '../../../src/tree/compare-trees.js';
import { TreeCopier } from '../../../src/tree/tree-copy.js';
import { WalkPool, walkPool } from '../../../src/tree/walk-pool.js';
import { tempFilesIn } from '../../../testkit/store.js';

/**
 * A journal copy's files are staged and renamed into place by the walk
 * threads (stage-files.ts), side by side: what the copier guaranteed when it
 * placed them one by one must hold as they do.
 */
describe('TreeCopier, files placed by the walk threads', () => {
  let root: string;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'mirrorswap-stage-place-'));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('keeps exactly what the budget holds of what the files replace, however many threads place them', async () => {
    const source = join(root, 'src-budget');
    const target = join(root, 'dst-budget');
    const names: string[] = [];
    for (let d = 0; d < 8; d++) {
      await mkdir(join(source, `d${d}`), { recursive: true });
      await mkdir(join(target, `d${d}`), { recursive: true });
      for (let i = 0; i < 16; i++) {
        const rel = `d${d}/f${i}.bin`;
        names.push(rel);
        await writeFile(join(target, rel), Buffer.alloc(4096, 1));
        await writeFile(join(source, rel), Buffer.alloc(4096, 2));
      }
    }
    // both threads running (a compare starts every one): the files are shared among them
    await compareTrees(source, target);
    const copier = new TreeCopier(source, target, { durable: true, keepReplacedBytes: 10 * 4096 });
    const stats = await copier.copyPaths(names);
    assert.equal(stats.files, names.length);
    for (const rel of names) assert.deepEqual(await readFile(join(target, rel)), Buffer.alloc(4096, 2));
    const keptDir = (await tempFilesIn(target)).find((n) => n.endsWith('.replaced'));
    assert.ok(keptDir, 'nothing was kept');
    const kept = await readdir(join(target, '.mirrorswap-tmp', keptDir));
    assert.equal(kept.length, 10, 'the budget of ten files was not kept to');
    for (const name of kept) {
      assert.deepEqual(await readFile(join(target, '.mirrorswap-tmp', keptDir, name)), Buffer.alloc(4096, 1));
    }
    await copier.clearTemp();
    assert.deepEqual(await tempFilesIn(target), []);
    assert.deepEqual(await compareTrees(source, target), []);
  });

  it('places a file in a directory of the copy its owner may not write, and gives the directory its mode back', async () => {
    const source = join(root, 'src-ro');
    const target = join(root, 'dst-ro');
    await mkdir(join(source, 'site'), { recursive: true });
    await writeFile(join(source, 'site/a.txt'), 'old');
    await mkdir(target);
    await new TreeCopier(source, target, { durable: false }).mirrorAll();
    await writeFile(join(source, 'site/a.txt'), 'new');
    await chmod(join(source, 'site'), 0o555);
    await chmod(join(target, 'site'), 0o555);
    try {
      const copier = new TreeCopier(source, target, { durable: true, keepReplacedBytes: 1 << 20 });
      await copier.copyPaths(['site/a.txt']);
      await copier.clearTemp();
      assert.equal(await readFile(join(target, 'site/a.txt'), 'utf8'), 'new');
      assert.equal((await lstat(join(target, 'site'))).mode & 0o777, 0o555);
      assert.deepEqual(await compareTrees(source, target), []);
    } finally {
      await chmod(join(source, 'site'), 0o755);
      await chmod(join(target, 'site'), 0o755);
    }
  });

  it('leaves a file whose place holds a directory to the copier, which replaces the directory', async () => {
    const source = join(root, 'src-dir');
    const target = join(root, 'dst-dir');
    await mkdir(join(source, 'site'), { recursive: true });
    await writeFile(join(source, 'site/x'), 'a file now');
    await mkdir(join(target, 'site/x/deep'), { recursive: true });
    await writeFile(join(target, 'site/x/deep/old.txt'), 'old');
    const copier = new TreeCopier(source, target, { durable: true, keepReplacedBytes: 1 << 20 });
    await copier.copyPaths(['site/x']);
    await copier.clearTemp();
    assert.equal(await readFile(join(target, 'site/x'), 'utf8'), 'a file now');
    assert.deepEqual(await tempFilesIn(target), []);
  });

  after(() => walkPool.close());
});

describe('WalkPool, a spread job', () => {
  it('goes out in one chunk to each thread running, where minChunk alone would send one', async () => {
    const root = await mkdtemp(join(tmpdir(), 'mirrorswap-spread-'));
    const pool = new WalkPool(2);
    try {
      for (let i = 0; i < 4; i++) {
        await mkdir(join(root, `d${i}`));
        await writeFile(join(root, `d${i}`, 'x'), `${i}`);
      }
      const units = (n: number) =>
        Array.from({ length: 4 }, (_, i) => ({ rel: `d${i}`, deep: true, dest: join(root, `c${n}-${i}`) }));
      await pool.run('clone', { source: root }, units(0), () => true, undefined, { startAtMost: 2 });
      const one = pool.run('clone', { source: root }, units(1), () => true, undefined, { minChunk: 64 });
      assert.equal(pool.busyThreads, 1, 'without spread, the four units go out in one chunk');
      await one;
      const spread = pool.run('clone', { source: root }, units(2), () => true, undefined, {
        minChunk: 64,
        spread: true,
      });
      assert.equal(pool.busyThreads, 2, 'each thread running takes a chunk');
      await spread;
      for (const n of [0, 1, 2]) assert.equal(await readFile(join(root, `c${n}-3`, 'x'), 'utf8'), '3');
    } finally {
      await pool.close();
      await rm(root, { recursive: true, force: true });
    }
  });
});
