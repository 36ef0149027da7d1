import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { EtcdError, EtcdGateway } from '../../src/fleet/etcd.js';
import { type EtcdCluster, startEtcdCluster } from '../../testkit/etcd.js';
import { refusedUrl } from '../../testkit/server.js';

const noop = () => {};

/**
 * Failover is per call: each call tries every member once, starting from the
 * one that answered last, whatever other calls do meanwhile. Calls that start
 * while another moves the "last good" member must not skip a healthy member.
 */
describe('etcd failover: every call tries every member once', { timeout: 120_000 }, () => {
  let cluster: EtcdCluster;
  before(async () => {
    cluster = await startEtcdCluster(3);
  });
  after(async () => {
    await cluster?.stop();
  });

  it('a hung first member and a dead one: calls started every 50 ms all succeed while others move the last good member', async () => {
    // not the leader: pausing the leader would leave the others electing one for longer than a call's deadline
    const leader = await cluster.leader();
    const [hung, live] = cluster.members.filter((m) => m !== leader);
    const dead = await refusedUrl();
    // hung first (answers nothing), then a live member, then a closed port: a call that starts at the
    // hung member while another call moves the cursor to the live one must still try the live one
    const etcd = new EtcdGateway({ endpoints: [hung.clientUrl, live.clientUrl, dead], timeoutMs: 400 });
    await hung.pause();
    try {
      const failed: string[] = [];
      const calls: Promise<void>[] = [];
      for (let i = 0; i < 30; i++) {
        const call = i % 2 === 0 ? etcd.put(`/t/failover/${i}`, 'v') : etcd.get(`/t/failover/${i - 1}`);
        calls.push(call.then(noop, (err: Error) => void failed.push(err.message)));
        await delay(50);
      }
      await Promise.all(calls);
      assert.deepEqual(failed, [], 'every call found the live member');
    } finally {
      await hung.resume();
      etcd.close();
    }
  });

  it('the leader killed while calls run: every call succeeds on the members left', async () => {
    const etcd = new EtcdGateway({ endpoints: cluster.endpoints.split(','), timeoutMs: 2000 });
    try {
      await etcd.put('/t/leader/warm', 'v');
      const leader = await cluster.leader();
      const calls: Promise<void>[] = [];
      const failed: string[] = [];
      let stop = false;
      const runner = (async () => {
        for (let i = 0; !stop; i++) {
          calls.push(etcd.put(`/t/leader/${i}`, 'v').then(noop, (err: Error) => void failed.push(err.message)));
          await delay(40);
        }
      })();
      await delay(200);
      await leader.kill();
      await delay(2500);
      stop = true;
      await runner;
      await Promise.all(calls);
      assert.deepEqual(failed, []);
      await leader.restart();
    } finally {
      etcd.close();
    }
  });

  it('no member answering: the error names every member once, with what each answered', async () => {
    const urls = [await refusedUrl(0), await refusedUrl(1), await refusedUrl(2)];
    const etcd = new EtcdGateway({ endpoints: urls, timeoutMs: 300 });
    try {
      await Promise.all(
        [0, 1, 2, 3].map((i) =>
          assert.rejects(etcd.get(`/t/none/${i}`), (err: Error) => {
            assert.ok(err instanceof EtcdError);
            // "etcd did not answer PATH (HOST: WHY; HOST: WHY; …)"
            const tried = (/\((.*)\)$/.exec(err.message)?.[1] ?? '').split('; ');
            assert.deepEqual(
              tried.map((t) => t.slice(0, t.indexOf(': '))).sort(),
              urls.map((u) => new URL(u).host).sort(),
              `each member named once: ${err.message}`,
            );
            for (const t of tried) assert.match(t, /ECONNREFUSED/);
            return true;
          }),
        ),
      );
    } finally {
      etcd.close();
    }
  });
});
