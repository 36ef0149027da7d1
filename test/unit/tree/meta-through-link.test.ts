import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { contentHash } from '../../../src/store/content-index.js';
import { readCopyIndex } from '../../../src/store/recent-records.js';
import { META_DIR_NAME } from '../../../src/store/store-layout.js';
import { walkPool } from '../../../src/tree/walk-pool.js';
import type { TempStore } from '../../../testkit/store.js';
import { compressibleText as text, indexedSlot } from '../../../testkit/variants.js';

describe('a link at the meta directory of a copy, or at its directory of indexes, to a directory outside it', () => {
  const stores: TempStore[] = [];
  const outsides: string[] = [];
  after(async () => {
    await Promise.all(stores.map((s) => s.dispose()));
    await Promise.all(outsides.map((d) => rm(d, { recursive: true, force: true })));
    await walkPool.close();
  });

  for (const [what, linkAt] of [
    ['the meta directory', (slot: string) => join(slot, META_DIR_NAME)],
    ['the directory of indexes', (slot: string) => join(slot, META_DIR_NAME, 'index')],
  ] as const) {
    it(`at ${what}: nothing is written or removed through it, and the copy's records are written in the copy`, async () => {
      const { store, a, copier } = await indexedSlot(stores);
      // a hand's drift: the meta directory (or its index) made a link to someone else's directory
      const outside = await mkdtemp(join(tmpdir(), 'mirrorswap-outside-'));
      outsides.push(outside);
      await mkdir(join(outside, 'index'));
      await writeFile(join(outside, 'index', 'theirs'), 'theirs');
      await writeFile(join(outside, 'theirs'), 'theirs');
      const before = [...(await readdir(outside, { recursive: true }))].sort();
      await rm(linkAt(a), { recursive: true });
      await symlink(what === 'the meta directory' ? outside : join(outside, 'index'), linkAt(a));
      for (const [round, paths] of [
        ['v1', ['d/app.js']],
        ['v2', ['d']],
      ] as const) {
        await writeFile(join(store.master, 'd/app.js'), text(`${round} app`));
        await copier().copyPaths(paths);
        assert.deepEqual(
          [...(await readdir(outside, { recursive: true }))].sort(),
          before,
          `${round}: outside untouched`,
        );
        assert.equal(await readFile(join(outside, 'index', 'theirs'), 'utf8'), 'theirs');
        const record = (await readCopyIndex(a, 'd'))?.files['app.js'];
        assert.equal(record?.sha256, contentHash(await readFile(join(a, 'd/app.js'))), `${round}: recorded`);
      }
    });
  }
});
