import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { readCopyIndex } from '../../../src/store/recent-records.js';
import { TREE_DEFAULTS } from '../../../src/tree/tree-defaults.js';
import { TreeCopier } from '../../../src/tree/tree-copy.js';
import { contentCoordinator, killedPull, pullInto } from '../../../testkit/fleet-content.js';
import { refuseStray } from '../../../testkit/stub-coordinator.js';
import { tempDirs } from '../../../testkit/store.js';
import { compressibleText as text } from '../../../testkit/variants.js';

const temp = tempDirs();
after(() => temp.removeAll());

/** The paths (of `paths`) whose br or gzip sibling the host's index does not record as made. */
async function notMade(into: string, paths: readonly string[]): Promise<string[]> {
  const out: string[] = [];
  for (const p of paths) {
    const cut = p.lastIndexOf('/');
    const record = (await readCopyIndex(into, cut < 0 ? '' : p.slice(0, cut)))?.files[p.slice(cut + 1)];
    if (record?.variants?.br?.made !== true || record.variants.gzip?.made !== true) out.push(p);
  }
  return out;
}

describe("a fleet host's made marks, after a pull cut short", () => {
  const paths = [
    ...Array.from({ length: 30 }, (_, i) => `r${i}.js`),
    ...Array.from({ length: 30 }, (_, i) => `js/m${i}.js`),
  ];

  async function setUp(prefix: string) {
    const root = await temp.make(prefix);
    const master = join(root, 'master');
    const slots = { a: join(root, 'a'), b: join(root, 'b') };
    const into = join(root, 'host');
    for (const d of [master, join(master, 'js'), slots.a, slots.b, into]) await mkdir(d, { recursive: true });
    for (const p of paths) await writeFile(join(master, p), text(`v1 ${p}`));
    const variants = { settings: TREE_DEFAULTS.variantSettings, other: null };
    await new TreeCopier(master, slots.a, { durable: false, variants }).mirrorAll();
    const c = await contentCoordinator(slots, root);
    return { root, master, slots, into, variants, ...c };
  }

  it('a first pull killed before it indexed anything, then a whole pull (the whole derive): every made variant is recorded made', async () => {
    const { root, into, snapshots, url, close } = await setUp('mirrorswap-made-resumed-first-');
    try {
      const first = await snapshots.take('a');
      await killedPull(root, url, first, null, into, 100);
      await pullInto(url, first, null, into);
      assert.deepEqual(await notMade(into, paths), [], "siblings recorded as master's own: served by name");
    } finally {
      await close();
    }
  });

  it('a delta pull killed before it indexed, then a whole pull (chunks of the delta): every made variant is recorded made', async () => {
    const { root, master, slots, into, variants, snapshots, url, close } = await setUp('mirrorswap-made-resumed-next-');
    try {
      const first = await snapshots.take('a');
      await pullInto(url, first, null, into);
      assert.deepEqual(await notMade(into, paths), []);
      for (const p of paths) await writeFile(join(master, p), text(`v2 ${p}`));
      await new TreeCopier(master, slots.a, { durable: false, variants }).copyPaths(paths);
      const second = await snapshots.take('a');
      await killedPull(root, url, second, first, into, 100);
      await pullInto(url, second, null, into);
      assert.deepEqual(await notMade(into, paths), [], "siblings recorded as master's own: served by name");
    } finally {
      await close();
    }
  });
});

describe("a fleet host's made marks, after the coordinator's upgrade", () => {
  it('a host that pulled from a coordinator before the mark records the made variants made at its next whole pull', async () => {
    const root = await temp.make('mirrorswap-made-upgrade-');
    const master = join(root, 'master');
    const slots = { a: join(root, 'a'), b: join(root, 'b') };
    const into = join(root, 'host');
    for (const d of [master, join(master, 'js'), slots.a, slots.b, into]) await mkdir(d, { recursive: true });
    const paths = ['r.js', 'js/m.js'];
    for (const p of paths) await writeFile(join(master, p), text(`v1 ${p}`));
    const variants = { settings: TREE_DEFAULTS.variantSettings, other: null };
    await new TreeCopier(master, slots.a, { durable: false, variants }).mirrorAll();
    const { snapshots, url, close } = await contentCoordinator(slots, root);
    // the coordinator before the mark: its manifest answers carry none
    const before = createServer((req, res) => {
      // only the fleet's routes are relayed: a stray client of another test on this port meets a 404
      if (!req.url?.startsWith('/v1/fleet/')) {
        refuseStray(req, res);
        return;
      }
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', async () => {
        const answer = await fetch(url + (req.url as string), {
          method: req.method,
          headers: {
            authorization: req.headers.authorization ?? '',
            ...(req.headers['content-type'] ? { 'content-type': req.headers['content-type'] } : {}),
          },
          ...(req.method === 'POST' ? { body: Buffer.concat(chunks) } : {}),
        }).catch(() => null);
        if (answer === null) {
          res.writeHead(502).end();
          return;
        }
        let body = Buffer.from(await answer.arrayBuffer());
        if (req.url?.startsWith('/v1/fleet/manifest'))
          body = Buffer.from(body.toString('utf8').replaceAll(',"made":true', ''));
        res.writeHead(answer.status, { 'content-type': answer.headers.get('content-type') ?? 'application/json' });
        res.end(body);
      });
    });
    const oldUrl = await new Promise<string>((resolve) =>
      before.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(before.address() as AddressInfo).port}`)),
    );
    try {
      const first = await snapshots.take('a');
      await pullInto(oldUrl, first, null, into);
      assert.deepEqual(await notMade(into, paths), paths, "a host of a coordinator before the mark: master's own");
      // the coordinator is upgraded (restarted: it knows no base) and the next release changes another file
      await writeFile(join(master, 'other.txt'), 'another file');
      await new TreeCopier(master, slots.a, { durable: false, variants }).copyPaths(['other.txt']);
      const second = await snapshots.take('a');
      await pullInto(url, second, null, into);
      assert.deepEqual(
        await notMade(into, paths),
        [],
        'made variants the upgraded coordinator marks, still served by name',
      );
    } finally {
      await close();
      await new Promise((r) => before.close(r));
    }
  });
});
