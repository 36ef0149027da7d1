import assert from 'node:assert/strict';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { execFileSync } from 'node:child_process';
import { countTree } from '../../../src/tree/count-tree.js';
import { countUnitSync } from '../../../src/tree/manifest-unit.js';
import { TEMP_DIR_NAME } from '../../../src/store/store-layout.js';
import { tempDirs } from '../../../testkit/store.js';

const temp = tempDirs();
after(() => temp.removeAll());

describe('countTree (the total behind a first copy ETA)', () => {
  it('counts every file and byte under the root, in every shape, never through a link or the temp directory', async () => {
    const root = await temp.make('mirrorswap-count-');
    let files = 0;
    let bytes = 0;
    const add = async (path: string, size: number) => {
      await mkdir(join(root, path, '..'), { recursive: true });
      await writeFile(join(root, path), Buffer.alloc(size, 1));
      files++;
      bytes += size;
    };
    // one deep top directory, many small directories, one large directory, empty files
    for (let i = 0; i < 40; i++) await add(`top/a/b/c${i % 7}/f${i}`, i * 13);
    for (let d = 0; d < 30; d++) await add(`shard/${d}/x`, 100 + d);
    for (let i = 0; i < 600; i++) await add(`big/f${i}`, i % 5 === 0 ? 0 : 512);
    await add('root.txt', 4096);
    await mkdir(join(root, 'empty/dir'), { recursive: true });
    // outside the count: a link to a large tree, and the temp directory
    const elsewhere = await temp.make('mirrorswap-count-elsewhere-');
    await writeFile(join(elsewhere, 'huge'), Buffer.alloc(1 << 20));
    await symlink(elsewhere, join(root, 'link'));
    await mkdir(join(root, TEMP_DIR_NAME));
    await writeFile(join(root, TEMP_DIR_NAME, 'staged'), Buffer.alloc(1 << 16));
    // never counted, never waited on: a FIFO beside the files
    execFileSync('mkfifo', [join(root, 'shard', '0', 'fifo')]);
    assert.deepEqual(await countTree(root), { files, bytes });
  });

  it('skips what vanishes while it counts (master is written meanwhile) instead of failing', async () => {
    const root = await temp.make('mirrorswap-count-gone-');
    await mkdir(join(root, 'kept'), { recursive: true });
    await writeFile(join(root, 'kept', 'f'), 'abc');
    // the units were planned when these existed; by their turn they are gone or replaced
    assert.deepEqual(countUnitSync(root, { rel: 'gone', deep: true }), { files: 0, bytes: 0 });
    await writeFile(join(root, 'was-a-dir'), 'now a file');
    assert.deepEqual(countUnitSync(root, { rel: 'was-a-dir', deep: true }), { files: 0, bytes: 0 });
    assert.deepEqual(countUnitSync(root, { rel: '', deep: true }), { files: 2, bytes: 13 });
  });
});
