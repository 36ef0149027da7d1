import assert from 'node:assert/strict';
import { link } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { tempStore } from '../../testkit/store.js';

/*
 * The agent's readiness while its store is initialised: a live agent whose init copies a master of
 * 2,000 files into both slots (4,000 files made) while /readyz is asked. The syncs, rollbacks and
 * verifies of the API are unit-tested in test/unit/agent/agent-sync.test.ts.
 */

describe('agent readiness', () => {
  it('answers /readyz 503 while the store is still being initialised, then 200', async () => {
    const store = await tempStore();
    // 2,000 files for the init to take its time over, each directory's hard links to its first one:
    // the init copies every one into both slots, without the test creating 2,000 inodes first
    for (let d = 0; d < 50; d++) {
      await store.fill('master', { [`f/${d}/${d}.txt`]: `file ${d}` });
      for (let i = d + 50; i < 2000; i += 50)
        await link(join(store.master, 'f', `${d}`, `${d}.txt`), join(store.master, 'f', `${d}`, `${i}.txt`));
    }
    const { startAgentServer } = await import('../../src/server/agent-server.js');
    const { memoryLogger } = await import('../../testkit/app.js');
    const server = await startAgentServer({
      host: '127.0.0.1',
      port: 0,
      token: 'x'.repeat(32),
      maxBody: 1024,
      agent: { layout: store, logger: memoryLogger(), durable: false, watchMaster: false },
    });
    const early = await fetch(`${server.url}/readyz`);
    assert.equal(early.status, 503);
    assert.equal((await fetch(`${server.url}/healthz`)).status, 200);
    await server.started;
    assert.equal((await fetch(`${server.url}/readyz`)).status, 200);
    await server.close();
    await store.dispose();
  });
});
