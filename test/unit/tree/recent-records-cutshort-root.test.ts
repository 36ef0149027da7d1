import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, unlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { readCopyIndex } from '../../../src/store/recent-records.js';
import { TREE_DEFAULTS } from '../../../src/tree/tree-defaults.js';
import { TreeCopier } from '../../../src/tree/tree-copy.js';

const settings = TREE_DEFAULTS.variantSettings;

describe('a copy cut short, then synced whole', () => {
  let root: string;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'mirrorswap-cutshort-'));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('keeps no record of a root file the cut-short copy removed (its inode number is free for a new file)', async () => {
    const master = join(root, 'master');
    const a = join(root, 'a');
    for (const d of [master, a, join(master, 'd')]) await mkdir(d, { recursive: true });
    const time = new Date(2020, 0, 1);
    // larger than a staged file: a later copy of it gives the derive no hash to check a record against
    await writeFile(join(master, 'big.bin'), randomBytes(2 * 1024 * 1024));
    await utimes(join(master, 'big.bin'), time, time);
    await writeFile(join(master, 'keep.txt'), 'kept');
    await writeFile(join(master, 'd/x.txt'), 'x');
    await new TreeCopier(master, a, { durable: false, variants: { settings, other: null } }).mirrorAll();
    assert.ok((await readCopyIndex(a, ''))?.files['big.bin'], 'recorded');
    // a sync removes big.bin and is killed after the removal, before its derive (or its recent
    // records) said so: the slot stays marked mid-copy
    await unlink(join(master, 'big.bin'));
    await unlink(join(a, 'big.bin'));
    // the next sync compares whole (the journal is not trusted after the restart)
    await new TreeCopier(master, a, {
      durable: false,
      variants: { settings, other: null },
      cutShort: true,
    }).mirrorAll();
    assert.equal(
      (await readCopyIndex(a, ''))?.files['big.bin'],
      undefined,
      'a record of a file gone stays, for a new file of the same size and time taking its inode number',
    );
  });
});
