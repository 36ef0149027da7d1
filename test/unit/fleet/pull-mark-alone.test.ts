import assert from 'node:assert/strict';
import { mkdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { readCopyIndex } from '../../../src/store/recent-records.js';
import { TREE_DEFAULTS } from '../../../src/tree/tree-defaults.js';
import { TreeCopier } from '../../../src/tree/tree-copy.js';
import { msInside } from '../../../src/tree/copy-times.js';
import { contentCoordinator, pullInto } from '../../../testkit/fleet-content.js';
import { tempDirs } from '../../../testkit/store.js';
import { compressibleText as text } from '../../../testkit/variants.js';

const temp = tempDirs();
after(() => temp.removeAll());

/** Whether the index of the copy at `root` records `app.js`'s br sibling as made by the agent (null: no such variant). */
async function brMade(root: string): Promise<boolean | null> {
  return (await readCopyIndex(root, ''))?.files['app.js']?.variants?.br?.made ?? null;
}

/**
 * A snapshot's entry whose only change is its `made` mark: master comes to
 * hold, as its own, the very bytes the agent had made (same size, time, mode
 * and hash), or stops holding them and the agent makes the same again. A
 * delta that leaves the entry out leaves the host's record saying the
 * opposite of the coordinator's copy: a file served by name on one and not
 * found on the other.
 */
describe("a fleet host follows a variant's made mark when nothing else of it changed", () => {
  it("made by the agent, then master's own with the same bytes and time, then the agent's again", async () => {
    const root = await temp.make('mirrorswap-mark-alone-');
    const master = join(root, 'master');
    const slots = { a: join(root, 'a'), b: join(root, 'b') };
    const into = join(root, 'host');
    for (const d of [master, slots.a, slots.b, into]) await mkdir(d, { recursive: true });
    await writeFile(join(master, 'app.js'), text('app'));
    const variants = { settings: TREE_DEFAULTS.variantSettings, other: null };
    const copier = () => new TreeCopier(master, slots.a, { durable: false, variants });
    await copier().mirrorAll();
    assert.equal(await brMade(slots.a), true, 'the agent made app.js.br');
    const { snapshots, url, close } = await contentCoordinator(slots, root);
    try {
      const first = await snapshots.take('a');
      await pullInto(url, first, null, into);
      assert.equal(await brMade(into), true);

      // master ships the agent's own bytes as its file, first under another time (so the copy takes
      // it), then under its original's time: the entry ends as it was but for the mark
      const made = await readFile(join(slots.a, 'app.js.br'));
      const original = await stat(join(master, 'app.js'));
      await writeFile(join(master, 'app.js.br'), made);
      await utimes(join(master, 'app.js.br'), msInside(original.atimeMs), msInside(original.mtimeMs - 60_000));
      await copier().copyPaths(['app.js.br']);
      // (a Date may land a nanosecond below its millisecond: the agent's own way of setting a time)
      await utimes(join(master, 'app.js.br'), msInside(original.atimeMs), msInside(original.mtimeMs));
      await copier().copyPaths(['app.js.br']);
      assert.equal(await brMade(slots.a), false, "the coordinator's copy: master's own");
      const second = await snapshots.take('a');
      await pullInto(url, second, first, into);
      assert.equal(await brMade(into), false, "the host still records master's own app.js.br as made: a 404 by name");

      // and back: master drops it, and the agent makes the same bytes again, under the same time
      await rm(join(master, 'app.js.br'));
      await copier().copyPaths(['app.js.br']);
      assert.equal(await brMade(slots.a), true, 'the agent made it again');
      assert.deepEqual(await readFile(join(slots.a, 'app.js.br')), made, 'the same bytes');
      const third = await snapshots.take('a');
      await pullInto(url, third, second, into);
      assert.equal(
        await brMade(into),
        true,
        "the host still records the agent's app.js.br as master's: served by name",
      );
    } finally {
      await close();
    }
  });
});
