import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import type { SwapRecord } from '../../src/agent/agent.js';
import { type EtcdCluster, startEtcdCluster } from '../../testkit/etcd.js';
import { type FleetCoordinatorProc, type FleetHostProc, TestFleet } from '../../testkit/fleet.js';
import { cli } from '../../testkit/proc.js';
import { waitFor } from '../../testkit/wait.js';

interface Readyz {
  ready: boolean;
  reason: string | null;
  epoch: number;
  fleet: { host: string; member: boolean; until: string | null; fleetEpoch: number | null } | null;
}

/** The web server's own /readyz: what a load balancer checks. Answered within a second, or the test fails. */
async function readyz(host: FleetHostProc): Promise<{ status: number; body: Readyz; ms: number }> {
  const started = Date.now();
  const res = await fetch(`${host.web?.url}/readyz`, { signal: AbortSignal.timeout(1000) });
  return { status: res.status, body: (await res.json()) as Readyz, ms: Date.now() - started };
}

async function metric(host: FleetHostProc, name: string): Promise<string[]> {
  const text = await (await fetch(`${host.web?.url}/metrics`)).text();
  return text.split('\n').filter((l) => l.startsWith(name));
}

async function put(coordinator: FleetCoordinatorProc, version: number): Promise<void> {
  const res = await coordinator.api('PUT', '/v1/files/v.txt', `version ${version}\n`);
  assert.equal(res.status, 201, JSON.stringify(res.body));
}

async function sync(coordinator: FleetCoordinatorProc): Promise<{ status: number; body: SwapRecord }> {
  return coordinator.api<SwapRecord>('POST', '/v1/sync?wait=1');
}

/**
 * A stale host is out of rotation: the web server on a host whose host agent
 * lost its fleet membership answers 503 on /readyz within the lease, at once,
 * whatever state the host agent is in (stopped included), and is ready again
 * once the agent rejoined and its host serves the fleet's committed epoch.
 */
describe('fleet readiness: a web server whose host left the fleet says not ready', { timeout: 180_000 }, () => {
  let cluster: EtcdCluster;
  const fleets: TestFleet[] = [];
  before(async () => {
    cluster = await startEtcdCluster(3);
  });
  after(async () => {
    for (const f of fleets) await f.stop();
    await cluster?.stop();
  });

  it('a host agent SIGSTOPped past its lease: its web server says 503 within the lease, promptly; resumed, ready again', async () => {
    const f = await TestFleet.create(cluster, 'ready-stop');
    fleets.push(f);
    const coordinator = await f.startCoordinator(['--straggler', 'evict']);
    const [h1, h2] = [await f.addHost('h1'), await f.addHost('h2')];
    // a new fleet serves nothing before its first sync
    await waitFor('a first answer', () => readyz(h1).catch(() => null));
    await put(coordinator, 1);
    const first = await sync(coordinator);
    assert.equal(first.status, 200, JSON.stringify(first.body));
    for (const h of [h1, h2]) {
      await waitFor(`${h.id} ready`, async () => (await readyz(h)).status === 200, { timeout: 10_000, step: 50 });
    }
    const before = await readyz(h1);
    assert.equal(before.body.fleet?.host, 'h1');
    assert.equal(before.body.fleet?.member, true);

    // the lease is 2 s (TestFleet's --fleet-lease): within it, /readyz must say 503, every answer prompt
    h1.pause();
    const stoppedAt = Date.now();
    let notReadyAt = 0;
    let last: Readyz | undefined;
    while (Date.now() - stoppedAt < 4000) {
      const r = await readyz(h1);
      assert.ok(r.ms < 750, `/readyz took ${r.ms} ms`);
      last = r.body;
      if (r.status === 503) {
        notReadyAt = Date.now();
        break;
      }
      await delay(50);
    }
    assert.ok(notReadyAt > 0, `still ready 4 s after its host agent stopped: ${JSON.stringify(last)}`);
    // the stamp never claims more than the lease from the last renewal, which came before the stop
    const until = Date.parse(last?.fleet?.until ?? '');
    assert.ok(until <= stoppedAt + 2000 + 20, `membership claimed until ${until - stoppedAt} ms after the stop`);
    assert.ok(notReadyAt - until <= 700, `not ready only ${notReadyAt - until} ms after the lease could have ended`);
    assert.match(last?.reason ?? '', /fleet host h1's fleet membership lapsed/);
    // it keeps serving files meanwhile: only the load balancer's check changes
    assert.equal((await fetch(`${h1.web?.url}/v.txt`)).status, 200);
    assert.deepEqual(await metric(h1, 'mirrorswap_server_ready '), ['mirrorswap_server_ready 0']);
    assert.deepEqual(await metric(h1, 'mirrorswap_server_fleet_member'), [
      'mirrorswap_server_fleet_member{host="h1"} 0',
    ]);
    // the other host is unaffected
    assert.equal((await readyz(h2)).status, 200);

    // the fleet commits without it; the coordinator names it as gone, out of rotation
    await put(coordinator, 2);
    // a host that prepared the swap stays ready throughout it: never reported behind between the commit
    // and its servers' switch
    const flaps: string[] = [];
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const r = await readyz(h2);
        if (r.status !== 200) flaps.push(JSON.stringify(r.body));
        await delay(5);
      }
    })();
    const second = await sync(coordinator);
    sampling = false;
    await sampler;
    assert.equal(second.status, 200, JSON.stringify(second.body));
    assert.deepEqual(second.body.fleet?.members, ['h2']);
    assert.deepEqual(flaps, [], 'h2 said not ready during a swap it prepared');
    const shown = await cli(['status', '--agent', coordinator.url, '--token-file', f.tokenFile]);
    assert.match(shown.output, /gone \(lease ended; out of rotation until it registers again\): h1 \(last seen /);
    const gauges = await (await fetch(`${coordinator.url}/metrics`)).text();
    assert.match(gauges, /mirrorswap_fleet_host_gone\{fleet="ready-stop",host="h1"\} 1/);
    assert.match(gauges, /mirrorswap_fleet_host_ready\{fleet="ready-stop",host="h1"\} 0/);

    // resumed: it rejoins, catches up, and is ready only once it serves the committed epoch
    h1.resume();
    const seen: Readyz[] = [];
    await waitFor(
      'h1 ready again',
      async () => {
        const r = await readyz(h1);
        seen.push(r.body);
        return r.status === 200;
      },
      { timeout: 15_000, step: 20 },
    );
    for (const r of seen.filter((x) => x.ready)) {
      assert.ok(r.epoch >= second.body.epoch, `ready while serving epoch ${r.epoch}: ${JSON.stringify(r)}`);
    }
    assert.equal(await (await fetch(`${h1.web?.url}/v.txt`)).text(), 'version 2\n');
  });

  it('a host agent stopped (SIGTERM) or killed: its web server says 503 (left at once, or within the lease)', async () => {
    const f = await TestFleet.create(cluster, 'ready-kill');
    fleets.push(f);
    const coordinator = await f.startCoordinator();
    const h1 = await f.addHost('h1');
    await put(coordinator, 1);
    assert.equal((await sync(coordinator)).status, 200);
    await waitFor('h1 ready', async () => (await readyz(h1)).status === 200, { timeout: 10_000, step: 50 });
    await h1.agent.kill('SIGTERM');
    const stopped = await readyz(h1);
    // a graceful stop gives its lease back and says so at once (within one read of the stamp)
    await waitFor('not ready after a graceful stop', async () => (await readyz(h1)).status === 503, {
      timeout: 1500,
      step: 50,
    });
    assert.ok(stopped.ms < 750);
    assert.match((await readyz(h1)).body.reason ?? '', /not a member of its fleet: its host agent stopped/);
    await h1.restartAgent();
    await waitFor('h1 ready again', async () => (await readyz(h1)).status === 200, { timeout: 15_000, step: 50 });
    await h1.agent.kill('SIGKILL');
    const killedAt = Date.now();
    await waitFor('not ready after kill -9', async () => (await readyz(h1)).status === 503, {
      timeout: 3000,
      step: 50,
    });
    assert.ok(Date.now() - killedAt <= 2700, `took ${Date.now() - killedAt} ms (lease 2 s)`);
  });
});
