import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { SwapRecord } from '../../src/agent/agent.js';
import { type EtcdCluster, startEtcdCluster } from '../../testkit/etcd.js';
import { type FleetCoordinatorProc, type FleetHostProc, TestFleet } from '../../testkit/fleet.js';
import { waitFor } from '../../testkit/wait.js';

async function put(coordinator: FleetCoordinatorProc, version: number): Promise<void> {
  const res = await coordinator.api('PUT', '/v1/files/v.txt', `version ${version}\n`);
  assert.equal(res.status, 201, JSON.stringify(res.body));
}

async function sync(coordinator: FleetCoordinatorProc): Promise<{ status: number; body: SwapRecord }> {
  return coordinator.api<SwapRecord>('POST', '/v1/sync?wait=1');
}

async function served(host: FleetHostProc): Promise<string> {
  return (await fetch(`${host.web?.url}/v.txt`)).text();
}

/** Until the coordinator sees exactly these hosts live (the others' leases ended). */
async function liveHosts(coordinator: FleetCoordinatorProc, hosts: string[]): Promise<void> {
  await waitFor(
    `live hosts ${hosts.join(', ')}`,
    async () => {
      const { body } = await coordinator.api<{ fleet: { hosts: { host: string }[] } }>('GET', '/v1/status');
      return JSON.stringify(body.fleet.hosts.map((h) => h.host).sort()) === JSON.stringify([...hosts].sort());
    },
    { timeout: 10_000, step: 100 },
  );
}

/**
 * --min-members: a swap commits only if at least N hosts prepared it, is not
 * proposed while fewer are live, and evicts nobody when it cannot commit.
 */
describe('fleet quorum (--min-members)', { timeout: 240_000 }, () => {
  let cluster: EtcdCluster;
  const fleets: TestFleet[] = [];
  before(async () => {
    cluster = await startEtcdCluster(3);
  });
  after(async () => {
    for (const f of fleets) await f.stop();
    await cluster?.stop();
  });

  it('evict with a quorum of 2 of 3: one host gone commits without it; two gone refuses, evicting nobody', async () => {
    const f = await TestFleet.create(cluster, 'quorum-evict');
    fleets.push(f);
    const hookLog = join(f.tokenFile, '..', 'evicted.log');
    const coordinator = await f.startCoordinator([
      '--straggler',
      'evict',
      '--min-members',
      '2',
      '--prepare-timeout',
      '3s',
      '--on-evict',
      `echo "$MIRRORSWAP_HOST $MIRRORSWAP_EPOCH" >> ${hookLog}`,
    ]);
    const hosts = [await f.addHost('h1'), await f.addHost('h2'), await f.addHost('h3')];
    await put(coordinator, 1);
    const first = await sync(coordinator);
    assert.equal(first.status, 200, JSON.stringify(first.body));
    assert.deepEqual(first.body.fleet?.members.sort(), ['h1', 'h2', 'h3']);

    // one host stopped during the prepare: evicted (the hook runs), the swap commits with 2 of 3
    hosts[2].pause();
    await put(coordinator, 2);
    const second = await sync(coordinator);
    assert.equal(second.status, 200, JSON.stringify(second.body));
    assert.deepEqual(second.body.fleet?.members.sort(), ['h1', 'h2']);
    for (const h of hosts.slice(0, 2)) assert.equal(await served(h), 'version 2\n');
    await liveHosts(coordinator, ['h1', 'h2']);

    // a second host stopped: only one prepares, under the quorum: aborted, nobody evicted, nothing switched
    const hooksBefore = await readFile(hookLog, 'utf8').catch(() => '');
    hosts[1].pause();
    await put(coordinator, 3);
    const third = await sync(coordinator);
    assert.equal(third.status, 503, JSON.stringify(third.body));
    assert.equal(third.body.error?.code, 'FLEET_QUORUM', JSON.stringify(third.body));
    assert.match(third.body.error?.message ?? '', /fewer than --min-members 2/);
    assert.equal(await readFile(hookLog, 'utf8').catch(() => ''), hooksBefore, 'no eviction for a swap that aborts');
    assert.equal(await served(hosts[0]), 'version 2\n', 'nothing switched');
    // once the second host's lease ended too, no swap is even proposed: the message names the hosts gone
    await liveHosts(coordinator, ['h1']);
    const fourth = await sync(coordinator);
    assert.equal(fourth.body.error?.code, 'FLEET_QUORUM', JSON.stringify(fourth.body));
    assert.match(fourth.body.error?.message ?? '', /was not proposed.*1 live host \(h1\).*gone: h2, h3/);

    // back: the next swap has all three
    hosts[1].resume();
    hosts[2].resume();
    await liveHosts(coordinator, ['h1', 'h2', 'h3']);
    const fifth = await sync(coordinator);
    assert.equal(fifth.status, 200, JSON.stringify(fifth.body));
    for (const h of hosts) assert.equal(await served(h), 'version 3\n');
  });

  it('block with a quorum of the fleet size: no swap while any known host is gone', async () => {
    const f = await TestFleet.create(cluster, 'quorum-block');
    fleets.push(f);
    const coordinator = await f.startCoordinator(['--min-members', '2']);
    const hosts = [await f.addHost('h1'), await f.addHost('h2')];
    await put(coordinator, 1);
    assert.equal((await sync(coordinator)).status, 200);
    hosts[1].pause();
    await liveHosts(coordinator, ['h1']);
    await put(coordinator, 2);
    const refused = await sync(coordinator);
    assert.equal(refused.status, 503, JSON.stringify(refused.body));
    assert.equal(refused.body.error?.code, 'FLEET_QUORUM');
    assert.match(refused.body.error?.message ?? '', /gone: h2/);
    assert.equal(await served(hosts[0]), 'version 1\n');
    hosts[1].resume();
    await liveHosts(coordinator, ['h1', 'h2']);
    const res = await sync(coordinator);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    for (const h of hosts) assert.equal(await served(h), 'version 2\n');
  });
});
