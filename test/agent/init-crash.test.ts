import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { isReservedRootName } from '../../src/store/store-layout.js';
import { cli, runCli } from '../../testkit/proc.js';
import { tempStore } from '../../testkit/store.js';
import { waitFor } from '../../testkit/wait.js';

/** Files of a copy (its reserved entries, the content index among them, left out). */
async function countFiles(dir: string, top = true): Promise<number> {
  let n = 0;
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (top && isReservedRootName(e.name)) continue;
    if (e.isDirectory()) n += await countFiles(join(dir, e.name), false);
    else if (e.isFile()) n++;
  }
  return n;
}

describe('init killed during its first copy', () => {
  it('is made anew by the next init: no copy that was never completed is ever published', async () => {
    const store = await tempStore();
    try {
      const files: Record<string, string> = {};
      for (let d = 0; d < 40; d++) for (let f = 0; f < 100; f++) files[`d${d}/f${f}.txt`] = `${d}/${f}`;
      await store.fill('master', files);
      const first = runCli(['init', '--store', store.root]);
      // the copy has begun (its positions are saved, slot a has entries), the epoch is not published yet
      await waitFor(
        'the first copy to be under way',
        async () => existsSync(join(store.root, 'state', 'slots.json')) && (await readdir(store.slots.a)).length > 0,
        { step: 1, timeout: 20_000 },
      );
      const publishedBeforeKill = existsSync(store.epochFile);
      await first.kill('SIGKILL');
      if (publishedBeforeKill) return; // this machine copied 4,000 files before the look: nothing to recover
      const again = await cli(['init', '--store', store.root]);
      assert.equal(again.code, 0, again.output);
      const epoch = JSON.parse(await readFile(store.epochFile, 'utf8')) as { mounted: 'a' | 'b' };
      assert.equal(
        await countFiles(store.slots[epoch.mounted]),
        4000,
        `init published slot ${epoch.mounted}, which does not hold master: ${again.output}`,
      );
      for (const slot of ['a', 'b'] as const) assert.equal(await countFiles(store.slots[slot]), 4000, slot);
    } finally {
      await store.dispose();
    }
  });
});
