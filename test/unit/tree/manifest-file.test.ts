import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, readdir, rename, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { Snapshots } from '../../../src/fleet/coordinator/snapshots.js';
import { ManifestFile, writeManifestAnswer } from '../../../src/tree/manifest-file.js';
import { hashFileSync } from '../../../src/tree/manifest-unit.js';
import { type Manifest, type ManifestEntry, diffManifests, readManifest } from '../../../src/tree/manifest.js';
import { tempDirs } from '../../../testkit/store.js';

const temp = tempDirs();
after(() => temp.removeAll());

/** A run per walk unit: a small tree goes through every stage of a large one. */
const SMALL = { unitsPerRun: 1 };
const T = new Date('2026-01-02T03:04:05Z');

/**
 * Names whose order differs between a path and its JSON spelling, or
 * between UTF-16 and bytes: "-" and "." sort before "/", a quote and a
 * backslash are escaped, an astral character is two code units.
 */
const NAMES = ['a', 'a-b', 'a.b', 'a b', 'q"uote', 'back\\slash', 'é', '😀', 'z\ttab', 'Zed', '0'];

async function makeTree(root: string): Promise<void> {
  await mkdir(root, { recursive: true });
  for (const top of NAMES) {
    await mkdir(join(root, top));
    for (const name of NAMES) await writeFile(join(root, top, name), `${top}/${name}`);
    await writeFile(join(root, `${top}.txt`), `file ${top}`);
  }
  await symlink('a/a', join(root, 'link'));
  await symlink('nowhere', join(root, 'a', 'dangling'));
  await mkdir(join(root, 'empty'));
}

interface Answer {
  snapshot: string;
  base: string | null;
  changed: ManifestEntry[];
  removed: string[];
}

const byPath = (entries: readonly ManifestEntry[]) => [...entries].sort((x, y) => (x.path < y.path ? -1 : 1));

async function answerOf(target: ManifestFile, base: { id: string; manifest: ManifestFile } | null): Promise<Answer> {
  const file = `${target.file}.answer-${base?.id ?? 'whole'}`;
  const bytes = await writeManifestAnswer(file, 'S', target, base);
  const text = await readFile(file, 'utf8');
  assert.equal(Buffer.byteLength(text), bytes, 'the size said is the size written');
  return JSON.parse(text) as Answer;
}

describe('manifests on disk', () => {
  it('hold what a walk in memory finds (with hashes), through runs and a merge, whatever the names', async () => {
    const dir = await temp.make('mirrorswap-manifest-file-');
    const root = join(dir, 'tree');
    await makeTree(root);
    const inMemory = await readManifest(root, { cache: new Map(), seen: new Map() });
    const file = await ManifestFile.write(root, join(dir, 'm'), null, SMALL);
    assert.equal(file.entries, inMemory.length);
    assert.equal(file.hashed, inMemory.filter((e) => e.type === 'file').length);
    const whole = await answerOf(file, null);
    assert.deepEqual(whole, { snapshot: 'S', base: null, changed: whole.changed, removed: [] });
    assert.deepEqual(byPath(whole.changed), byPath(inMemory));
    // the runs are gone; only the manifest and the answer are left
    assert.deepEqual((await readdir(dir)).sort(), ['m', 'm.answer-whole', 'tree']);
  });

  it('a delta is the one the objects make: changed, removed, a type change both', async () => {
    const dir = await temp.make('mirrorswap-manifest-delta-');
    const root = join(dir, 'tree');
    await makeTree(root);
    const before: Manifest = await readManifest(root, { cache: new Map(), seen: new Map() });
    const base = await ManifestFile.write(root, join(dir, 'base'), null, SMALL);
    await writeFile(join(root, 'a', 'a-b'), 'new content');
    await utimes(join(root, 'a', 'a-b'), T, T);
    await writeFile(join(root, '😀', 'new'), 'new file');
    await rename(join(root, 'q"uote'), join(root, 'moved'));
    await writeFile(join(root, 'Zed.txt.tmp'), 'x');
    await rename(join(root, 'Zed.txt.tmp'), join(root, 'é.txt')); // same name, new inode, other content
    await (await import('node:fs/promises')).rm(join(root, 'a.b'), { recursive: true });
    await writeFile(join(root, 'a.b'), 'a directory became a file');
    const after: Manifest = await readManifest(root, { cache: new Map(), seen: new Map() });
    const target = await ManifestFile.write(root, join(dir, 'target'), base, SMALL);
    const delta = await answerOf(target, { id: 'B', manifest: base });
    const expected = diffManifests(before, after);
    assert.equal(delta.base, 'B');
    assert.deepEqual(byPath(delta.changed), byPath(expected.changed));
    assert.deepEqual([...delta.removed].sort(), [...expected.removed].sort());
    assert.ok(delta.removed.includes('a.b'), 'a directory that became a file is removed, then made');
    assert.ok(
      delta.changed.some((e) => e.path === 'é.txt'),
      'a file replaced by one of another content',
    );
    // nothing changed: an empty delta
    const again = await ManifestFile.write(root, join(dir, 'again'), target, SMALL);
    assert.deepEqual(await answerOf(again, { id: 'T', manifest: target }), {
      snapshot: 'S',
      base: 'T',
      changed: [],
      removed: [],
    });
  });

  it('reads only files written since the manifest it is given: the same inode, change time and size', async () => {
    const dir = await temp.make('mirrorswap-manifest-cache-');
    const root = join(dir, 'tree');
    await makeTree(root);
    const first = await ManifestFile.write(root, join(dir, '1'), null, SMALL);
    const second = await ManifestFile.write(root, join(dir, '2'), first, SMALL);
    assert.equal(second.hashed, 0, 'nothing rewritten: nothing read');
    // the same size and time, other bytes, a new inode: only content tells it apart
    await writeFile(join(root, 'a', 'x.tmp'), 'a/Z');
    await utimes(join(root, 'a', 'x.tmp'), T, T);
    await rename(join(root, 'a', 'x.tmp'), join(root, 'a', 'a'));
    const third = await ManifestFile.write(root, join(dir, '3'), second, SMALL);
    assert.equal(third.hashed, 1);
    const [a] = [...(await third.files(['a/a'])).values()];
    const [old] = [...(await second.files(['a/a'])).values()];
    assert.notEqual(a?.hash, old?.hash);
    const changed = (await answerOf(third, { id: '2', manifest: second })).changed.map((e) => e.path);
    assert.deepEqual(changed, ['a', 'a/a'], 'the file, and its directory (the rename changed its time)');
  });

  it('finds files by path across its index, and nothing that is not a file of it', async () => {
    const dir = await temp.make('mirrorswap-manifest-lookup-');
    const root = join(dir, 'tree');
    await mkdir(join(root, 'd'), { recursive: true });
    for (let i = 0; i < 1000; i++) await writeFile(join(root, 'd', `f${i}`), `content ${i}`);
    // names whose JSON order is not their own (a quote, a backslash, "!" before '"', an astral character),
    // enough of them to span several stretches of the index
    for (const top of ['a!', 'a"', 'a\\', 'a😀', 'a\u{ffff}']) {
      await mkdir(join(root, top));
      for (let i = 0; i < 150; i++) await writeFile(join(root, top, `${NAMES[i % NAMES.length]}${i}`), `${top} ${i}`);
    }
    const file = await ManifestFile.write(root, join(dir, 'm'), null);
    const inMemory = await readManifest(root, { cache: new Map(), seen: new Map() });
    const files = inMemory.filter((e) => e.type === 'file');
    const asked = files.map((e) => e.path).reverse();
    const found = await file.files([...asked, 'd', 'a"', 'missing', 'd/f1/under', '', '\u0000']);
    assert.equal(found.size, files.length, 'every file, none of the rest (a directory, a path not there)');
    for (const e of files) assert.deepEqual(found.get(e.path), { size: e.size, hash: e.hash }, e.path);
  });
});

describe('hashing a file the walk saw', () => {
  it('refuses a FIFO or a link put in its place, or a parent made a link, at once (never waits on a FIFO)', async () => {
    const dir = await temp.make('mirrorswap-manifest-hash-');
    const root = join(dir, 'tree');
    await mkdir(join(root, 'real'), { recursive: true });
    await writeFile(join(root, 'real', 'f'), 'bytes');
    execFileSync('mkfifo', [join(root, 'fifo')]);
    await symlink('real', join(root, 'linked'));
    await symlink('real/f', join(root, 'flink'));
    assert.equal(hashFileSync(root, 'real/f'), createHash('sha256').update('bytes').digest('hex'));
    assert.throws(() => hashFileSync(root, 'fifo'), /no longer a regular file/);
    assert.throws(() => hashFileSync(root, 'linked/f'), /through a link/);
    assert.throws(() => hashFileSync(root, 'flink'), /through a link/);
    assert.throws(() => hashFileSync(root, 'gone'), /is gone/);
    // another file renamed over the walked one: not hashed as if it were the one walked
    const { ino, size } = await stat(join(root, 'real', 'f'));
    const rootDev = (await stat(root)).dev;
    assert.equal(hashFileSync(root, 'real/f', { ino, size, rootDev }).length, 64);
    await writeFile(join(root, 'real', 'g'), 'other');
    await rename(join(root, 'real', 'g'), join(root, 'real', 'f'));
    assert.throws(() => hashFileSync(root, 'real/f', { ino, size, rootDev }), /replaced since it was walked/);
  });

  it('refuses a file reached through a parent swapped for a link to another file system, whatever its inode', async (t) => {
    const dir = await temp.make('mirrorswap-manifest-hash-dev-');
    const root = join(dir, 'tree');
    await mkdir(root, { recursive: true });
    // another file system: an inode number there names another file than the same number here
    const elsewhere = await mkdtemp(join('/dev/shm', 'mirrorswap-other-fs-')).catch(() => null);
    if (elsewhere === null || (await stat(elsewhere)).dev === (await stat(root)).dev) {
      t.skip('no second file system to link to');
      return;
    }
    try {
      await writeFile(join(elsewhere, 'f'), 'secret');
      await symlink(elsewhere, join(root, 'dir'));
      // the walk saw dir/f with this inode and size (as if a file of the tree had them): still refused
      const { ino, size } = await stat(join(elsewhere, 'f'));
      const rootDev = (await stat(root)).dev;
      assert.throws(() => hashFileSync(root, 'dir/f', { ino, size, rootDev }), /through a link/);
    } finally {
      await rm(elsewhere, { recursive: true, force: true });
    }
  });
});

describe('snapshots keep their manifests on disk', () => {
  it('make each answer once, and keep the files of the last four snapshots and the slots only', async () => {
    const dir = await temp.make('mirrorswap-snapshots-disk-');
    const slots = { a: join(dir, 'a'), b: join(dir, 'b') };
    const manifests = join(dir, 'manifests');
    await mkdir(manifests);
    await writeFile(join(manifests, 'left-by-an-earlier-process'), 'x');
    await makeTree(slots.a);
    await makeTree(slots.b);
    const snapshots = new Snapshots(slots, manifests);
    assert.deepEqual(await readdir(manifests), [], 'emptied at start');
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) {
      const slot = i % 2 === 0 ? 'a' : 'b';
      await writeFile(join(slots[slot], `round-${i}`), String(i));
      if (i >= 2) await snapshots.release(slot, 1000);
      ids.push(await snapshots.take(slot));
      const answers = await Promise.all([
        snapshots.answer(ids[i] as string, null),
        snapshots.answer(ids[i] as string, null),
      ]);
      assert.equal(answers[0], answers[1], 'one answer made for both');
      if (i > 0) await snapshots.answer(ids[i] as string, ids[i - 1] as string);
    }
    await new Promise((r) => setTimeout(r, 50)); // removals run behind
    const names = await readdir(manifests);
    assert.equal(names.filter((n) => n.endsWith('.manifest')).length, 4, names.join(' '));
    assert.ok(names.filter((n) => n.startsWith('answer-')).length <= 7, names.join(' '));
    await assert.rejects(snapshots.answer(ids[0] as string, null), /not known/);
    // a snapshot adopted again (a restart's recorded position): its newest manifest, one file for it
    await snapshots.adopt('b', ids[5] as string);
    await snapshots.adopt('b', ids[5] as string);
    await new Promise((r) => setTimeout(r, 50));
    const again = await readdir(manifests);
    assert.equal(again.filter((n) => n.endsWith('.manifest')).length, 4, again.join(' '));
    assert.ok((await snapshots.answer(ids[5] as string, null)).bytes > 0);
    const delta = JSON.parse(await readFile((await snapshots.answer(ids[5] as string, ids[3] as string)).file, 'utf8'));
    assert.deepEqual(
      delta.changed.map((e: ManifestEntry) => e.path),
      ['round-5'],
      'slot b since its own last snapshot',
    );
  });
});
