import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { TreeCopier } from '../../src/agent/tree-copy.js';

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
});
