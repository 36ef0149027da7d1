import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { SwapRecord } from '../../src/agent/agent.js';
import { EtcdGateway } from '../../src/fleet/etcd.js';
import { type SwapProposal, fleetKeys, parseJson } from '../../src/fleet/fleet-keys.js';
import { type EtcdCluster, startEtcdCluster } from '../../testkit/etcd.js';
import { type FleetCoordinatorProc, type FleetHostProc, TestFleet, mountedTree } from '../../testkit/fleet.js';
import { type HostilePeer, type PeerMode, startHostilePeer } from '../../testkit/hostile-peer.js';
import { waitFor } from '../../testkit/wait.js';

// Peers share the bytes, with real processes: a coordinator, host agents each with its own store
// and web server, and etcd. The coordinator sends each changed byte to the seeds; the other hosts
// take it from a peer; a peer stopped, killed or lying costs a retry, never a wrong byte.

const FILE = 'v.bin';
/** One version of the changed file: its number first, then bytes that differ per version. */
const content = (version: number, size: number) =>
  Buffer.concat([Buffer.from(`version ${version}\n`), randomBytes(size)]);

interface Sent {
  manifests: number;
  files: number;
}

async function sent(coordinator: FleetCoordinatorProc): Promise<Sent> {
  const res = await coordinator.api<{ fleet: { sent: Sent } }>('GET', '/v1/status');
  return res.body.fleet.sent;
}

async function put(coordinator: FleetCoordinatorProc, body: Buffer): Promise<void> {
  const res = await fetch(`${coordinator.url}/v1/files/${FILE}`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${coordinator.token}` },
    body,
  });
  assert.equal(res.status, 201, await res.text());
}

async function sync(coordinator: FleetCoordinatorProc): Promise<{ status: number; body: SwapRecord }> {
  return coordinator.api<SwapRecord>('POST', '/v1/sync?wait=1');
}

/** The version a host's web server serves of FILE now. */
async function served(host: FleetHostProc): Promise<number> {
  const res = await fetch(`${host.web?.url}/${FILE}`);
  const m = /^version (\d+)\n/.exec(Buffer.from(await res.arrayBuffer()).toString('latin1'));
  return m ? Number(m[1]) : -res.status;
}

async function assertSameTrees(coordinator: FleetCoordinatorProc, hosts: FleetHostProc[]): Promise<void> {
  const expected = await mountedTree(coordinator.store.root, coordinator.store.epochFile);
  for (const h of hosts) {
    const got = await mountedTree(h.store.root, h.store.epochFile);
    assert.equal(got.epoch, expected.epoch, `${h.id} is at epoch ${got.epoch}, the coordinator at ${expected.epoch}`);
    assert.ok(got.tree === expected.tree, `${h.id}'s mounted copy differs from the coordinator's`);
  }
}

/** The proposal under way once it names another snapshot than `not`. */
async function nextProposal(etcd: EtcdGateway, fleet: string, not: string | null): Promise<SwapProposal> {
  let proposal: SwapProposal | null = null;
  await waitFor(
    'the proposal',
    async () => {
      proposal = parseJson<SwapProposal>((await etcd.get(fleetKeys(fleet).swap))?.value);
      return proposal !== null && proposal.snapshot !== not;
    },
    { timeout: 30_000, step: 5 },
  );
  return proposal as unknown as SwapProposal;
}

describe('fleet mode: peers share the bytes', { timeout: 600_000 }, () => {
  let cluster: EtcdCluster;
  let etcd: EtcdGateway;
  const fleets: TestFleet[] = [];
  const fleet = async (name: string) => {
    const f = await TestFleet.create(cluster, name);
    fleets.push(f);
    return f;
  };

  before(async () => {
    cluster = await startEtcdCluster(1);
    etcd = new EtcdGateway({ endpoints: cluster.endpoints.split(',') });
  });
  after(async () => {
    for (const f of fleets) await f.stop();
    etcd?.close();
    await cluster?.stop();
  });

  it('6 hosts, 2 seeds: the coordinator sends each changed byte about twice, every host serves it', async () => {
    const f = await fleet('peers6');
    const coordinator = await f.startCoordinator(['--seeds', '2', '--prepare-timeout', '30s']);
    const hosts: FleetHostProc[] = [];
    for (let i = 1; i <= 6; i++) hosts.push(await f.addHost(`h${i}`));
    const size = 512 * 1024;
    // the first swaps fill both slots of every host (their first pulls compare whole trees)
    for (const v of [1, 2]) {
      await put(coordinator, content(v, size));
      const res = await sync(coordinator);
      assert.equal(res.status, 200, JSON.stringify(res.body));
    }
    const perSwap: { files: number; manifests: number }[] = [];
    // every host, seeds first, says it shares each swap's snapshot as it pulls it (`sharing/<S>/<host>`)
    const sharing = new Set<string>();
    const keys = fleetKeys(f.name);
    const watch = etcd.watch(`${keys.root}sharing/`, {
      prefix: true,
      onEvents: (events) => {
        for (const e of events) if (e.type === 'put') sharing.add(e.kv.key.slice(`${keys.root}sharing/`.length));
      },
    });
    after(() => watch.close());
    for (let v = 3; v <= 5; v++) {
      await put(coordinator, content(v, size));
      const before = await sent(coordinator);
      sharing.clear();
      const res = await sync(coordinator);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      await waitFor(
        'every host said it shares',
        () => hosts.every((h) => [...sharing].some((k) => k.endsWith(`/${h.id}`))),
        {
          timeout: 5000,
        },
      ).catch(() => assert.fail(`hosts that said they share: ${[...sharing].join(', ')} (version ${v})`));
      for (const h of hosts) assert.equal(await served(h), v, `${h.id} serves version ${v}`);
      const now = await sent(coordinator);
      perSwap.push({ files: now.files - before.files, manifests: now.manifests - before.manifests });
      const pulls = await Promise.all(hosts.map(async (h) => (await h.status()).lastPull));
      const seeds = pulls.filter((p) => p?.seed);
      assert.equal(seeds.length, 2, `two seeds: ${JSON.stringify(pulls)}`);
      for (const p of pulls.filter((x) => !x?.seed))
        assert.ok((p?.fromPeers ?? 0) >= size, `a host not a seed took the file from peers: ${JSON.stringify(p)}`);
    }
    console.log(
      `fleet peers: coordinator bytes out per swap of one ${size}-byte change, 6 hosts: ${JSON.stringify(perSwap)}`,
    );
    for (const s of perSwap) {
      // the seeds' files, plus one file's worth of slack (a fallback); manifests are small
      assert.ok(s.files <= 3 * (size + 1024), `coordinator sent ${s.files} bytes of files for one change of ${size}`);
      assert.ok(s.manifests <= hosts.length * 4096, `coordinator sent ${s.manifests} bytes of manifests`);
    }
    await assertSameTrees(coordinator, hosts);
    // a host serves peers only with the fleet token
    const bare = await fetch(`${hosts[0]?.statusUrl}/v1/fleet/files?snapshot=x`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ paths: [FILE] }),
    });
    assert.equal(bare.status, 401);
    const gone = await fetch(`${hosts[0]?.statusUrl}/v1/fleet/files?snapshot=not-one-it-holds`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${f.token}` },
      body: JSON.stringify({ paths: [FILE] }),
    });
    assert.equal(gone.status, 410);
  });

  it('hostile peers advertised mid-swap, as prepared or as sharing: every host prepares the coordinator bytes, none of theirs', async () => {
    const f = fleets[0] as TestFleet;
    const coordinator = f.coordinator as FleetCoordinatorProc;
    const hosts = f.hosts;
    // the last round says they still pull it and share it as they go (`sharing`): picked when no
    // host holding it whole is free, which at the start of a swap is every time
    const modes: [PeerMode[], 'prepared' | 'sharing'][] = [
      [['damaged', 'other-path', 'wrong-size'], 'prepared'],
      [['hang', 'stall', 'slow'], 'prepared'],
      [['cut', 'busy', 'huge-header', 'error-drip', 'bad-trailer', 'gone'], 'prepared'],
      [['damaged', 'hang', 'cut', 'wrong-size'], 'sharing'],
    ];
    let version = 10;
    let last: string | null = null;
    for (const [round, as] of modes) {
      // A round proves something only if the hosts asked the hostile peers. They are advertised once
      // the proposal is out; a host already saying it shares the snapshot pulls only from sharers that
      // said so before it (no two hosts wait on each other), so when every host got there first, a
      // sharing round asks none of them: it is made again, with a new version, a few times at most.
      for (let attempt = 1; ; attempt++) {
        // each lies from the tree the coordinator's copy will hold (same paths and sizes)
        const bad: HostilePeer[] = await Promise.all(
          round.map((m) => startHostilePeer(m, coordinator.store.master, { token: f.token })),
        );
        try {
          version++;
          await put(coordinator, content(version, 256 * 1024));
          const pending = sync(coordinator);
          const proposal = await nextProposal(etcd, f.name, last);
          last = proposal.snapshot;
          // advertised as having prepared it before any seed has: the hosts waiting for a peer see them first
          const keys = fleetKeys(f.name);
          for (const [i, b] of bad.entries())
            await etcd.put(
              as === 'prepared'
                ? keys.preparedBy(proposal.snapshot, `evil-${i}`)
                : keys.sharingBy(proposal.snapshot, `evil-${i}`),
              JSON.stringify(
                as === 'prepared'
                  ? { ok: true, slot: 'a', snapshot: proposal.snapshot, peer: b.url }
                  : { snapshot: proposal.snapshot, peer: b.url },
              ),
            );
          const res = await pending;
          assert.equal(res.status, 200, JSON.stringify(res.body));
          for (const h of hosts) assert.equal(await served(h), version, `${h.id} serves version ${version}`);
          await assertSameTrees(coordinator, hosts);
          const asked = bad.reduce((n, b) => n + b.requests, 0);
          const failures = await Promise.all(hosts.map(async (h) => (await h.status()).lastPull?.peerFailures ?? 0));
          console.log(
            `fleet peers: hostile ${round.join(', ')} (${as}): asked ${asked} times; failures per host ${JSON.stringify(failures)}`,
          );
          if (asked === 0 && attempt < 4) continue;
          assert.ok(asked > 0, `the hostile peers were asked (in ${attempt} rounds)`);
          break;
        } finally {
          for (const b of bad) await b.close();
        }
      }
    }
  });

  for (const fault of ['SIGSTOP', 'SIGKILL'] as const) {
    it(`a seed ${fault === 'SIGSTOP' ? 'stopped' : 'killed'} while its peers pull from it: they prepare from the coordinator`, async () => {
      const f = await fleet(`peers-${fault.toLowerCase()}`);
      const coordinator = await f.startCoordinator([
        '--seeds',
        '1',
        '--prepare-timeout',
        '40s',
        '--straggler',
        'evict',
      ]);
      const hosts: FleetHostProc[] = [];
      for (let i = 1; i <= 4; i++) hosts.push(await f.addHost(`s${i}`, { args: ['--peer-serve', '3'] }));
      await put(coordinator, content(1, 1024));
      const first = await sync(coordinator);
      assert.equal(first.status, 200, JSON.stringify(first.body));
      const before = first.body;
      // a change large enough to be caught mid-transfer
      await put(coordinator, content(2, 48 * 1024 * 1024));
      const pending = sync(coordinator);
      const proposal = await nextProposal(etcd, f.name, null);
      const seedId = proposal.seeds?.[0];
      assert.ok(seedId, JSON.stringify(proposal));
      const seed = hosts.find((h) => h.id === seedId) as FleetHostProc;
      await waitFor(
        `the seed ${seedId} to serve its peers`,
        async () => ((await seed.status().catch(() => null))?.peers.active ?? 0) > 0,
        { timeout: 60_000, step: 5 },
      );
      if (fault === 'SIGSTOP') seed.pause();
      else await seed.agent.kill('SIGKILL');
      const res = await pending;
      const others = hosts.filter((h) => h !== seed);
      // the swap commits (the seed had prepared it; a stopped one is dropped from the drain)
      assert.equal(res.body.epoch > before.epoch, true, JSON.stringify(res.body));
      await f.converged(res.body.epoch, others, 60_000);
      for (const h of others) assert.equal(await served(h), 2, `${h.id} serves version 2`);
      await assertSameTrees(coordinator, others);
      const pulls = await Promise.all(others.map(async (h) => (await h.status()).lastPull));
      console.log(
        `fleet peers: seed ${fault}: pulls ${JSON.stringify(pulls.map((p) => ({ fromPeers: p?.fromPeers, fromCoordinator: p?.fromCoordinator, failures: p?.peerFailures })))}`,
      );
      assert.ok(
        pulls.some((p) => (p?.peerFailures ?? 0) > 0),
        'some host was cut off from the seed mid-pull and retried elsewhere',
      );
      // the seed back: it serves the same as everyone
      if (fault === 'SIGSTOP') seed.resume();
      else await seed.restartAgent();
      await f.converged(res.body.epoch, hosts, 60_000);
      await assertSameTrees(coordinator, hosts);
    });
  }
});
