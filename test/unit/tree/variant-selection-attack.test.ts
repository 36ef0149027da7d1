import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { lstatOrNull } from '../../../src/core/lstat-or-null.js';
import { directoryIndexPath } from '../../../src/store/content-index.js';
import { readCopyIndex } from '../../../src/store/recent-records.js';
import type { VariantSettings } from '../../../src/tree/compressible.js';
import { TREE_DEFAULTS } from '../../../src/tree/tree-defaults.js';
import {
  MAX_VARIANT_TYPES,
  MAX_VARIANT_TYPE_LENGTH,
  variantOptionsRefusal,
  variantSettings,
} from '../../../src/agent/variant-settings.js';
import { AGENT_DEFAULTS, VARIANT_RANGES } from '../../../src/agent/agent-defaults.js';
import { recordVariantSelectionSync, staleVariantSelectionSync } from '../../../src/tree/variant-selection.js';
import { TreeCopier } from '../../../src/tree/tree-copy.js';
import { mountTmpfs } from '../../../testkit/tools.js';
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
  // a disk out of inodes (a tmpfs of few: root only) fails the clone after it placed some directories
  it('a full copy for new settings whose clone of new directories failed midway: its next sync leaves no variant of them', {
    skip: process.getuid?.() !== 0 && 'mounting a tmpfs needs root',
  }, async () => {
    const master = join(root, 'clone-master');
    const a = join(root, 'clone-a');
    for (const d of [master, a]) await mkdir(d, { recursive: true });
    const unmount = mountTmpfs(a, '16m', 40);
    try {
      await writeFile(join(master, 'app.js'), compressibleText('app', 8192));
      const brOnly: Partial<VariantSettings> = { encodings: ['br'] };
      await copier(master, a, brOnly).mirrorAll();
      // new directories in master, copied whole by the clone, which derives each as it copies it
      for (const d of [...dirs, ...dirs.map((d) => `${d}x`)]) {
        await mkdir(join(master, d));
        await writeFile(join(master, d, 'app.js'), compressibleText(d, 8192));
      }
      // gzip turned on: a full sync, whose clone runs out of inodes
      await assert.rejects(copier(master, a, {}).mirrorAll(), { code: 'ENOSPC' });
      const placed = (await readdir(a)).filter((n) => n.startsWith('d'));
      assert.ok(placed.length > 0, 'no directory placed before the failure');
      // back to brotli alone, to save room (the sync after a failed one runs as after a copy cut short)
      execFileSync('mount', ['-o', 'remount,nr_inodes=1000', a]);
      await copier(master, a, brOnly, true).mirrorAll();
      for (const d of placed) {
        assert.equal(await lstatOrNull(join(a, d, 'app.js.gz')), null, `${d}: a gz variant left`);
        const record = (await readCopyIndex(a, d))?.files['app.js'];
        assert.deepEqual(Object.keys(record?.variants ?? {}), ['br'], `${d}: its index names a variant not selected`);
      }
    } finally {
      unmount();
    }
  });
});

describe("the largest selection the agent's options allow", () => {
  it('is recorded and read back: a copy following it is not derived whole at every sync', async () => {
    const slot = await mkdtemp(join(tmpdir(), 'mirrorswap-selection-'));
    try {
      await mkdir(join(slot, '.mirrorswap-tmp'));
      const types = Array.from({ length: MAX_VARIANT_TYPES }, (_, i) => `${i}`.padStart(MAX_VARIANT_TYPE_LENGTH, 'x'));
      const opts = {
        ...AGENT_DEFAULTS,
        variantTypes: types,
        variantMinSize: VARIANT_RANGES.variantMinSize[1],
        variantMinSaving: VARIANT_RANGES.variantMinSaving[1],
      };
      variantOptionsRefusal(opts); // allowed
      const largest = variantSettings(opts) as VariantSettings;
      const selection = staleVariantSelectionSync(slot, largest);
      assert.ok(selection !== null, 'a copy with no record follows no selection');
      recordVariantSelectionSync(slot, selection);
      assert.equal(staleVariantSelectionSync(slot, largest), null);
    } finally {
      await rm(slot, { recursive: true, force: true });
    }
  });
});
