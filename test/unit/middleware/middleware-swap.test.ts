import assert from 'node:assert/strict';
import { link, open, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { get } from 'node:http';
import { join } from 'node:path';
import { after, afterEach, describe, it } from 'node:test';
import type { Heartbeat } from '../../../src/store/heartbeat.js';
import { heartbeatFile } from '../../../src/store/heartbeat.js';
import { type TestApp, memoryLogger, startApp } from '../../../testkit/app.js';
import { rawGet } from '../../../testkit/server.js';
import { type TempStore, tempDirs, tempStore } from '../../../testkit/store.js';
import { waitFor } from '../../../testkit/wait.js';

async function readHeartbeat(store: TempStore, app: TestApp): Promise<Heartbeat> {
  return JSON.parse(await readFile(heartbeatFile(store.serversDir, app.mw.state().serverId), 'utf8')) as Heartbeat;
}

async function bodyOf(app: TestApp, path: string): Promise<string> {
  return (await rawGet(app.port, path)).body.toString();
}

const BIG_SIZE = 50 * 1024 * 1024;
const bigDirs = tempDirs();
after(() => bigDirs.removeAll());
let bigFiles: Promise<{ a: string; b: string }> | undefined;
/**
 * A 50 MB file of 'A' and one of 'B', written once for the file in 1 MiB writes and hard-linked into
 * each case's slots: two 50 MB buffers made and written per case cost more CPU than the download.
 */
function bigFilesOnce(): Promise<{ a: string; b: string }> {
  bigFiles ??= (async () => {
    const dir = await bigDirs.make('mirrorswap-big-');
    const make = async (name: string, byte: number) => {
      const file = join(dir, name);
      const chunk = Buffer.alloc(1024 * 1024, byte);
      const handle = await open(file, 'w');
      try {
        for (let at = 0; at < BIG_SIZE; at += chunk.length) await handle.write(chunk);
      } finally {
        await handle.close();
      }
      return file;
    };
    return { a: await make('a.bin', 0x41), b: await make('b.bin', 0x42) };
  })();
  return bigFiles;
}

/** Everything here runs once with native watching and once with polling. */
for (const watch of ['native', 'poll'] as const) {
  describe(`mirrorStatic across swaps (watch: ${watch})`, () => {
    const cleanups: (() => Promise<void>)[] = [];
    afterEach(async () => {
      for (const c of cleanups.splice(0).reverse()) await c();
    });
    const setup = async (opts: Parameters<typeof startApp>[0] extends infer O ? Partial<O> : never = {}) => {
      const store = await tempStore();
      await store.fill('a', { 'v.txt': 'version A', 'same.txt': 'unchanged' });
      await store.fill('b', { 'v.txt': 'version B', 'same.txt': 'unchanged' });
      const when = new Date('2026-02-02T00:00:00Z');
      for (const s of ['a', 'b'] as const) await utimes(join(store.slots[s], 'same.txt'), when, when);
      await store.publish(1, 'a');
      const app = await startApp({ store: store.root, watch, pollInterval: 20, heartbeatInterval: 100, ...opts });
      cleanups.push(
        () => store.dispose(),
        () => app.close(),
      );
      return { store, app };
    };

    it(`reports the ${watch} mode in use`, async () => {
      const { app } = await setup();
      assert.equal(app.mw.state().watch, watch);
    });

    it('switches new requests to the new slot soon after a publish', async () => {
      const { store, app } = await setup();
      assert.equal(await bodyOf(app, '/v.txt'), 'version A');
      const first = (await readHeartbeat(store, app)).switchedAt;
      assert.ok(first !== undefined, 'the heartbeat says when the server began serving epoch 1');
      const published = Date.now();
      await store.publish(2, 'b');
      await waitFor('the switch to slot b', async () => (await bodyOf(app, '/v.txt')) === 'version B', {
        timeout: 2000,
      });
      const seen = Date.now();
      assert.equal(app.mw.state().epoch, 2);
      const hb = await waitFor('heartbeat at epoch 2', async () => {
        const h = await readHeartbeat(store, app);
        return h.epoch === 2 ? h : null;
      });
      assert.equal(hb.mounted, 'b');
      // the moment new requests went to the new copy: after the publish, before a request saw it
      const switchedAt = Date.parse(hb.switchedAt ?? '');
      assert.ok(switchedAt >= published && switchedAt <= seen, `switchedAt ${hb.switchedAt}`);
    });

    it('keeps the ETag of an unchanged file across a swap', async () => {
      const { store, app } = await setup();
      const before = (await rawGet(app.port, '/same.txt')).headers.etag;
      await store.publish(2, 'b');
      await waitFor('the switch', () => app.mw.state().epoch === 2);
      const res = await rawGet(app.port, '/same.txt', { 'If-None-Match': String(before) });
      assert.equal(res.status, 304);
    });

    it('keeps the last good epoch when the file turns corrupt, counts and logs once', async () => {
      const logger = memoryLogger();
      const { store, app } = await setup({ logger });
      await writeFile(store.epochFile, '{"format":1,"epoch":');
      // an in-place write may be seen twice (truncated, then written): at least one error, one log line
      await waitFor('the read error metric', async () =>
        /mirrorswap_server_epoch_read_errors_total [1-9]/.test(await app.mw.registry.metrics()),
      );
      await app.mw.refresh();
      await app.mw.refresh();
      assert.equal(await bodyOf(app, '/v.txt'), 'version A');
      assert.equal(logger.lines.filter((l) => /not valid JSON/.test(l.msg)).length, 1);
      await store.publish(2, 'b');
      await waitFor('recovery', async () => (await bodyOf(app, '/v.txt')) === 'version B');
    });

    it('never goes back to a lower epoch', async () => {
      const { store, app } = await setup();
      await store.publish(5, 'b');
      await waitFor('epoch 5', () => app.mw.state().epoch === 5);
      await store.publish(4, 'a');
      await app.mw.refresh();
      assert.equal(app.mw.state().epoch, 5);
      assert.equal(await bodyOf(app, '/v.txt'), 'version B');
    });

    it('keeps serving when a published slot root does not exist, and retries', async () => {
      const { store, app } = await setup();
      const hidden = `${store.slots.b}.away`;
      await import('node:fs/promises').then((fs) => fs.rename(store.slots.b, hidden));
      await store.publish(2, 'b');
      await app.mw.refresh();
      assert.equal(app.mw.state().epoch, 1);
      assert.equal(await bodyOf(app, '/v.txt'), 'version A');
      await import('node:fs/promises').then((fs) => fs.rename(hidden, store.slots.b));
      await waitFor('the retry', async () => (await bodyOf(app, '/v.txt')) === 'version B');
    });

    it('serves a 50 MB download started before a swap entirely from the old copy, and reports its drain', async () => {
      const { store, app } = await setup();
      const size = BIG_SIZE;
      const big = await bigFilesOnce();
      await link(big.a, join(store.slots.a, 'big.bin'));
      await link(big.b, join(store.slots.b, 'big.bin'));
      // each chunk is looked through for a 'B' as it comes, rather than 50 MB joined up at the end
      let total = 0;
      let leaked = -1;
      const take = (chunk: Buffer) => {
        const at = chunk.indexOf(0x42);
        if (at !== -1 && leaked === -1) leaked = total + at;
        total += chunk.length;
      };
      const done = new Promise<void>((resolve, reject) => {
        get({ host: '127.0.0.1', port: app.port, path: '/big.bin', agent: false }, (res) => {
          assert.equal(res.statusCode, 200);
          res.once('data', (chunk: Buffer) => {
            take(chunk);
            res.pause(); // hold the request open across the swap
            void (async () => {
              assert.deepEqual(app.mw.state().inflight, { a: 1, b: 0 });
              await store.publish(2, 'b');
              await waitFor('the switch', () => app.mw.state().epoch === 2);
              assert.equal(await bodyOf(app, '/v.txt'), 'version B');
              const hb = await waitFor('heartbeat holding slot a', async () => {
                const h = await readHeartbeat(store, app);
                return h.epoch === 2 ? h : null;
              });
              assert.equal(hb.inflight.a, 1);
              res.on('data', take);
              res.resume();
            })().catch(reject);
          });
          res.on('end', resolve);
          res.on('error', reject);
        }).on('error', reject);
      });
      await done;
      assert.equal(total, size);
      assert.equal(leaked, -1, 'a byte of the new copy leaked into the old download');
      const drained = await waitFor('the drain reported', async () => {
        const h = await readHeartbeat(store, app);
        return h.inflight.a === 0 ? h : null;
      });
      assert.equal(drained.epoch, 2);
    });
  });
}

describe('mirrorStatic before anything is mounted', () => {
  let store: TempStore;
  const apps: TestApp[] = [];
  after(async () => {
    for (const a of apps) await a.close();
    await store.dispose();
  });

  it('falls through (default) or answers 503 (fallthrough false), then serves once published', async () => {
    store = await tempStore();
    await store.fill('a', { 'v.txt': 'A' });
    const loose = await startApp({ store: store.root, pollInterval: 20 });
    const strict = await startApp({ store: store.root, fallthrough: false, pollInterval: 20 });
    apps.push(loose, strict);
    assert.equal((await rawGet(loose.port, '/v.txt')).body.toString(), 'app fallthrough');
    assert.equal((await rawGet(strict.port, '/v.txt')).status, 503);
    await store.publish(1, 'a');
    await waitFor('first mount', async () => (await rawGet(strict.port, '/v.txt')).status === 200);
  });

  it('writes a heartbeat at epoch 0 and removes it on close(), which is idempotent', async () => {
    const s = await tempStore();
    const app = await startApp({ store: s.root, serverId: 'web-1' });
    const file = heartbeatFile(s.serversDir, 'web-1');
    const hb = JSON.parse(await readFile(file, 'utf8')) as Heartbeat;
    assert.equal(hb.epoch, 0);
    assert.equal(hb.mounted, null);
    assert.equal(hb.pid, process.pid);
    await app.close();
    await app.mw.close();
    await assert.rejects(stat(file), { code: 'ENOENT' });
    await rm(s.root, { recursive: true, force: true });
  });
});
