import assert from 'node:assert/strict';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { compareTrees } from '../../../src/tree/compare-trees.js';
import { MasterWalks, type WalkProgress } from '../../../src/agent/master/master-walks.js';
import { MasterWatcher } from '../../../src/agent/master/master-watcher.js';
import { TreeCopier } from '../../../src/tree/tree-copy.js';
import { RecentRate, describeWalk } from '../../../src/cli/progress.js';
import { tempDirs } from '../../../testkit/store.js';
import { countEntries } from '../../../testkit/trees.js';

// How status shows a full sync's walk, through a live agent over 6,000 files, is in the full tier:
// test/agent/master-walks.test.ts.

const temp = tempDirs();
after(() => temp.removeAll());

/**
 * A tree of every shape a walk cuts differently: one deep top directory
 * (cut into units), many small directories, one large one, links, empty
 * directories, files at the root.
 */
async function mixedTree(root: string): Promise<void> {
  for (let a = 0; a < 5; a++)
    for (let b = 0; b < 6; b++) {
      await mkdir(join(root, 'deep', `a${a}`, `b${b}`), { recursive: true });
      for (let f = 0; f < 3; f++) await writeFile(join(root, 'deep', `a${a}`, `b${b}`, `f${f}`), `${a}${b}${f}`);
    }
  for (let d = 0; d < 40; d++) {
    await mkdir(join(root, 'shard', String(d)), { recursive: true });
    await writeFile(join(root, 'shard', String(d), 'x'), String(d));
  }
  await mkdir(join(root, 'big'));
  for (let i = 0; i < 700; i++) await writeFile(join(root, 'big', `f${i}`), String(i));
  await mkdir(join(root, 'empty', 'inner'), { recursive: true });
  await symlink('big/f1', join(root, 'alias'));
  await symlink('/etc', join(root, 'big', 'out'));
  await writeFile(join(root, 'index.html'), 'top');
}

describe('walks of master count every entry once (the progress and ETA of full operations)', () => {
  it('a compare, a full copy into an empty or half-filled copy, and the watcher at start each count master whole', async () => {
    const master = await temp.make('mirrorswap-walks-master-');
    await mixedTree(master);
    const entries = await countEntries(master);

    const sum = () => {
      const total = { n: 0 };
      const onWalked = (k: number) => {
        total.n += k;
      };
      return { total, onWalked };
    };

    // against an empty copy: every entry reported missing, each listed once
    const empty = await temp.make('mirrorswap-walks-empty-');
    const cmp = sum();
    await compareTrees(master, empty, { onWalked: cmp.onWalked });
    assert.equal(cmp.total.n, entries);

    // a full copy: the compare lists what is there, the clone walks what is missing
    const first = sum();
    await new TreeCopier(master, empty, { durable: false }).mirrorAll(first.onWalked);
    assert.equal(first.total.n, entries);
    assert.deepEqual(await compareTrees(master, empty), []);

    // against an equal copy, and a half-filled one (some directories present, some not)
    const same = sum();
    await compareTrees(master, empty, { onWalked: same.onWalked, missingDirsWhole: true });
    assert.equal(same.total.n, entries);
    const half = await temp.make('mirrorswap-walks-half-');
    await mkdir(join(half, 'deep', 'a1'), { recursive: true });
    await mkdir(join(half, 'shard', '3'), { recursive: true });
    await writeFile(join(half, 'shard', '3', 'x'), 'stale');
    await writeFile(join(half, 'big'), 'a file where master has a directory');
    const halfSum = sum();
    await new TreeCopier(master, half, { durable: false }).mirrorAll(halfSum.onWalked);
    assert.equal(halfSum.total.n, entries);
    assert.deepEqual(await compareTrees(master, half), []);

    // the watcher's listing at start
    const watcher = new MasterWatcher({
      root: master,
      own: new Map(),
      fenceDir: join(await temp.make('mirrorswap-walks-fence-'), 'fence'),
      onChanges: () => {},
      onIncomplete: () => {},
    });
    await watcher.start();
    await watcher.close();
    assert.equal(watcher.entriesAtStart, entries);
  });

  it('a walk cut short does not change what master is known to hold; a whole one does, and the next walk expects it', async () => {
    const walks = new MasterWalks();
    assert.equal(walks.entries, null);
    let seen: WalkProgress[] = [];
    await walks.track('verify', 'a', async (onWalked) => {
      onWalked(40);
      onWalked(2);
      seen = walks.list();
      return 'done';
    });
    assert.equal(seen.length, 1);
    assert.deepEqual(
      { ...seen[0], startedAt: '' },
      { purpose: 'verify', slot: 'a', entries: 42, expected: null, startedAt: '' },
    );
    assert.equal(walks.entries, 42);
    assert.deepEqual(walks.list(), []);
    await walks.track(
      'verify',
      'b',
      async (onWalked) => {
        onWalked(5);
        seen = walks.list();
        return [1, 2, 3];
      },
      (found) => found.length < 3, // reached its limit: not the whole tree
    );
    assert.equal(seen[0]?.expected, 42);
    assert.equal(walks.entries, 42);
    await assert.rejects(
      walks.track('sync', 'a', async (onWalked) => {
        onWalked(1000);
        throw new Error('disk full');
      }),
      /disk full/,
    );
    assert.equal(walks.entries, 42, 'a failed walk says nothing of the whole tree');
    assert.deepEqual(walks.list(), []);
  });

  it('keeps walks that run at once apart (a verify during a full sync), each with its own count', async () => {
    const walks = new MasterWalks();
    walks.entries = 100;
    let release: () => void = () => {};
    const gate = new Promise<void>((r) => {
      release = r;
    });
    let syncTick: (n: number) => void = () => {};
    const sync = walks.track('sync', 'b', async (onWalked) => {
      syncTick = onWalked;
      onWalked(10);
      await gate;
      onWalked(95);
    });
    const verify = walks.track('verify', 'a', async (onWalked) => {
      onWalked(7);
      syncTick(20);
      assert.deepEqual(
        walks
          .list()
          .map((w) => [w.purpose, w.slot, w.entries, w.expected])
          .sort(),
        [
          ['sync', 'b', 30, 100],
          ['verify', 'a', 7, 100],
        ],
      );
      return [];
    });
    await verify;
    assert.equal(walks.entries, 7, 'the verify ended first: its count is what is known');
    release();
    await sync;
    assert.equal(walks.entries, 125, 'then the sync, with its own count');
    assert.deepEqual(walks.list(), []);
  });

  it('describes a walk: count, share of the last known size, rate and ETA; past the estimate, no ETA', () => {
    const start = Date.parse('2026-01-01T00:00:00Z');
    const walk = (entries: number, expected: number | null): WalkProgress => ({
      purpose: 'sync',
      slot: 'b',
      entries,
      expected,
      startedAt: new Date(start).toISOString(),
    });
    assert.equal(
      describeWalk(walk(250_000, 1_000_000), start + 10_000),
      'full sync against slot b: 250000 of ~1000000 entries, 25000 entries/s, 25%, ETA 30s',
    );
    assert.equal(
      describeWalk(walk(1_100_000, 1_000_000), start + 10_000),
      'full sync against slot b: 1100000 entries, 110000 entries/s',
    );
    assert.equal(describeWalk(walk(0, null), start), 'full sync against slot b: 0 entries');
    assert.equal(
      describeWalk({ ...walk(10, 100), purpose: 'verify' }, start + 1000, {
        files: 3,
        bytes: 1048576,
        deleted: 1,
        dirs: 0,
        skipped: 0,
        unreadable: 0,
      }),
      'verify against slot b: 10 of ~100 entries, 10 entries/s, 10%, ETA 9s, copied 3 files, 1.0 MiB, deleted 1',
    );
  });
});

describe('RecentRate (the ETA of a walk that slows down)', () => {
  it('follows the last seconds, not the average since the start, and starts over when the count goes back', () => {
    const rate = new RecentRate(5000);
    assert.equal(rate.add(0, 0), undefined);
    let count = 0;
    let last: number | undefined;
    // a compare at 100,000 entries/s for 3 s, then a copy at 10,000 entries/s
    for (let ms = 200; ms <= 15_000; ms += 200) {
      count += ms <= 3000 ? 20_000 : 2_000;
      last = rate.add(ms, count);
      if (ms === 3000) assert.equal(Math.round(last ?? 0), 100_000);
    }
    assert.equal(Math.round(last ?? 0), 10_000, 'the average since the start would say 28,000');
    assert.equal(rate.add(15_200, 10), undefined, 'a new walk');
    assert.equal(Math.round(rate.add(16_200, 1010) ?? 0), 1000);
  });
});
