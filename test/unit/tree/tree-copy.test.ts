import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import {
  chmod,
  lstat,
  mkdir,
  mkdtemp,
  open,
  readFile,
  readdir,
  readlink,
  rm,
  stat,
  symlink,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { lstatOrNull } from '../../../src/core/lstat-or-null.js';
import { compareTrees } from '../../../src/tree/compare-trees.js';
import { TreeCopier } from '../../../src/tree/tree-copy.js';
import { tempFilesIn } from '../../../testkit/store.js';

describe('TreeCopier', () => {
  let root: string;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'mirrorswap-copy-'));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('replaces a file by a directory of many files without losing one to the replacement', async () => {
    const source = join(root, 'src1');
    const target = join(root, 'dst1');
    const names = Array.from({ length: 200 }, (_, i) => `f${i}.txt`);
    await mkdir(join(source, 'kind/x'), { recursive: true });
    for (const n of names) await writeFile(join(source, 'kind/x', n), n);
    await mkdir(join(target, 'kind'), { recursive: true });
    await writeFile(join(target, 'kind/x'), 'a file where the directory goes');
    // children listed with their parent, as the journal and the compare list them
    const stats = await new TreeCopier(source, target, { durable: false }).copyPaths([
      'kind/x',
      ...names.map((n) => `kind/x/${n}`),
    ]);
    assert.deepEqual((await readdir(join(target, 'kind/x'))).sort(), [...names].sort());
    assert.equal(await readFile(join(target, 'kind/x/f7.txt'), 'utf8'), 'f7.txt');
    assert.equal(stats.files, names.length);
  });

  it('replaces a directory by a file, and clears its temp directory', async () => {
    const source = join(root, 'src2');
    const target = join(root, 'dst2');
    await mkdir(source, { recursive: true });
    await writeFile(join(source, 'x'), 'now a file');
    await mkdir(join(target, 'x/deep'), { recursive: true });
    await writeFile(join(target, 'x/deep/old.txt'), 'old');
    await new TreeCopier(source, target, { durable: false }).copyPaths(['x', 'x/deep', 'x/deep/old.txt']);
    assert.equal(await readFile(join(target, 'x'), 'utf8'), 'now a file');
    assert.deepEqual(await readdir(target), ['x']);
  });
  it('a full copy goes on when master swaps a link for a file as it copies the directory', async () => {
    const source = join(root, 'src-swapping');
    await mkdir(join(source, 'site'), { recursive: true });
    for (let i = 0; i < 400; i++) await writeFile(join(source, `site/f${i}.txt`), `file ${i}`);
    for (let i = 0; i < 20; i++) await symlink(`f${i}.txt`, join(source, `site/l${i}`));
    // another process turns each link into a file and back, by rename, all along the copies
    const swapper = spawn(
      process.execPath,
      [
        '-e',
        `const fs = require('node:fs');
        const dir = process.argv[1];
        for (let n = 0; ; n++) {
          const name = dir + '/l' + (n % 20), tmp = dir + '/.swap';
          try {
            if (n % 40 < 20) fs.writeFileSync(tmp, 'a file now');
            else fs.symlinkSync('f0.txt', tmp);
            fs.renameSync(tmp, name);
          } catch {}
        }`,
        join(source, 'site'),
      ],
      { stdio: 'ignore' },
    );
    try {
      for (let i = 0; i < 8; i++) {
        const target = join(root, `dst-swapping-${i}`);
        await mkdir(target);
        await new TreeCopier(source, target, { durable: false }).mirrorAll();
        assert.equal(await readFile(join(target, 'site/f399.txt'), 'utf8'), 'file 399');
      }
    } finally {
      swapper.kill('SIGKILL');
    }
  });
});

describe('TreeCopier, a journal sync of paths of every kind', () => {
  let root: string;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'mirrorswap-copy-kinds-'));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  for (const durable of [false, true]) {
    it(`places each as the source has it now, never through a link (${durable ? 'durable' : 'no fsync'})`, async () => {
      const source = join(root, `src-${durable}`);
      const target = join(root, `dst-${durable}`);
      const secret = join(root, `secret-${durable}`);
      await mkdir(secret);
      await writeFile(join(secret, 'key.txt'), 'only the agent may read this');
      await mkdir(join(source, 'site/new/deeper'), { recursive: true });
      await mkdir(join(target, 'site/was-dir/inside'), { recursive: true });
      await writeFile(join(target, 'site/was-dir/inside/old.txt'), 'old');
      await writeFile(join(target, 'site/gone.txt'), 'deleted in the source');
      await writeFile(join(target, 'site/page.html'), 'old page');
      await writeFile(join(source, 'site/page.html'), 'new page');
      await chmod(join(source, 'site/page.html'), 0o640);
      const old = new Date('2020-01-02T03:04:05Z');
      await utimes(join(source, 'site/page.html'), old, old);
      await writeFile(join(source, 'site/was-dir'), 'a file where a directory was');
      await writeFile(join(source, 'site/new/deeper/f.txt'), 'under parents the target lacks');
      await symlink('page.html', join(source, 'site/alias'));
      await symlink(secret, join(source, 'site/evil'));
      await mkdir(join(target, 'site/evil')); // a directory there before master's became a link
      execFileSync('mkfifo', [join(source, 'site/pipe')]);
      const copier = new TreeCopier(source, target, { durable });
      const stats = await copier.copyPaths([
        'site/page.html',
        'site/was-dir',
        'site/new/deeper/f.txt', // listed without its parents
        'site/alias',
        'site/evil/key.txt', // a file reached through a link to a directory outside
        'site/pipe',
        'site/gone.txt',
        'site/page.html', // listed twice
      ]);
      assert.equal(await readFile(join(target, 'site/page.html'), 'utf8'), 'new page');
      const st = await stat(join(target, 'site/page.html'));
      assert.equal(st.mode & 0o777, 0o640);
      assert.equal(Math.floor(st.mtimeMs), old.getTime());
      assert.equal(await readFile(join(target, 'site/was-dir'), 'utf8'), 'a file where a directory was');
      assert.equal(await readFile(join(target, 'site/new/deeper/f.txt'), 'utf8'), 'under parents the target lacks');
      assert.equal(await readlink(join(target, 'site/alias')), 'page.html');
      assert.equal(await lstatOrNull(join(target, 'site/evil/key.txt')), null, 'a file copied through a link');
      assert.equal(await lstatOrNull(join(target, 'site/pipe')), null, 'a FIFO published');
      assert.equal(await lstatOrNull(join(target, 'site/gone.txt')), null);
      assert.equal(stats.files, 3 + 1); // page, was-dir, f.txt, and the link
      assert.deepEqual(await readdir(target), ['site'], 'the temp directory is left behind');
    });
  }

  it('a directory master made a link is placed as the link, whatever paths below it the journal names too', async () => {
    const source = join(root, 'src-now-link');
    const target = join(root, 'dst-now-link');
    for (const tree of [source, target]) {
      await mkdir(join(tree, 'site/d/sub'), { recursive: true });
      await writeFile(join(tree, 'site/d/x.txt'), 'before');
    }
    // master's directory became a link to a sibling holding the same names: the journal names them all
    await rm(join(source, 'site/d'), { recursive: true });
    await mkdir(join(source, 'site/e/sub'), { recursive: true });
    await writeFile(join(source, 'site/e/x.txt'), 'after');
    await symlink('e', join(source, 'site/d'));
    await new TreeCopier(source, target, { durable: false }).copyPaths([
      'site/d/x.txt',
      'site/d/sub',
      'site/d',
      'site/e',
    ]);
    assert.equal(await readlink(join(target, 'site/d')), 'e', 'the link was replaced by a directory');
    assert.equal(await readFile(join(target, 'site/e/x.txt'), 'utf8'), 'after');
    assert.deepEqual(await compareTrees(source, target), []);
  });

  it('never places a file through a link in the target where the source now has a directory', async () => {
    const source = join(root, 'src-link-parent');
    const target = join(root, 'dst-link-parent');
    const victim = join(root, 'victim');
    await mkdir(victim);
    await mkdir(join(source, 'site/x'), { recursive: true });
    await writeFile(join(source, 'site/x/f.txt'), 'belongs in the slot');
    await mkdir(join(target, 'site'), { recursive: true });
    // the target still has the link master had there before (or one someone put there)
    await symlink(victim, join(target, 'site/x'));
    await new TreeCopier(source, target, { durable: false }).copyPaths(['site/x/f.txt']);
    assert.deepEqual(await readdir(victim), [], 'a file was written through the link, outside the target');
    assert.ok((await lstat(join(target, 'site/x'))).isDirectory());
    assert.equal(await readFile(join(target, 'site/x/f.txt'), 'utf8'), 'belongs in the slot');
  });

  it('keepReplacedBytes: what the copy replaced or deleted waits in the temp directory until clearTemp, never in the tree', async () => {
    const source = join(root, 'src-keep');
    const target = join(root, 'dst-keep');
    await mkdir(join(source, 'site'), { recursive: true });
    await mkdir(join(target, 'site/old-dir/deep'), { recursive: true });
    await writeFile(join(target, 'site/old-dir/deep/x.txt'), 'in a directory the source deleted');
    await writeFile(join(target, 'site/page.html'), 'old page');
    await writeFile(join(source, 'site/page.html'), 'new page');
    await writeFile(join(source, 'site/added.txt'), 'added');
    // a reader holding the old page open keeps reading the old page
    const reader = await open(join(target, 'site/page.html'), 'r');
    try {
      const copier = new TreeCopier(source, target, { durable: true, keepReplacedBytes: 1024 * 1024 });
      await copier.copyPaths(['site/page.html', 'site/added.txt', 'site/old-dir']);
      assert.equal(await readFile(join(target, 'site/page.html'), 'utf8'), 'new page');
      assert.equal(await readFile(join(target, 'site/added.txt'), 'utf8'), 'added');
      assert.equal(await lstatOrNull(join(target, 'site/old-dir')), null);
      assert.deepEqual((await readdir(join(target, 'site'))).sort(), ['added.txt', 'page.html']);
      assert.ok((await tempFilesIn(target)).length > 0, 'nothing was kept aside');
      assert.equal((await reader.readFile()).toString(), 'old page');
      await copier.clearTemp();
      assert.deepEqual(await readdir(target), ['site']);
    } finally {
      await reader.close();
    }
  });

  it('keepReplacedBytes: past the budget a replaced file is freed as it is replaced; a large file is copied whole', async () => {
    const source = join(root, 'src-budget');
    const target = join(root, 'dst-budget');
    await mkdir(source, { recursive: true });
    await mkdir(target, { recursive: true });
    const names = Array.from({ length: 8 }, (_, i) => `f${i}.bin`);
    for (const n of names) {
      await writeFile(join(target, n), Buffer.alloc(4096, 1));
      await writeFile(join(source, n), Buffer.alloc(4096, 2));
    }
    // larger than what is staged in the walk threads: copied by path
    const big = Buffer.alloc(3 * 1024 * 1024 + 5, 7);
    await writeFile(join(target, 'big.bin'), 'old');
    await writeFile(join(source, 'big.bin'), big);
    const copier = new TreeCopier(source, target, { durable: true, keepReplacedBytes: 3 * 4096 });
    await copier.copyPaths([...names, 'big.bin']);
    for (const n of names) assert.deepEqual(await readFile(join(target, n)), Buffer.alloc(4096, 2));
    assert.deepEqual(await readFile(join(target, 'big.bin')), big);
    // three files fit the budget; the temp directory holds them (as links), and nothing else was kept
    const keptDir = (await tempFilesIn(target)).find((n) => n.endsWith('.replaced'));
    assert.ok(keptDir);
    assert.equal((await readdir(join(target, '.mirrorswap-tmp', keptDir))).length, 3);
    await copier.clearTemp();
    assert.deepEqual(await tempFilesIn(target), []);
  });

  it('clearTemp removes what was kept and an interrupted copy leftovers (a read-only tree, a link out), never through a link', async () => {
    const source = join(root, 'src-leftovers');
    const target = join(root, 'dst-leftovers');
    const victim = join(root, 'victim-leftovers');
    await mkdir(source, { recursive: true });
    await mkdir(victim, { recursive: true });
    await writeFile(join(victim, 'keep.txt'), 'outside the copy');
    await mkdir(target, { recursive: true });
    await writeFile(join(target, 'a.txt'), 'old');
    await writeFile(join(source, 'a.txt'), 'new');
    // what a copy killed midway leaves: loose files, a tree it made read-only, a link out of the copy
    const tmp = join(target, '.mirrorswap-tmp');
    await mkdir(join(tmp, 'staged/deep'), { recursive: true });
    await writeFile(join(tmp, 'staged/deep/f'), 'staged');
    await chmod(join(tmp, 'staged/deep'), 0o500);
    await chmod(join(tmp, 'staged'), 0o500);
    await writeFile(join(tmp, 'loose'), 'loose');
    await symlink(victim, join(tmp, 'out'));
    const copier = new TreeCopier(source, target, { durable: false, keepReplacedBytes: 1024 * 1024 });
    await copier.copyPaths(['a.txt']);
    assert.ok(
      (await tempFilesIn(target)).some((n) => n.endsWith('.replaced')),
      'nothing was kept aside',
    );
    await copier.clearTemp();
    assert.deepEqual(await readdir(target), ['a.txt']);
    assert.equal(await readFile(join(target, 'a.txt'), 'utf8'), 'new');
    assert.deepEqual(await readdir(victim), ['keep.txt'], 'removed through the link');
    // a copy after it keeps again, in a temp directory made anew, and clears it
    await writeFile(join(source, 'a.txt'), 'newer');
    await copier.copyPaths(['a.txt']);
    assert.ok((await tempFilesIn(target)).some((n) => n.endsWith('.replaced')));
    await copier.clearTemp();
    assert.deepEqual(await readdir(target), ['a.txt']);
  });

  it('clearTemp of a temp directory that is a link (drift) removes the link, nothing through it', async () => {
    const source = join(root, 'src-tmp-link');
    const target = join(root, 'dst-tmp-link');
    const victim = join(root, 'victim-tmp-link');
    await mkdir(source, { recursive: true });
    await mkdir(target, { recursive: true });
    await mkdir(victim, { recursive: true });
    await writeFile(join(victim, 'keep.txt'), 'outside the copy');
    await symlink(victim, join(target, '.mirrorswap-tmp'));
    await new TreeCopier(source, target, { durable: false }).clearTemp();
    assert.deepEqual(await readdir(victim), ['keep.txt'], 'removed through the link');
    assert.equal(await lstatOrNull(join(target, '.mirrorswap-tmp')), null, 'the link is left');
  });
});

describe("TreeCopier, sharing another copy's files", () => {
  let root: string;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'mirrorswap-share-'));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  /** A source, a copy to share with and an empty target, each file given the same mtime. */
  async function trees(name: string, files: Record<string, [source: string, share: string]>) {
    const [source, share, target] = ['source', 'share', 'target'].map((t) => join(root, name, t)) as [
      string,
      string,
      string,
    ];
    const when = new Date('2026-01-02T03:04:05Z');
    for (const [rel, [a, b]] of Object.entries(files)) {
      for (const [dir, body] of [
        [source, a],
        [share, b],
      ] as const) {
        await mkdir(join(dir, rel, '..'), { recursive: true });
        await writeFile(join(dir, rel), body);
        await utimes(join(dir, rel), when, when);
      }
    }
    await mkdir(target, { recursive: true });
    return { source, share, target };
  }
  const sameFile = async (a: string, b: string) => (await stat(a)).ino === (await stat(b)).ino;

  it('links a file of the same bytes; copies one whose bytes differ though size and mtime agree', async () => {
    const { source, share, target } = await trees('compared', {
      'same.txt': ['abc', 'abc'],
      'other.txt': ['abc', 'xyz'],
    });
    const copier = new TreeCopier(source, target, { durable: false, share });
    await copier.copyPaths(['same.txt', 'other.txt']);
    assert.ok(await sameFile(join(target, 'same.txt'), join(share, 'same.txt')));
    assert.ok(!(await sameFile(join(target, 'other.txt'), join(share, 'other.txt'))));
    assert.equal(await readFile(join(target, 'other.txt'), 'utf8'), 'abc');
    assert.equal(copier.sharedFiles, 1);
  });

  it('a settled path is linked from the shared copy without reading master; what is no regular file there comes from master', async () => {
    // master's file differs here only to show it is not read: a settled path is one the journal
    // shows master left as it was when the shared copy was made at it
    const { source, share, target } = await trees('settled', {
      'kept.txt': ['master', 'shared'],
      'gone.txt': ['from master', 'x'],
      'escape/inner.txt': ['from master', 'x'],
    });
    await rm(join(share, 'gone.txt'));
    // a link in the shared copy, where master has a directory: never followed
    const outside = join(root, 'settled', 'outside');
    await mkdir(outside);
    await writeFile(join(outside, 'inner.txt'), 'outside');
    await rm(join(share, 'escape'), { recursive: true });
    await symlink(outside, join(share, 'escape'));
    const settled = new Set(['kept.txt', 'gone.txt', 'escape/inner.txt']);
    const copier = new TreeCopier(source, target, { durable: false, share, settled });
    await copier.copyPaths([...settled]);
    assert.ok(await sameFile(join(target, 'kept.txt'), join(share, 'kept.txt')));
    assert.equal(await readFile(join(target, 'gone.txt'), 'utf8'), 'from master');
    assert.equal(await readFile(join(target, 'escape/inner.txt'), 'utf8'), 'from master');
    assert.ok(!(await sameFile(join(target, 'escape/inner.txt'), join(outside, 'inner.txt'))));
    assert.equal(copier.sharedFiles, 1);
  });

  it('settled paths without a copy to share with are copied from master', async () => {
    const { source, target } = await trees('unshared', { 'a.txt': ['master', 'shared'] });
    await new TreeCopier(source, target, { durable: false, settled: new Set(['a.txt']) }).copyPaths(['a.txt']);
    assert.equal(await readFile(join(target, 'a.txt'), 'utf8'), 'master');
  });
});

describe('TreeCopier, modes', () => {
  it('copies permission bits only: setuid, setgid and sticky bits are masked off, by a full copy and by path', async () => {
    const root = await mkdtemp(join(tmpdir(), 'mirrorswap-copy-modes-'));
    try {
      const source = join(root, 'src');
      const target = join(root, 'dst');
      await mkdir(join(source, 'shared/group'), { recursive: true });
      await mkdir(target);
      const files = { 'setuid.sh': 0o4755, 'setgid.txt': 0o2644, 'shared/group/both': 0o6750 };
      for (const [path, mode] of Object.entries(files)) {
        await writeFile(join(source, path), path === 'shared/group/both' ? Buffer.alloc(2 * 1024 * 1024) : path);
        await chmod(join(source, path), mode);
      }
      await chmod(join(source, 'shared'), 0o1777);
      await chmod(join(source, 'shared/group'), 0o2755);
      const modeOf = async (p: string) => (await lstat(join(target, p))).mode & 0o7777;
      const expect = async () => {
        assert.equal(await modeOf('setuid.sh'), 0o755);
        assert.equal(await modeOf('setgid.txt'), 0o644);
        assert.equal(await modeOf('shared/group/both'), 0o750);
        assert.equal(await modeOf('shared'), 0o777);
        assert.equal(await modeOf('shared/group'), 0o755);
      };
      await new TreeCopier(source, target, { durable: false }).mirrorAll();
      await expect();
      // the same paths copied again by name (a journal sync), over a tree that lost its modes
      await rm(target, { recursive: true });
      await mkdir(target);
      await new TreeCopier(source, target, { durable: false }).copyPaths(['setuid.sh', 'setgid.txt', 'shared']);
      await expect();
      // and nothing is left for a comparison to find: the masked modes are what a copy must hold
      assert.deepEqual(await new TreeCopier(source, target, { durable: false }).mirrorAll(), []);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it("a whole compare finds a directory whose mode changed, and the copy gives it master's", async () => {
    const root = await mkdtemp(join(tmpdir(), 'mirrorswap-copy-modes-'));
    try {
      const source = join(root, 'src');
      const target = join(root, 'dst');
      await mkdir(join(source, 'a/b'), { recursive: true });
      await mkdir(join(source, 'c'), { recursive: true });
      await writeFile(join(source, 'a/b/f.txt'), 'f');
      await mkdir(target);
      await new TreeCopier(source, target, { durable: false }).mirrorAll();
      await chmod(join(source, 'a/b'), 0o555);
      await chmod(join(source, 'c'), 0o750);
      const found = await new TreeCopier(source, target, { durable: false }).mirrorAll();
      assert.deepEqual(found.sort(), ['a/b', 'c']);
      assert.equal((await lstat(join(target, 'a/b'))).mode & 0o7777, 0o555);
      assert.equal((await lstat(join(target, 'c'))).mode & 0o7777, 0o750);
      await chmod(join(source, 'a/b'), 0o755);
      await chmod(join(target, 'a/b'), 0o755);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
