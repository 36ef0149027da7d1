import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { mirrorStatic } from '../../../middleware/static/mirror-static.js';
import { directoryIndexPath } from '../../../src/store/content-index.js';
import { TreeCopier } from '../../../src/tree/tree-copy.js';
import { TREE_DEFAULTS } from '../../../src/tree/tree-defaults.js';
import { walkPool } from '../../../src/tree/walk-pool.js';
import { memoryLogger } from '../../../testkit/logger.js';
import { type Running, listen, rawGet } from '../../../testkit/server.js';
import { type TempStore, tempStore } from '../../../testkit/store.js';
import { compressibleText, writeVariantsFor } from '../../../testkit/variants.js';
import { within } from '../../../testkit/wait.js';

const JS = Buffer.from(compressibleText('app', 8192));

describe('a FIFO where a content index is expected', () => {
  const stores: TempStore[] = [];
  const servers: Running[] = [];
  after(async () => {
    await Promise.all(servers.map((s) => s.close()));
    await Promise.all(stores.map((s) => s.dispose()));
    await walkPool.close();
  });

  it('holds no request of a server: the directory has no record known', async () => {
    const store = await tempStore();
    stores.push(store);
    await store.fill('a', { 'd/app.js': JS, 'e/app.js': JS });
    writeVariantsFor(store.slots.a, ['d/app.js', 'e/app.js']);
    await rm(directoryIndexPath(store.slots.a, 'd'));
    execFileSync('mkfifo', [directoryIndexPath(store.slots.a, 'd')]);
    await store.publish(1, 'a');
    const mw = mirrorStatic({ store: store.root, logger: memoryLogger() });
    await mw.ready;
    const running = await listen((req, res) =>
      mw(req, res, () => {
        res.statusCode = 404;
        res.end();
      }),
    );
    servers.push({
      ...running,
      async close() {
        await running.close();
        await mw.close();
      },
    });
    // more requests than libuv's pool has threads: one blocked open each would hold every file read
    const res = await within(
      Promise.all(Array.from({ length: 6 }, () => rawGet(running.port, '/d/app.js', { 'accept-encoding': 'br' }))),
      5000,
      'a request of d/app.js',
    );
    for (const r of res) {
      assert.equal(r.status, 200);
      assert.deepEqual(r.body, JS);
    }
    const other = await within(rawGet(running.port, '/e/app.js', {}), 5000, 'a request of e/app.js');
    assert.equal(other.status, 200);
  });

  it('holds no sync of the directory (the derive reads the index of each directory it changes)', async () => {
    const store = await tempStore();
    stores.push(store);
    const settings = TREE_DEFAULTS.variantSettings;
    await store.fill('master', { 'd/app.js': JS, 'd/other.js': JS });
    await new TreeCopier(store.master, store.slots.a, {
      durable: false,
      variants: { settings, other: null },
    }).mirrorAll();
    await rm(directoryIndexPath(store.slots.a, 'd'));
    execFileSync('mkfifo', [directoryIndexPath(store.slots.a, 'd')]);
    await writeFile(join(store.master, 'd/app.js'), compressibleText('changed', 8192));
    // a sync that folds into the indexes (it names a directory), and a small one (it collects)
    const copier = new TreeCopier(store.master, store.slots.a, { durable: false, variants: { settings, other: null } });
    await within(copier.copyPaths(['d']), 5000, 'a sync of d');
  });
});
