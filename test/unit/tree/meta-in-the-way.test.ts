import assert from 'node:assert/strict';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { contentHash, directoryIndexPath } from '../../../src/store/content-index.js';
import { readCopyIndex } from '../../../src/store/recent-records.js';
import { META_DIR_NAME } from '../../../src/store/store-layout.js';
import { walkPool } from '../../../src/tree/walk-pool.js';
import type { TempStore } from '../../../testkit/store.js';
import { checkCopyIndex, compressibleText as text, indexedSlot } from '../../../testkit/variants.js';

describe('something else where a meta file of the copy, or its directory, goes', () => {
  const stores: TempStore[] = [];
  after(async () => {
    await Promise.all(stores.map((s) => s.dispose()));
    await walkPool.close();
  });

  const cases: [string, (slot: string) => Promise<void>][] = [
    [
      'a directory at the index of a directory',
      async (slot) => {
        const index = directoryIndexPath(slot, 'd');
        await rm(index);
        await mkdir(join(index, 'x'), { recursive: true });
      },
    ],
    [
      'a file at the directory of indexes',
      async (slot) => {
        await rm(join(slot, META_DIR_NAME, 'index'), { recursive: true });
        await writeFile(join(slot, META_DIR_NAME, 'index'), 'x');
      },
    ],
    [
      'a file at the meta directory',
      async (slot) => {
        await rm(join(slot, META_DIR_NAME), { recursive: true });
        await writeFile(join(slot, META_DIR_NAME), 'x');
      },
    ],
  ];
  for (const [what, drift] of cases) {
    it(`${what}: wedges no sync (a small one, one that names the directory), and the records are written`, async () => {
      const { store, a, copier } = await indexedSlot(stores);
      await drift(a);
      for (const [round, paths] of [
        ['v1', ['d/app.js']],
        ['v2', ['d']],
      ] as const) {
        await writeFile(join(store.master, 'd/app.js'), text(`${round} app`));
        await copier().copyPaths(paths);
        const record = (await readCopyIndex(a, 'd'))?.files['app.js'];
        assert.equal(record?.sha256, contentHash(await readFile(join(a, 'd/app.js'))), `${round}: recorded`);
        await checkCopyIndex(a);
      }
    });
  }
});
