import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { lstatOrNull } from '../../../src/core/lstat-or-null.js';
import { directoryIndexPath } from '../../../src/store/content-index.js';
import { readCopyIndex } from '../../../src/store/recent-records.js';
import type { VariantSettings } from '../../../src/tree/compressible.js';
import { TREE_DEFAULTS } from '../../../src/tree/tree-defaults.js';
import { TreeCopier } from '../../../src/tree/tree-copy.js';
import { compressibleText } from '../../../testkit/variants.js';

const settings = TREE_DEFAULTS.variantSettings;
const dirs = Array.from({ length: 8 }, (_, i) => `d${i}`);

describe('a copy whose derive for new settings failed midway', () => {
  let root: string;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'mirrorswap-selection-'));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  const copier = (master: string, slot: string, over: Partial<VariantSettings>, cutShort = false) =>
    new TreeCopier(master, slot, {
      durable: false,
      variants: { settings: { ...settings, ...over }, other: null },
      cutShort,
    });

  // an immutable index file (chattr +i: root included) stands for any failure of the derive after it began
  it('is derived whole by its next sync, whatever settings it runs with: no variant of the settings that failed is left', {
    skip: process.getuid?.() !== 0 && 'chattr +i needs root',
  }, async (t) => {
    const master = join(root, 'master');
    const a = join(root, 'a');
    for (const d of [master, a]) await mkdir(d, { recursive: true });
    for (const d of dirs) {
      await mkdir(join(master, d));
      await writeFile(join(master, d, 'app.js'), compressibleText(d, 8192));
    }
    const brOnly: Partial<VariantSettings> = { encodings: ['br'] };
    await copier(master, a, brOnly).mirrorAll();
    const locked = directoryIndexPath(a, 'd5');
    assert.ok(await lstatOrNull(locked));
    if (spawnSync('chattr', ['+i', locked]).status !== 0) {
      t.skip('this file system takes no chattr +i');
      return;
    }
    try {
      // gzip turned on: the whole copy is derived for it, and its index in d5 cannot be written
      await assert.rejects(copier(master, a, {}).copyPaths([]));
    } finally {
      spawnSync('chattr', ['-i', locked]);
    }
    // back to brotli alone (the sync after a failed one runs as after a copy cut short)
    await copier(master, a, brOnly, true).copyPaths([]);
    for (const d of dirs) {
      const record = (await readCopyIndex(a, d))?.files['app.js'];
      assert.deepEqual(Object.keys(record?.variants ?? {}), ['br'], `${d}: its index names a variant not selected`);
      assert.equal(await lstatOrNull(join(a, d, 'app.js.gz')), null, `${d}: a gz variant left`);
    }
  });
});
