import assert from 'node:assert/strict';
import { chmod, rename } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { writeEpochFile } from '../../../src/store/epoch-file.js';
import { type TestApp, startApp } from '../../../testkit/app.js';
import { rawGet } from '../../../testkit/server.js';
import { type TempStore, tempStore } from '../../../testkit/store.js';
import { waitFor } from '../../../testkit/wait.js';

// Meaningful as an unprivileged user (the unit tier runs so in CI): root reads a file of mode 000 anyway.
describe('an epoch file the server cannot read, then can', () => {
  let store: TempStore;
  let app: TestApp;
  before(async () => {
    store = await tempStore();
    await store.fill('a', { 'v.txt': 'A' });
    await store.fill('b', { 'v.txt': 'B' });
    await store.publish(1, 'a');
    app = await startApp({ store: store.root, pollInterval: 20 });
  });
  after(async () => {
    await app.close();
    await store.dispose();
  });

  it('is read again once its mode is put right (only its change time moves), and the server switches', async () => {
    const record = { ...(await store.publish(1, 'a')), epoch: 2, mounted: 'b' as const };
    const temp = `${store.epochFile}.unreadable`;
    await writeEpochFile(temp, record);
    await chmod(temp, 0o000);
    await rename(temp, store.epochFile);
    await new Promise((r) => setTimeout(r, 300));
    await chmod(store.epochFile, 0o644);
    await waitFor('the switch to epoch 2', async () => (await rawGet(app.port, '/v.txt')).body.toString() === 'B', {
      timeout: 3000,
    });
    assert.equal(app.mw.state().epoch, 2);
  });
});
