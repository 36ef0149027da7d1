import assert from 'node:assert/strict';
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { after, before, describe, it } from 'node:test';
import { type TestApp, startApp } from '../../../testkit/app.js';
import { rawGet } from '../../../testkit/server.js';
import { type TempStore, tempStore } from '../../../testkit/store.js';

const SLOW_MS = 3000;

function sample(text: string, name: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.split(' ').at(-1));
}

// This file runs in its own process: the slow disk below is this process's `open` of the new copy's
// files, made slow through the builtin's own export (as a disk that takes seconds per file would be).
describe('a switch on a slow disk', () => {
  let store: TempStore;
  let app: TestApp;
  const open = fs.promises.open;
  const files: Record<string, string> = {};
  for (let i = 0; i < 40; i++) files[`f${i}.txt`] = `file ${i}`;

  before(async () => {
    store = await tempStore();
    await store.fill('a', Object.fromEntries(Object.entries(files).map(([k, v]) => [k, `a ${v}`])));
    await store.fill('b', Object.fromEntries(Object.entries(files).map(([k, v]) => [k, `b ${v}`])));
    await store.publish(1, 'a');
    app = await startApp({ store: store.root, pollInterval: 20 });
  });
  after(async () => {
    fs.promises.open = open;
    syncBuiltinESMExports();
    await app.close();
    await store.dispose();
  });

  it('is not held back by the warm-up of the new copy: its lookups finish after the switch', async () => {
    // the old copy's cache holds every path: the warm-up looks each up in the new copy
    for (const name of Object.keys(files)) assert.equal((await rawGet(app.port, `/${name}`)).status, 200);
    const slowRoot = store.slots.b;
    let slowOpens = 0;
    fs.promises.open = (async (path: fs.PathLike, ...rest: unknown[]) => {
      if (String(path).startsWith(slowRoot)) {
        slowOpens++;
        await new Promise((resolve) => setTimeout(resolve, SLOW_MS));
      }
      return (open as (...a: unknown[]) => Promise<fs.promises.FileHandle>)(path, ...rest);
    }) as typeof fs.promises.open;
    syncBuiltinESMExports();

    const published = Date.now();
    await store.publish(2, 'b');
    let switchedAfter = Number.POSITIVE_INFINITY;
    while (Date.now() - published < SLOW_MS * 2) {
      const epoch = sample((await rawGet(app.port, '/metrics')).body.toString(), 'mirrorswap_server_epoch');
      if (epoch === 2) {
        switchedAfter = Date.now() - published;
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.ok(slowOpens > 0, 'the warm-up looked paths up in the new copy');
    assert.ok(
      switchedAfter < SLOW_MS / 2,
      `switched ${switchedAfter} ms after the publish, with lookups of ${SLOW_MS} ms under way`,
    );
    // a request for a path whose lookup is still under way waits for that lookup: the new copy, whole
    assert.equal((await rawGet(app.port, '/f0.txt')).body.toString(), 'b file 0');
    assert.equal((await rawGet(app.port, '/f39.txt')).body.toString(), 'b file 39');
  });
});
