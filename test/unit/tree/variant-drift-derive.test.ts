import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { brotliDecompressSync } from 'node:zlib';
import { contentHash } from '../../../src/store/content-index.js';
import { readCopyIndex } from '../../../src/store/recent-records.js';
import type { TempStore } from '../../../testkit/store.js';
import { TREE_DEFAULTS } from '../../../src/tree/tree-defaults.js';
import { TreeCopier } from '../../../src/tree/tree-copy.js';
import { checkCopyIndex, flipInPlace, indexedSlot } from '../../../testkit/variants.js';

/**
 * A made variant rewritten in place in the standby (drift: inode and size
 * kept, other bytes, a time of its own). The derive kept its record, as it
 * checked inode and size only, and the bad bytes stayed for good: servers
 * that check the time send the file as it is instead, but nginx's
 * gzip_static, which reads no index, sends them.
 */
describe('derive: a made variant that drifted in place is made again', () => {
  const stores: TempStore[] = [];
  after(async () => {
    for (const store of stores) await store.dispose();
  });

  it('a full copy replaces it and records the bytes it holds', async () => {
    const { a, copier } = await indexedSlot(stores);
    const br = join(a, 'd/app.js.br');
    await flipInPlace(br);
    await copier().mirrorAll();
    const original = await readFile(join(a, 'd/app.js'));
    const bytes = await readFile(br);
    assert.ok(brotliDecompressSync(bytes).equals(original), 'the br variant decodes to its original again');
    const record = (await readCopyIndex(a, 'd'))?.files['app.js'];
    const vst = await stat(br);
    assert.equal(record?.variants?.br?.sha256, contentHash(bytes), 'and its record has its hash');
    assert.equal(record?.variants?.br?.ino, vst.ino);
    assert.equal(Math.floor(vst.mtimeMs), Math.floor(record?.mtimeMs ?? -1), "with its original's mtime");
  });
});

/**
 * The same drift in the other copy, the one a copy reuses variants from:
 * its record stands by inode and size, its time is not its original's. A
 * link was refused (not the new original's time), and the bytes were
 * copied instead, under the record's hash: a variant that decodes to
 * garbage, in a copy of its own, with a strong ETag of other bytes.
 */
describe('derive: a drifted variant of the other copy is not reused', () => {
  const stores: TempStore[] = [];
  after(async () => {
    for (const store of stores) await store.dispose();
  });

  it('a full copy of the standby makes its own instead, and every variant it records decodes to its original', async () => {
    const { store, a } = await indexedSlot(stores);
    await flipInPlace(join(a, 'd/app.js.br'));
    const b = store.slots.b;
    const copier = new TreeCopier(store.master, b, {
      durable: false,
      variants: { settings: TREE_DEFAULTS.variantSettings, other: a },
    });
    await copier.mirrorAll();
    const original = await readFile(join(b, 'd/app.js'));
    assert.ok(brotliDecompressSync(await readFile(join(b, 'd/app.js.br'))).equals(original), 'b: br decodes');
    assert.ok((await checkCopyIndex(b)) >= 3, "b's index checked");
    assert.ok(copier.variantStats.compressed >= 1, 'the drifted one made again, not reused');
  });
});
