import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { Agent as HttpAgent, request } from 'node:http';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import type { SwapRecord } from '../../src/agent/agent.js';
import { readEpochFile } from '../../src/store/epoch-file.js';
import { type EtcdCluster, startEtcdCluster } from '../../testkit/etcd.js';
import { type FleetCoordinatorProc, type FleetHostProc, TestFleet, mountedTree } from '../../testkit/fleet.js';
import { startAgentProc } from '../../testkit/cluster.js';
import { cli } from '../../testkit/proc.js';
import { freePort } from '../../testkit/server.js';
import { waitFor } from '../../testkit/wait.js';

/** The one file every version rewrites, padded so a torn body would show. */
const FILE = 'v.txt';
const body = (version: number) => `version ${version} of ${FILE}\n${'.'.repeat(4096)}\n`;

interface Sample {
  host: string;
  sent: number;
  version: number;
}

function get(port: number, path: string, agent: HttpAgent): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** Clients reading FILE from every host's web server in a loop until stopped: every answer recorded. */
function readers(hosts: FleetHostProc[]) {
  const samples: Sample[] = [];
  const problems: string[] = [];
  let running = true;
  const loops = hosts.map(async (h) => {
    const agent = new HttpAgent({ keepAlive: true, maxSockets: 1 });
    let last = 0;
    while (running) {
      const sent = Date.now();
      const res = await get(h.web?.port ?? 0, `/${FILE}`, agent).catch((err: Error) => ({
        status: 0,
        text: err.message,
      }));
      const m = /^version (\d+) of v\.txt\n/.exec(res.text);
      if (res.status !== 200 || !m || res.text !== body(Number(m[1]))) {
        problems.push(`${h.id}: ${res.status} ${JSON.stringify(res.text.slice(0, 60))}`);
        continue;
      }
      const version = Number(m[1]);
      if (version < last) problems.push(`${h.id} went back from version ${last} to ${version}`);
      last = version;
      samples.push({ host: h.id, sent, version });
    }
    agent.destroy();
  });
  return {
    samples,
    problems,
    async stop() {
      running = false;
      await Promise.all(loops);
    },
  };
}

async function put(coordinator: FleetCoordinatorProc, version: number): Promise<void> {
  const res = await coordinator.api('PUT', `/v1/files/${FILE}`, body(version));
  assert.equal(res.status, 201, JSON.stringify(res.body));
}

async function sync(
  coordinator: FleetCoordinatorProc,
  release?: string,
): Promise<{ status: number; body: SwapRecord }> {
  return coordinator.api<SwapRecord>('POST', `/v1/sync?wait=1${release ? `&release=${release}` : ''}`);
}

interface FleetStatusBody {
  fleet: {
    epoch: { epoch: number; committedAt: string; members: string[] } | null;
    swap: { epoch: number } | null;
    coordinator: { elected: boolean };
    hosts: { host: string; epoch: number; lag: number }[];
  };
  epoch: number;
}

async function fleetStatus(coordinator: FleetCoordinatorProc): Promise<FleetStatusBody> {
  return (await coordinator.api<FleetStatusBody>('GET', '/v1/status')).body;
}

/** What a host's web server answers for FILE now. */
async function served(host: FleetHostProc): Promise<number> {
  const res = await fetch(`${host.web?.url}/${FILE}`);
  const m = /^version (\d+)/.exec(await res.text());
  return m ? Number(m[1]) : -res.status;
}

/** Every host's mounted copy is the coordinator's, byte for byte, at the same epoch. */
async function assertSameTrees(coordinator: FleetCoordinatorProc, hosts: FleetHostProc[]): Promise<void> {
  const expected = await mountedTree(coordinator.store.root, coordinator.store.epochFile);
  for (const h of hosts) {
    const got = await mountedTree(h.store.root, h.store.epochFile);
    assert.equal(got.epoch, expected.epoch, `${h.id} is at epoch ${got.epoch}, the coordinator at ${expected.epoch}`);
    assert.equal(got.tree, expected.tree, `${h.id}'s mounted copy differs from the coordinator's`);
  }
}

async function epochOf(host: FleetHostProc): Promise<number> {
  return (await readEpochFile(host.store.epochFile))?.epoch ?? 0;
}

describe('fleet mode', { timeout: 300_000 }, () => {
  let cluster: EtcdCluster;
  const fleets: TestFleet[] = [];
  const fleet = async (name: string) => {
    const f = await TestFleet.create(cluster, name);
    fleets.push(f);
    return f;
  };

  before(async () => {
    cluster = await startEtcdCluster(3);
  });
  after(async () => {
    for (const f of fleets) await f.stop();
    await cluster?.stop();
  });

  it('switches 3 hosts together: after sync?wait=1 every host serves the new content, none torn or backwards', async () => {
    const f = await fleet('lockstep');
    const coordinator = await f.startCoordinator();
    const hosts = [await f.addHost('h1'), await f.addHost('h2'), await f.addHost('h3')];
    await put(coordinator, 1);
    const first = await sync(coordinator);
    assert.equal(first.status, 200, JSON.stringify(first.body));
    assert.deepEqual(first.body.fleet?.members.sort(), ['h1', 'h2', 'h3']);
    for (const h of hosts) assert.equal(await served(h), 1, `${h.id} serves version 1 as sync returns`);

    const read = readers(hosts);
    const windows: { version: number; mixedMs: number; commitToLastSwitchMs: number }[] = [];
    try {
      for (let version = 2; version <= 5; version++) {
        await put(coordinator, version);
        const res = await sync(coordinator, `v${version}`);
        assert.equal(res.status, 200, JSON.stringify(res.body));
        for (const h of hosts) {
          assert.equal(await served(h), version, `${h.id} serves version ${version} once sync returns`);
          // the release named at the coordinator is in every host's epoch file
          const local = await readEpochFile(h.store.epochFile);
          assert.equal(local?.release, `v${version}`, h.id);
          assert.equal(local?.previous?.release, version > 2 ? `v${version - 1}` : undefined, h.id);
        }
        const status = await fleetStatus(coordinator);
        const committedAt = Date.parse(status.fleet.epoch?.committedAt ?? '');
        const switches = await Promise.all(
          hosts.map(async (h) => Date.parse((await readEpochFile(h.store.epochFile))?.publishedAt ?? '')),
        );
        await delay(100);
        windows.push({ version, mixedMs: 0, commitToLastSwitchMs: Math.max(...switches) - committedAt });
      }
    } finally {
      await read.stop();
    }
    assert.deepEqual(read.problems, [], 'torn, failed or backwards answers');
    for (const w of windows) {
      const news = read.samples.filter((s) => s.version === w.version).map((s) => s.sent);
      const olds = read.samples.filter((s) => s.version === w.version - 1).map((s) => s.sent);
      assert.ok(news.length > 0, `version ${w.version} was read`);
      w.mixedMs = olds.length ? Math.max(0, Math.max(...olds) - Math.min(...news)) : 0;
      // both versions are served only while the commit propagates: an old answer is asked for
      // before the last host switched (plus its web server's switch), never after
      assert.ok(
        w.mixedMs <= w.commitToLastSwitchMs + 250,
        `version ${w.version}: both served for ${w.mixedMs} ms, commit to last switch ${w.commitToLastSwitchMs} ms`,
      );
    }
    console.log(`fleet: mixed-version window vs commit to last switch (ms): ${JSON.stringify(windows)}`);
    await assertSameTrees(coordinator, hosts);
    // a rollback is a fleet swap too: every host mounts the previous release again, together
    const back = await coordinator.api<SwapRecord>('POST', '/v1/rollback?wait=1');
    assert.equal(back.status, 200, JSON.stringify(back.body));
    for (const h of hosts) assert.equal(await served(h), 4, `${h.id} serves version 4 after the rollback`);
    await assertSameTrees(coordinator, hosts);
    await put(coordinator, 5);
    assert.equal((await sync(coordinator)).status, 200);
  });

  it('a new host joining the running fleet with an empty store catches up and serves the current epoch', async () => {
    const f = fleets[0] as TestFleet;
    const coordinator = f.coordinator as FleetCoordinatorProc;
    const epoch = (await fleetStatus(coordinator)).fleet.epoch?.epoch as number;
    const joiner = await f.addHost('h4');
    await f.converged(epoch, [joiner]);
    assert.equal(await served(joiner), 5);
    await assertSameTrees(coordinator, [joiner]);
    // and it takes part in the next swap
    await put(coordinator, 6);
    const res = await sync(coordinator);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.ok(res.body.fleet?.members.includes('h4'), JSON.stringify(res.body.fleet));
    for (const h of f.hosts) assert.equal(await served(h), 6, `${h.id} serves version 6`);
    // the operator's view: every host, its epoch, lag and readiness
    const shown = await cli(['status', '--agent', coordinator.url, '--token-file', f.tokenFile]);
    assert.equal(shown.code, 0, shown.output);
    assert.match(
      shown.output,
      /fleet lockstep: this agent is its coordinator; committed epoch \d+ \(snapshot [0-9a-f]{8}\)/,
    );
    const committedSnapshot = /\(snapshot ([0-9a-f]{8})\)/.exec(shown.output)?.[1] as string;
    for (const id of ['h1', 'h2', 'h3', 'h4']) {
      const line = shown.output.split('\n').find((l) => new RegExp(`^\\s+${id}\\s`).test(l)) ?? '';
      assert.match(line, /^\s+h\d\s+\d+\s+[ab]\s+0\s+yes\s/, `${id}'s row: ${line}`);
      assert.ok(line.includes(committedSnapshot), `${id}'s row shows a slot holding the committed snapshot: ${line}`);
    }
  });

  it('a second host agent started with a host id already in use stands aside: no answer or ack in its name', async () => {
    const f = fleets[0] as TestFleet;
    const coordinator = f.coordinator as FleetCoordinatorProc;
    const impostor = await f.addHost('h2');
    await waitFor(
      'the impostor to say why it stands aside',
      async () => {
        const s = await impostor.status();
        return !s.ready && /host id h2 is registered by another host agent/.test(s.lastError ?? '');
      },
      { timeout: 10_000, step: 50 },
    );
    await put(coordinator, 7);
    const res = await sync(coordinator);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.fleet?.members.filter((h) => h === 'h2').length, 1);
    const status = await fleetStatus(coordinator);
    assert.equal(status.fleet.hosts.filter((h) => h.host === 'h2').length, 1);
    // the real h2 took part: it serves the new version; the impostor follows commits for its own servers
    const real = f.hosts.find((h) => h.id === 'h2' && h !== impostor) as FleetHostProc;
    assert.equal(await served(real), 7);
    await waitFor('the impostor to follow the commit', async () => (await served(impostor)) === 7, { timeout: 10_000 });
    assert.equal((await impostor.status()).ready, false);
    await impostor.stop();
    f.hosts.splice(f.hosts.indexOf(impostor), 1);
  });

  it('block: a host stopped past its lease during prepare aborts the swap with nothing switched anywhere', async () => {
    const f = await fleet('block');
    const coordinator = await f.startCoordinator(['--prepare-timeout', '3s']);
    const hosts = [await f.addHost('h1'), await f.addHost('h2'), await f.addHost('h3')];
    await put(coordinator, 1);
    assert.equal((await sync(coordinator)).status, 200);
    const before = await Promise.all(hosts.map(epochOf));
    const coordinatorBefore = (await fleetStatus(coordinator)).epoch;

    hosts[2].pause();
    await put(coordinator, 2);
    const res = await sync(coordinator);
    assert.equal(res.status, 503, JSON.stringify(res.body));
    assert.equal(res.body.error?.code, 'FLEET_PREPARE');
    assert.match(res.body.error?.message ?? '', /h3: (its lease ended|did not prepare)/);
    assert.deepEqual(await Promise.all(hosts.map(epochOf)), before, 'no host switched');
    assert.equal((await fleetStatus(coordinator)).epoch, coordinatorBefore, 'the coordinator did not switch');
    for (const h of hosts) assert.equal(await served(h), 1, `${h.id} still serves version 1`);

    hosts[2].resume();
    await waitFor(
      'h3 to register again',
      async () => (await fleetStatus(coordinator)).fleet.hosts.some((h) => h.host === 'h3'),
      { timeout: 10_000, step: 50 },
    );
    const again = await sync(coordinator);
    assert.equal(again.status, 200, JSON.stringify(again.body));
    for (const h of hosts) assert.equal(await served(h), 2);
    await assertSameTrees(coordinator, hosts);
  });

  it('evict: the hook runs first, the swap commits without the stopped host, which catches up when resumed', async () => {
    const f = await fleet('evict');
    const hookLog = join(f.tokenFile, '..', 'evicted.log');
    const coordinator = await f.startCoordinator([
      '--prepare-timeout',
      '3s',
      '--straggler',
      'evict',
      '--on-evict',
      `echo "$MIRRORSWAP_HOST $MIRRORSWAP_EPOCH" >> ${hookLog}`,
    ]);
    const hosts = [await f.addHost('h1'), await f.addHost('h2'), await f.addHost('h3')];
    await put(coordinator, 1);
    assert.equal((await sync(coordinator)).status, 200);

    hosts[2].pause();
    await put(coordinator, 2);
    const res = await sync(coordinator);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(res.body.fleet?.evicted, ['h3']);
    assert.deepEqual(res.body.fleet?.members.sort(), ['h1', 'h2']);
    assert.equal((await readFile(hookLog, 'utf8')).trim(), `h3 ${res.body.epoch}`);
    assert.equal(await served(hosts[0]), 2);
    assert.equal(await served(hosts[1]), 2);
    assert.equal(await served(hosts[2]), 1, 'the evicted host still serves what it had');

    hosts[2].resume();
    await f.converged(res.body.epoch, [hosts[2]]);
    assert.equal(await served(hosts[2]), 2);
    await assertSameTrees(coordinator, hosts);
  });

  it('a host that missed a commit catches up from the coordinator elected now, even on another address', async () => {
    const f = await fleet('moved');
    const coordinator = await f.startCoordinator(['--prepare-timeout', '3s', '--straggler', 'evict']);
    const hosts = [await f.addHost('h1'), await f.addHost('h2')];
    await put(coordinator, 1);
    assert.equal((await sync(coordinator)).status, 200);
    hosts[1].pause();
    await put(coordinator, 2);
    const res = await sync(coordinator);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(res.body.fleet?.evicted, ['h2']);
    // the coordinator moves: same store, another port
    await coordinator.proc.kill();
    const port = await freePort();
    const args = coordinator.args.map((a) => (a.startsWith('127.0.0.1:') ? `127.0.0.1:${port}` : a));
    const moved = {
      ...(await startAgentProc(coordinator.store, f.tokenFile, f.token, args)),
      store: coordinator.store,
      args,
    };
    f.coordinator = moved;
    await waitFor(
      'the moved coordinator to be elected',
      async () => (await fleetStatus(moved)).fleet.coordinator.elected,
      {
        timeout: 15_000,
        step: 50,
      },
    );
    hosts[1].resume();
    await f.converged(res.body.epoch, [hosts[1]]);
    assert.equal(await served(hosts[1]), 2);
    await assertSameTrees(moved, hosts);
  });

  it('a host agent killed -9 mid-pull: the swap is aborted, and restarted it repairs its half-written copy', async () => {
    const f = await fleet('host-crash');
    // the restarted host repairs its copy by a whole compare and a 60 MiB file within the timeout:
    // about 1.1 s on a quiet machine, past 4 s once on a loaded one
    const coordinator = await f.startCoordinator(['--prepare-timeout', '8s']);
    const hosts = [await f.addHost('h1'), await f.addHost('h2')];
    await put(coordinator, 1);
    assert.equal((await sync(coordinator)).status, 200);
    const before = await Promise.all(hosts.map(epochOf));
    // a pull long enough to be caught in the middle
    const big = await coordinator.api('PUT', '/v1/files/big.bin', 'y'.repeat(60 * 1024 * 1024));
    assert.equal(big.status, 201);
    await put(coordinator, 2);
    const pending = sync(coordinator);
    const victim = hosts[1] as FleetHostProc;
    const slotsFile = join(victim.store.stateDir, 'fleet-slots.json');
    const unfinished = async () => {
      const text = await readFile(slotsFile, 'utf8').catch(() => '{}');
      const slots = (JSON.parse(text) as { slots?: Record<string, { copying: boolean }> }).slots ?? {};
      return Object.values(slots).some((x) => x.copying);
    };
    // killed once its standby is marked unfinished: in the middle of writing it
    await waitFor('h2 to be pulling', unfinished, { timeout: 15_000, step: 2 });
    victim.agent.child.kill('SIGKILL');
    const res = await pending;
    assert.equal(res.status, 503, JSON.stringify(res.body));
    assert.equal(res.body.error?.code, 'FLEET_PREPARE');
    assert.deepEqual(await Promise.all(hosts.map(epochOf)), before, 'nothing switched anywhere');
    // what the crash left: the standby still marked unfinished, never taken for a complete copy
    assert.ok(await unfinished());
    await victim.restartAgent();
    await waitFor(
      'h2 to register again',
      async () => (await fleetStatus(coordinator)).fleet.hosts.some((h) => h.host === 'h2'),
      { timeout: 10_000, step: 50 },
    );
    const again = await sync(coordinator);
    assert.equal(again.status, 200, JSON.stringify(again.body));
    for (const h of hosts) assert.equal(await served(h), 2);
    await assertSameTrees(coordinator, hosts);
  });

  it('a coordinator killed between prepare and commit: restarted, it aborts the proposal; nothing is half applied', async () => {
    const f = await fleet('coordinator-crash');
    const coordinator = await f.startCoordinator(['--prepare-timeout', '30s']);
    const hosts = [await f.addHost('h1'), await f.addHost('h2'), await f.addHost('h3')];
    await put(coordinator, 1);
    assert.equal((await sync(coordinator)).status, 200);
    const before = await Promise.all(hosts.map(epochOf));

    hosts[2].pause();
    await put(coordinator, 2);
    const pending = sync(coordinator).catch(() => null);
    await waitFor('the proposal to be in etcd', async () => (await fleetStatus(coordinator)).fleet.swap !== null, {
      timeout: 10_000,
      step: 20,
    });
    // h1 and h2 prepare; then the coordinator dies before it can commit
    await delay(500);
    await coordinator.proc.kill('SIGKILL');
    await pending;
    hosts[2].resume();
    await delay(500);
    assert.deepEqual(await Promise.all(hosts.map(epochOf)), before, 'no host switched without a commit');

    const restarted = await startAgentProc(coordinator.store, f.tokenFile, f.token, coordinator.args);
    const again = { ...restarted, store: coordinator.store, args: coordinator.args };
    f.coordinator = again;
    await waitFor(
      'the restarted coordinator to be elected and abort the proposal',
      async () => {
        const s = await fleetStatus(again);
        return s.fleet.coordinator.elected && s.fleet.swap === null;
      },
      { timeout: 15_000, step: 50 },
    );
    assert.deepEqual(await Promise.all(hosts.map(epochOf)), before, 'the aborted proposal switched nobody');
    const res = await sync(again);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    for (const h of hosts) assert.equal(await served(h), 2);
    await assertSameTrees(again, hosts);
  });

  it('two coordinators: only the elected one commits; one stopped past its lease cannot commit when it resumes', async () => {
    const f = await fleet('two-coordinators');
    const first = await f.startCoordinator(['--prepare-timeout', '30s']);
    const hosts = [await f.addHost('h1'), await f.addHost('h2')];
    await put(first, 1);
    assert.equal((await sync(first)).status, 200);
    // the second beside its own copy of master, holding other content
    const second = await f.startCoordinator(['--prepare-timeout', '30s']);
    const refused = await sync(second);
    assert.equal(refused.status, 503);
    assert.equal(refused.body.error?.code, 'NOT_COORDINATOR');

    // the first proposes, then stops before its commit, past its lease
    hosts[1].pause();
    await put(first, 2);
    const pending = sync(first);
    await waitFor('the first proposal', async () => (await fleetStatus(second)).fleet.swap !== null, {
      timeout: 10_000,
      step: 20,
    });
    first.proc.child.kill('SIGSTOP');
    hosts[1].resume();
    await waitFor(
      'the second coordinator to be elected',
      async () => (await fleetStatus(second)).fleet.coordinator.elected,
      {
        timeout: 15_000,
        step: 50,
      },
    );
    const res = await second.api('PUT', `/v1/files/${FILE}`, body(7));
    assert.equal(res.status, 201);
    const committed = await sync(second);
    assert.equal(committed.status, 200, JSON.stringify(committed.body));
    for (const h of hosts) assert.equal(await served(h), 7);

    first.proc.child.kill('SIGCONT');
    const late = await pending;
    assert.notEqual(
      late.body.result,
      'ok',
      `the stopped coordinator's swap must not be reported ok: ${JSON.stringify(late.body)}`,
    );
    await delay(500);
    for (const h of hosts)
      assert.equal(await served(h), 7, `${h.id} never switched to the first coordinator's proposal`);
    await assertSameTrees(second, hosts);
    await first.proc.kill();
    await second.proc.kill();
  });

  it('etcd faults: leader killed mid-prepare and mid-commit, a follower killed: every live host ends on one epoch, equal to master', async () => {
    const f = await fleet('etcd-faults');
    const coordinator = await f.startCoordinator(['--prepare-timeout', '8s']);
    const hosts = [await f.addHost('h1'), await f.addHost('h2'), await f.addHost('h3')];
    await put(coordinator, 1);
    assert.equal((await sync(coordinator)).status, 200);
    const reportedOk: SwapRecord[] = [];
    const faults = ['leader', 'leader', 'follower', 'leader', 'leader', 'follower'] as const;
    for (let round = 0; round < faults.length; round++) {
      await put(coordinator, round + 2);
      const leader = await cluster.leader();
      const victim = faults[round] === 'leader' ? leader : (cluster.members.find((m) => m !== leader) as typeof leader);
      const pending = sync(coordinator).catch((err: Error) => ({
        status: 0,
        body: { result: err.message } as unknown as SwapRecord,
      }));
      // early rounds hit the prepare, later ones the commit and the drain
      await delay([5, 40, 20, 80, 120, 60][round] as number);
      await victim.kill();
      const res = await pending;
      if (res.body.result === 'ok') reportedOk.push(res.body);
      await victim.restart();
      await cluster.leader();
    }
    // etcd whole again: one more swap, then every host must be where the coordinator is
    await put(coordinator, 99);
    await waitFor('a swap to go through once etcd is whole', async () => (await sync(coordinator)).status === 200, {
      timeout: 30_000,
      step: 500,
    });
    const final = (await fleetStatus(coordinator)).fleet.epoch?.epoch as number;
    await f.converged(final);
    await assertSameTrees(coordinator, hosts);
    for (const h of hosts) assert.equal(await served(h), 99);
    // every swap reported ok happened: each of its hosts switched to its epoch
    for (const record of reportedOk) {
      for (const id of record.fleet?.members ?? []) {
        const h = hosts.find((x) => x.id === id) as FleetHostProc;
        assert.match(
          h.agent.output(),
          new RegExp(`"epoch":${record.epoch},"slot":"[ab]","msg":"switched to fleet epoch ${record.epoch}"`),
          `${id} switched to epoch ${record.epoch}, reported ok`,
        );
      }
    }
    console.log(`fleet: ${reportedOk.length} of ${faults.length} swaps under etcd faults reported ok`);
  });
});
