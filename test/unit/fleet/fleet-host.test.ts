import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { EtcdGateway } from '../../../src/fleet/etcd.js';
import { HostAgent } from '../../../src/fleet/host/host-agent.js';
import { storeLayout } from '../../../src/store/store-layout.js';
import { memoryLogger } from '../../../testkit/app.js';
import { freePort } from '../../../testkit/server.js';
import { tempDirs } from '../../../testkit/store.js';

const temp = tempDirs();
after(() => temp.removeAll());

describe('the fleet host agent', () => {
  it('one per store: a second copy on the same store is refused, naming the first; etcd out of reach holds neither up', async () => {
    const layout = storeLayout(await temp.make('mirrorswap-host-'));
    // nothing listens there: the agents start, serve what they have, and keep trying
    const etcd = new EtcdGateway({ endpoints: [`http://127.0.0.1:${await freePort()}`], timeoutMs: 200 });
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
