import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { pullSnapshot } from '../../../src/fleet/host/pull.js';
import { readCopyIndex } from '../../../src/store/recent-records.js';
import { TREE_DEFAULTS } from '../../../src/tree/tree-defaults.js';
import { TreeCopier } from '../../../src/tree/tree-copy.js';
import { FLEET_TOKEN, contentCoordinator } from '../../../testkit/fleet-content.js';
import { tempDirs } from '../../../testkit/store.js';
import { compressibleText as text } from '../../../testkit/variants.js';

const temp = tempDirs();
after(() => temp.removeAll());

/**
 * A slot with no content index yet (its pulls ran without one) is indexed
 * whole by its first pull that keeps one. The marks of the files a delta
 * leaves out are not in a delta answer: indexed with only the delta's, the
 * agent's variants of every unchanged file were recorded as master's own,
 * and served by name.
 */
describe("a fleet host's first pull with a content index, into a slot pulled without one", () => {
  it("records made every variant the coordinator's copy made, not only those of the files the delta changes", async () => {
    const root = await temp.make('mirrorswap-first-index-');
    const master = join(root, 'master');
    const slots = { a: join(root, 'a'), b: join(root, 'b') };
    const into = join(root, 'host');
    for (const d of [master, join(master, 'js'), slots.a, slots.b, into]) await mkdir(d, { recursive: true });
    const paths = ['r.js', 'js/m.js', 'js/n.js'];
    for (const p of paths) await writeFile(join(master, p), text(`v1 ${p}`));
    const variants = { settings: TREE_DEFAULTS.variantSettings, other: null };
    await new TreeCopier(master, slots.a, { durable: false, variants }).mirrorAll();
    const { snapshots, url, close } = await contentCoordinator(slots, root);
    const pull = (snapshot: string, base: string | null, contentIndex: boolean) =>
      pullSnapshot({
        from: url,
        token: FLEET_TOKEN,
        snapshot,
        base,
        into,
        durable: false,
        timeoutMs: 5000,
        contentIndex,
      });
    try {
      const first = await snapshots.take('a');
      await pull(first, null, false);
      assert.equal(await readCopyIndex(into, 'js'), null, 'no index yet');
      await writeFile(join(master, 'js/n.js'), text('v2 js/n.js'));
      await new TreeCopier(master, slots.a, { durable: false, variants }).copyPaths(['js/n.js']);
      const second = await snapshots.take('a');
      await pull(second, first, true);
      for (const p of paths) {
        const cut = p.lastIndexOf('/');
        const record = (await readCopyIndex(into, cut < 0 ? '' : p.slice(0, cut)))?.files[p.slice(cut + 1)];
        assert.equal(record?.variants?.br?.made, true, `${p}.br: recorded as master's own, served by name`);
        assert.equal(record?.variants?.gzip?.made, true, `${p}.gz: recorded as master's own, served by name`);
      }
    } finally {
      await close();
    }
  });
});
