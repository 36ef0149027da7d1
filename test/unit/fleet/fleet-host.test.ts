import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { EtcdGateway } from '../../../src/fleet/etcd.js';
import { HostAgent } from '../../../src/fleet/host/host-agent.js';
import { StoreLock } from '../../../src/store/store-lock.js';
import { storeLayout } from '../../../src/store/store-layout.js';
import { memoryLogger } from '../../../testkit/logger.js';
import { freePort, refusedUrl } from '../../../testkit/server.js';
import { runCli } from '../../../testkit/proc.js';
import { tempDirs, tempStore } from '../../../testkit/store.js';

const temp = tempDirs();
after(() => temp.removeAll());

describe('the fleet host agent', () => {
  it('one per store: a second copy on the same store is refused, naming the first; etcd out of reach holds neither up', async () => {
    const layout = storeLayout(await temp.make('mirrorswap-host-'));
    // nothing listens there: the agents start, serve what they have, and keep trying
    const etcd = new EtcdGateway({ endpoints: [await refusedUrl()], timeoutMs: 200 });
    const opts = {
      etcd,
      fleet: 'web',
      hostId: 'h1',
      token: 'a-fleet-token-of-enough-length',
      layout,
      log: memoryLogger(),
    };
    const first = await HostAgent.start(opts);
    try {
      assert.equal(first.status().ready, false, 'not ready before it has seen the fleet');
      await assert.rejects(HostAgent.start({ ...opts, hostId: 'h2' }), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'STORE_LOCKED');
        assert.match(err.message, /mirrorswap host agent \(h1\)/);
        return true;
      });
    } finally {
      await first.close();
      etcd.close();
    }
    // released with the first: the store can be taken again
    const again = await HostAgent.start({
      ...opts,
      etcd: new EtcdGateway({ endpoints: ['http://127.0.0.1:9'], timeoutMs: 200 }),
    });
    await again.close();
  });
});

describe('mirrorswap host when another agent holds the store', () => {
  it('exits naming the holder, and leaves no listener answering /healthz for an agent that is not running', async () => {
    const store = await tempStore();
    const tokenFile = join(store.root, 'fleet-token');
    await writeFile(tokenFile, 'a-fleet-token-of-32-characters!!\n', { mode: 0o600 });
    await mkdir(store.stateDir, { recursive: true });
    const lock = await StoreLock.acquire(store.lockFile, 'the test, standing in for another agent');
    const port = await freePort();
    const host = runCli([
      'host',
      '--store',
      store.root,
      '--etcd',
      'http://127.0.0.1:1',
      '--fleet',
      'web',
      '--token-file',
      tokenFile,
      '--listen',
      `127.0.0.1:${port}`,
    ]);
    try {
      // the bound is let go once the race is decided: a timer left running kept this file alive 15 s
      const bound = new AbortController();
      const code = await Promise.race([
        host.exited(),
        delay(15_000, 'still running' as const, { signal: bound.signal }).catch(() => 'still running' as const),
      ]).finally(() => bound.abort());
      assert.notEqual(code, 'still running', `the host agent kept running without its store:\n${host.output()}`);
      assert.notEqual(code, 0);
      assert.match(host.output(), /the test, standing in for another agent/);
      await assert.rejects(fetch(`http://127.0.0.1:${port}/healthz`), 'a listener was left open');
    } finally {
      await host.kill('SIGKILL');
      await lock.release();
      await store.dispose();
    }
  });
});
