import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { lstatOrNull } from '../../../src/core/lstat-or-null.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { execFileSync } from 'node:child_process';
import { readdirSync, unlinkSync } from 'node:fs';
import { type FileRecord, contentHash, directoryIndexPath, stampMatches } from '../../../src/store/content-index.js';
import {
  readCopyIndex,
  readRecentRecords,
  recentRecordsPath,
  writeRecentRecordsSync,
} from '../../../src/store/recent-records.js';
import { TREE_DEFAULTS } from '../../../src/tree/tree-defaults.js';
import { TreeCopier } from '../../../src/tree/tree-copy.js';
import { within } from '../../../testkit/wait.js';

const settings = TREE_DEFAULTS.variantSettings;

describe("a copy's recent records", () => {
  let root: string;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'mirrorswap-recent-'));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  const setup = async (name: string) => {
    const master = join(root, name, 'master');
    const a = join(root, name, 'a');
    for (const d of [master, a]) await mkdir(d, { recursive: true });
    return { master, a };
  };
  /** A copier whose journal syncs keep their records in the recent ones (it keeps what it replaces). */
  const collecting = (master: string, slot: string) =>
    new TreeCopier(master, slot, {
      durable: false,
      keepReplacedBytes: 1024 * 1024,
      variants: { settings, other: null },
    });
  const plain = (master: string, slot: string, cutShort = false) =>
    new TreeCopier(master, slot, { durable: false, variants: { settings, other: null }, cutShort });

  /**
   * A slot whose index of `d` holds a stale record of `d/logo.png` (A's bytes) that stamp-matches
   * the file there now (B's bytes): what ext4's reuse of a freed inode number makes of a record a
   * tombstone of the recent ones hid, under a build that gives every file the same time. The
   * recent records name the path with its true record.
   */
  const staleUnderRecent = async (name: string) => {
    const { master, a } = await setup(name);
    const time = new Date(2020, 0, 1);
    await mkdir(join(master, 'd'));
    const put = async (bytes: string) => {
      await writeFile(join(master, 'd/logo.png'), bytes);
      await utimes(join(master, 'd/logo.png'), time, time);
    };
    await put('A'.repeat(5000));
    await plain(master, a).mirrorAll();
    const stale = (await readCopyIndex(a, 'd'))?.files['logo.png'];
    assert.ok(stale);
    await put('B'.repeat(5000));
    const sync = collecting(master, a);
    await sync.copyPaths(['d/logo.png']);
    await sync.clearTemp();
    assert.ok(await stat(recentRecordsPath(a)), 'a small sync keeps its records in the recent ones');
    // the index's record of A, given the inode number B's file has now
    const st = await stat(join(a, 'd/logo.png'));
    const index = JSON.parse(await readFile(directoryIndexPath(a, 'd'), 'utf8')) as {
      files: Record<string, FileRecord>;
    };
    index.files['logo.png'] = { ...stale, ino: st.ino };
    await writeFile(directoryIndexPath(a, 'd'), JSON.stringify(index));
    const truth = (await readCopyIndex(a, 'd'))?.files['logo.png'];
    assert.equal(truth?.sha256, contentHash(Buffer.from('B'.repeat(5000))), 'the recent record stands over the index');
    return { master, a };
  };

  /** The record readers take of `rel` now: none, or one true to its bytes. */
  const checkNoWrongRecord = async (slot: string, rel: string, what: string) => {
    const cut = rel.lastIndexOf('/');
    const record = (await readCopyIndex(slot, rel.slice(0, cut)))?.files[rel.slice(cut + 1)];
    const st = await stat(join(slot, rel));
    if (record === undefined || !stampMatches(record, st)) return;
    assert.equal(record.sha256, contentHash(await readFile(join(slot, rel))), `${what}: a wrong record of ${rel}`);
  };

  it('torn: no reader takes an index record the recent ones may have replaced', async () => {
    const { a } = await staleUnderRecent('torn-readers');
    await writeFile(recentRecordsPath(a), '{"v":1,"files":{"d/lo'); // cut short by a crash
    await checkNoWrongRecord(a, 'd/logo.png', 'a server reading a torn file');
  });

  it('torn: the next derive folds no index record the recent ones may have replaced', async () => {
    const { master, a } = await staleUnderRecent('torn-derive');
    await writeFile(recentRecordsPath(a), '');
    await writeFile(join(master, 'other.txt'), 'other');
    await collecting(master, a).copyPaths(['other.txt']);
    await checkNoWrongRecord(a, 'd/logo.png', 'the derive after a torn file');
  });

  it('a write cut short after setting the old file aside leaves the old file in place, never none', async () => {
    const { a } = await staleUnderRecent('aside-window');
    const before = await readRecentRecords(a);
    assert.notEqual(before, 'torn');
    await mkdir(join(a, '.mirrorswap-tmp'), { recursive: true });
    // what a crash right after the old file is set aside leaves: the new one never renamed in
    // (here its temp file is taken away as the set-aside name is asked for)
    const cut = () => {
      for (const n of readdirSync(join(a, '.mirrorswap-tmp')))
        if (n.startsWith('recent-')) unlinkSync(join(a, '.mirrorswap-tmp', n));
      return join(a, '.mirrorswap-tmp', 'aside.recent');
    };
    assert.throws(() => writeRecentRecordsSync(a, { 'd/other.txt': null }, cut));
    assert.deepEqual(await readRecentRecords(a), before, 'the recent records were lost');
    await checkNoWrongRecord(a, 'd/logo.png', 'a reader once the write was cut short');
  });

  it('a hand-edited file naming a path through a link or into the temp directory takes no derive there', async () => {
    const { master, a } = await setup('hostile-paths');
    const outside = join(root, 'hostile-paths', 'outside');
    await mkdir(outside);
    const js = 'function f(a, b) { return a + b; }\n'.repeat(300);
    await writeFile(join(outside, 'x.js'), js);
    await symlink(outside, join(master, 'L'));
    await writeFile(join(master, 'other.txt'), 'other');
    await plain(master, a).mirrorAll();
    await writeFile(
      recentRecordsPath(a),
      JSON.stringify({ v: 1, files: { 'L/x.js': null, 'L/y.js': null, '.mirrorswap-tmp/z.js': null } }),
    );
    await mkdir(join(a, '.mirrorswap-tmp'), { recursive: true });
    await writeFile(join(a, '.mirrorswap-tmp/z.js'), js);
    await writeFile(join(outside, 'y.js.br'), 'not a variant of ours');
    await writeFile(join(master, 'other.txt'), 'other, changed');
    await mkdir(join(master, 'made'));
    await writeFile(join(master, 'made/n.txt'), 'new');
    // a sync that folds the recent records in (it makes a directory: not a small sync's collect)
    await plain(master, a).copyPaths(['other.txt', 'made/n.txt']);
    assert.deepEqual((await readdir(outside)).sort(), ['x.js', 'y.js.br'], 'written outside the copy');
    assert.equal(await lstatOrNull(directoryIndexPath(a, 'L')), null, 'an index of a link');
    assert.equal(await lstatOrNull(directoryIndexPath(a, '.mirrorswap-tmp')), null, 'an index of the temp directory');
    assert.equal(await lstatOrNull(recentRecordsPath(a)), null, 'folded and removed');
  });

  it('something other than a regular file at recent.json (a FIFO) holds no derive: read as torn, and removed', async () => {
    const { master, a } = await setup('fifo');
    await writeFile(join(master, 'x.txt'), 'x');
    await plain(master, a).mirrorAll();
    execFileSync('mkfifo', [recentRecordsPath(a)]);
    await writeFile(join(master, 'x.txt'), 'x, changed');
    const sync = collecting(master, a).copyPaths(['x.txt']);
    await within(sync, 5000, 'the derive');
    const left = await lstatOrNull(recentRecordsPath(a));
    assert.ok(left === null || left.isFile(), 'the FIFO was left');
    await checkNoWrongRecord(a, 'x.txt', 'after the FIFO');
  });
});
