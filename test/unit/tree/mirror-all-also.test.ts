import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { compareTrees } from '../../../src/tree/compare-trees.js';
import { TreeCopier } from '../../../src/tree/tree-copy.js';
import { tempDirs } from '../../../testkit/store.js';
import { countEntries } from '../../../testkit/trees.js';

const temp = tempDirs();
after(() => temp.removeAll());

/**
 * A full sync also copies the paths the journal recorded (`mirrorAll`'s
 * `also`). The journal records a directory as a whole (one renamed into
 * master, or whose own mode or time changed): the compare has walked it
 * already, so walking it again costs a second compare of its tree, and
 * its entries are counted twice in what becomes master's known size (the
 * next walk's progress and ETA).
 */
describe("mirrorAll's also: a directory the journal recorded is walked once", () => {
  it('the sum of onWalked is master in entries, a recorded directory and a file in it among also', async () => {
    const master = await temp.make('mirrorswap-also-master-');
    await mkdir(join(master, 'big'));
    for (let i = 0; i < 300; i++) await writeFile(join(master, 'big', `f${i}`), String(i));
    await writeFile(join(master, 'index.html'), 'top');
    const entries = await countEntries(master);
    const copy = await temp.make('mirrorswap-also-copy-');
    await new TreeCopier(master, copy, { durable: false }).mirrorAll();
    assert.deepEqual(await compareTrees(master, copy), []);

    let walked = 0;
    await new TreeCopier(master, copy, { durable: false }).mirrorAll(
      (n) => {
        walked += n;
      },
      ['big', 'big/f1', 'index.html'],
    );
    assert.equal(walked, entries, 'entries counted twice: the recorded directory was walked again');
    assert.deepEqual(await compareTrees(master, copy), []);
  });
});
