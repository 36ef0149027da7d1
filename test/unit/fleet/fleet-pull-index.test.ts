import assert from 'node:assert/strict';
import { mkdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { lstatOrNull } from '../../../src/core/lstat-or-null.js';
import { stampMatches } from '../../../src/store/content-index.js';
import { readCopyIndex } from '../../../src/store/recent-records.js';
import { TREE_DEFAULTS } from '../../../src/tree/tree-defaults.js';
import { TreeCopier } from '../../../src/tree/tree-copy.js';
import { contentCoordinator, killedPull, pullInto } from '../../../testkit/fleet-content.js';
import { tempDirs } from '../../../testkit/store.js';
import { checkCopyIndex, compressibleText as text } from '../../../testkit/variants.js';

const temp = tempDirs();
after(() => temp.removeAll());

/** A master, a coordinator's two slots and a host's slot, empty, in a new temp directory. */
async function stores(prefix: string) {
  const root = await temp.make(prefix);
  const master = join(root, 'master');
  const slots = { a: join(root, 'a'), b: join(root, 'b') };
  const into = join(root, 'host');
  for (const d of [master, slots.a, slots.b, into]) await mkdir(d, { recursive: true });
  return { root, master, slots, into };
}

describe('a fleet pull indexes what it pulled', () => {
  it("records each file's hash and the snapshot's variants that decode to it, the same hashes as the agent's copy", async () => {
    const { root, master, slots, into } = await stores('mirrorswap-fleet-index-');
    await mkdir(join(master, 'js'));
    for (let i = 0; i < 5; i++) await writeFile(join(master, `js/m${i}.js`), text(`m${i}`));
    await writeFile(join(master, 'own.js'), text('own'));
    await writeFile(join(master, 'own.js.gz'), 'master says this is gzip; it is not');
    const variants = { settings: TREE_DEFAULTS.variantSettings, other: null };
    await new TreeCopier(master, slots.a, { durable: false, variants }).mirrorAll();
    const { snapshots, url, close } = await contentCoordinator(slots, root);
    try {
      const pull = (snapshot: string, base: string | null) => pullInto(url, snapshot, base, into, true);
      const first = await snapshots.take('a');
      await pull(first, null);
      // 5 files with two variants each, and own.js's br: checked to decode to their originals
      assert.equal(await checkCopyIndex(into), 11);
      const [agentIndex, hostIndex] = [await readCopyIndex(slots.a, 'js'), await readCopyIndex(into, 'js')];
      assert.equal(hostIndex?.files['m3.js']?.sha256, agentIndex?.files['m3.js']?.sha256, 'the same strong ETag');
      const own = (await readCopyIndex(into, ''))?.files['own.js'];
      assert.equal(own?.variants?.gzip, undefined, "master's own .gz that is no gzip of it is no variant");
      // a change and a delete reach the host's index by the next (incremental) pull
      await writeFile(join(master, 'js/m0.js'), text('changed'));
      await rm(join(master, 'js/m1.js'));
      await new TreeCopier(master, slots.a, { durable: false, variants }).copyPaths(['js/m0.js', 'js/m1.js']);
      const second = await snapshots.take('a');
      await pull(second, first);
      const after = await readCopyIndex(into, 'js');
      assert.equal(after?.files['m1.js'], undefined);
      assert.equal(after?.files['m0.js']?.sha256, (await readCopyIndex(slots.a, 'js'))?.files['m0.js']?.sha256);
      assert.ok(after?.files['m0.js']?.variants?.br);
      assert.equal(await checkCopyIndex(into), 9);
      assert.equal(await readFile(join(into, 'own.js.gz'), 'utf8'), 'master says this is gzip; it is not');
    } finally {
      await close();
    }
  });

  it('a directory pulled again where one was removed is indexed afresh: no record of the old one stands', async () => {
    // the removed directory's index stays; ext4 gives freed inode numbers to the next files made, so
    // a file of the new directory may take its namesake's, with other bytes under the same size and
    // time (a build that sets every time alike). Which file takes which number varies (files are
    // placed by several threads): some rounds of a hundred files each
    const { root, master, slots, into } = await stores('mirrorswap-fleet-index-again-');
    const variants = { settings: TREE_DEFAULTS.variantSettings, other: null };
    const sync = () => new TreeCopier(master, slots.a, { durable: false, variants }).copyPaths(['d']);
    const time = new Date(2020, 0, 1);
    const { snapshots, url, close } = await contentCoordinator(slots, root);
    try {
      let base: string | null = null;
      const pull = async () => {
        const snapshot = await snapshots.take('a');
        await pullInto(url, snapshot, base, into);
        base = snapshot;
      };
      for (let round = 0; round < 4; round++) {
        await mkdir(join(master, 'd'));
        for (let i = 0; i < 100; i++) {
          await writeFile(join(master, `d/f${i}.png`), `${String.fromCharCode(65 + round).repeat(5000)}${i}`);
          await utimes(join(master, `d/f${i}.png`), time, time);
        }
        await sync();
        await pull();
        await checkCopyIndex(into).catch((err: Error) => assert.fail(`round ${round}: ${err.message}`));
        await rm(join(master, 'd'), { recursive: true });
        await sync();
        await pull();
        assert.equal(await lstatOrNull(join(into, 'd')), null);
      }
    } finally {
      await close();
    }
  });
  it('a pull killed once files are in place, then a whole pull: every file has its record, at the root too', async () => {
    const { root, master, slots, into } = await stores('mirrorswap-fleet-index-killed-');
    await mkdir(join(master, 'js'));
    const paths = [
      ...Array.from({ length: 60 }, (_, i) => `r${i}.js`),
      ...Array.from({ length: 60 }, (_, i) => `js/m${i}.js`),
    ];
    for (const p of paths) await writeFile(join(master, p), text(`v1 ${p}`));
    const variants = { settings: TREE_DEFAULTS.variantSettings, other: null };
    await new TreeCopier(master, slots.a, { durable: false, variants }).mirrorAll();
    const { snapshots, url, close } = await contentCoordinator(slots, root);
    try {
      const first = await snapshots.take('a');
      await pullInto(url, first, null, into);
      for (const p of paths) await writeFile(join(master, p), text(`v2 ${p}`));
      await new TreeCopier(master, slots.a, { durable: false, variants }).copyPaths(paths);
      const second = await snapshots.take('a');
      // a host process pulls the change and is killed (SIGKILL) once 40 files are in place
      await killedPull(root, url, second, first, into, 40);
      // the slot is unfinished: the next pull compares the whole manifest with it
      await pullInto(url, second, null, into);
      const unindexed: string[] = [];
      for (const p of paths) {
        const cut = p.lastIndexOf('/');
        const record = (await readCopyIndex(into, cut < 0 ? '' : p.slice(0, cut)))?.files[p.slice(cut + 1)];
        if (!record || !stampMatches(record, await stat(join(into, p)))) unindexed.push(p);
      }
      assert.deepEqual(unindexed, [], 'files with no current record');
      assert.equal(await checkCopyIndex(into), 2 * paths.length);
    } finally {
      await close();
    }
  });
});
