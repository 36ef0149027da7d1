import assert from 'node:assert/strict';
import { lstat, mkdir, mkdtemp, readFile, rename, rm, unlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { gunzipSync, gzipSync } from 'node:zlib';
import { contentHash } from '../../../src/store/content-index.js';
import { readCopyIndex } from '../../../src/store/recent-records.js';
import { TEMP_DIR_NAME } from '../../../src/store/store-layout.js';
import { TREE_DEFAULTS } from '../../../src/tree/tree-defaults.js';
import { TreeCopier } from '../../../src/tree/tree-copy.js';
import { walkPool } from '../../../src/tree/walk-pool.js';
import { checkCopyIndex, compressibleText as text } from '../../../testkit/variants.js';

const settings = TREE_DEFAULTS.variantSettings;

/**
 * Free the inode `ino` (the last link to it is `path`) so that the next
 * file made in `dir` takes it, as ext4 hands out the lowest free inode
 * number of a group: every lower one free is taken first by a filler
 * (in `dir`, left there). False when the kernel did not hand it out so.
 */
async function freeForNext(path: string, ino: number, dir: string): Promise<boolean> {
  await unlink(path);
  for (let i = 0; i < 200_000; i++) {
    const filler = join(dir, `filler-${i}`);
    await writeFile(filler, '');
    const got = (await lstat(filler)).ino;
    if (got === ino) {
      await unlink(filler); // free again, and the lowest free: the next file made takes it
      return true;
    }
    if (got > ino) return false;
  }
  return false;
}

/**
 * The state a sync killed after its copy moved `rel` out of the copy at `slot`
 * (`keepReplacedBytes`: aside, in its temp directory), before its derive or
 * recent records said so: the slot is marked mid-copy, and the next sync's
 * copier (cutShort) frees what is kept there before it copies. Here that
 * freeing is done so that the next file the copy makes takes the inode
 * number `rel` had, as the kernel may (the test's bad luck made certain).
 */
async function cutShortAfterRemoving(slot: string, rel: string): Promise<boolean> {
  const kept = join(slot, TEMP_DIR_NAME, 'x.replaced');
  await mkdir(kept, { recursive: true });
  const ino = (await lstat(join(slot, rel))).ino;
  await rename(join(slot, rel), join(kept, '0'));
  return freeForNext(join(kept, '0'), ino, join(slot, TEMP_DIR_NAME));
}

describe('a copy cut short after it removed a file, synced again', () => {
  let root: string;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'mirrorswap-reused-inode-'));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
    await walkPool.close();
  });

  it('names no gzip variant of a file whose sibling master sent again, other bytes, in the inode of the one removed', async (t) => {
    const master = join(root, 'm1');
    const a = join(root, 'a1');
    for (const d of [master, a]) await mkdir(d, { recursive: true });
    const app = Buffer.from(text('the app', 8192));
    const gz = gzipSync(app, { level: 9 });
    await writeFile(join(master, 'app.js'), app);
    await writeFile(join(master, 'app.js.gz'), gz); // master's own sibling: decodes to app.js
    await new TreeCopier(master, a, { durable: false, variants: { settings, other: null } }).mirrorAll();
    assert.equal((await readCopyIndex(a, ''))?.files['app.js']?.variants?.gzip?.made, false);
    // a release without the sibling: its sync is killed once the copy has moved it aside; the next
    // release has one again: as large, other bytes (a stored gzip of something else)
    const other = gzipSync(Buffer.alloc(gz.length - 23, 'x'), { level: 0 });
    assert.equal(other.length, gz.length);
    await writeFile(join(master, 'app.js.gz'), other);
    if (!(await cutShortAfterRemoving(a, 'app.js.gz'))) return t.skip('the kernel did not hand out the inode freed');
    // the sync after the restart: the journal names the sibling
    await new TreeCopier(master, a, { durable: false, variants: { settings, other: null }, cutShort: true }).copyPaths([
      'app.js.gz',
    ]);
    // every record a server takes is true to the bytes it names
    const record = (await readCopyIndex(a, ''))?.files['app.js'];
    const sibling = await lstat(join(a, 'app.js.gz'));
    const named = record?.variants?.gzip;
    if (named && named.ino === sibling.ino && named.size === sibling.size) {
      assert.ok(
        gunzipSync(await readFile(join(a, 'app.js.gz'))).equals(app),
        'the index names as app.js’s gzip variant a file that decodes to other bytes',
      );
    }
    await checkCopyIndex(a);
  });

  it('records the hash of a large file master sent again, other bytes of the same size and time, in the inode of the one removed', async (t) => {
    const master = join(root, 'm2');
    const a = join(root, 'a2');
    for (const d of [master, a]) await mkdir(d, { recursive: true });
    const time = new Date(2020, 0, 1); // a build whose files all have one time (SOURCE_DATE_EPOCH)
    const big = Buffer.from(text('release one', 2 * 1024 * 1024)); // more than a staged file: no hash from the copy
    await writeFile(join(master, 'big.js'), big);
    await utimes(join(master, 'big.js'), time, time);
    await new TreeCopier(master, a, { durable: false, variants: { settings, other: null } }).mirrorAll();
    assert.ok((await readCopyIndex(a, ''))?.files['big.js']?.variants?.gzip, 'a variant made');
    // a release without it (its sync killed once the copy moved it aside), then one with it again
    const again = Buffer.from(text('release two', 2 * 1024 * 1024));
    assert.equal(again.length, big.length);
    await writeFile(join(master, 'big.js'), again);
    await utimes(join(master, 'big.js'), time, time);
    if (!(await cutShortAfterRemoving(a, 'big.js'))) return t.skip('the kernel did not hand out the inode freed');
    await new TreeCopier(master, a, { durable: false, variants: { settings, other: null }, cutShort: true }).copyPaths([
      'big.js',
    ]);
    const record = (await readCopyIndex(a, ''))?.files['big.js'];
    const st = await lstat(join(a, 'big.js'));
    if (record && record.ino === st.ino && record.size === st.size && record.mtimeMs === st.mtimeMs) {
      assert.equal(
        record.sha256,
        contentHash(again),
        'a record current by its stamp has the bytes of the release before',
      );
    }
    await checkCopyIndex(a);
  });
});
