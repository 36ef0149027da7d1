import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { EtcdGateway } from '../../src/fleet/etcd.js';
import { fleetKeys } from '../../src/fleet/fleet-keys.js';
import { PeerFinder } from '../../src/fleet/host/peer-finder.js';
import { putNewKey } from '../../src/fleet/host/sharing-key.js';
import { type EtcdCluster, startEtcdCluster } from '../../testkit/etcd.js';
import { memoryLogger } from '../../testkit/logger.js';

// Hosts still pulling a snapshot share its files as they place them. A host pulls from such a
// host only if that one said so first (a lower create revision of its `sharing` key): two hosts
// pulling from each other would each wait for a file the other has not placed.
describe('finding peers that still pull the snapshot', { timeout: 60_000 }, () => {
  let cluster: EtcdCluster;
  let etcd: EtcdGateway;
  before(async () => {
    cluster = await startEtcdCluster(1);
    etcd = new EtcdGateway({ endpoints: cluster.endpoints.split(',') });
  });
  after(async () => {
    etcd?.close();
    await cluster?.stop();
  });

  const SNAPSHOT = 'snap-1';
  const finderFor = (fleet: string, waitMs = 300) =>
    new PeerFinder({
      etcd,
      keys: fleetKeys(fleet),
      snapshot: SNAPSHOT,
      self: 'me',
      from: 'prepared',
      seeds: ['seed'],
      waitMs,
      backstopMs: 50,
      log: memoryLogger(),
    });
  const share = (fleet: string, host: string, snapshot = SNAPSHOT) =>
    etcd.put(
      fleetKeys(fleet).sharingBy(snapshot, host),
      JSON.stringify({ snapshot, peer: `http://${host}.test:7071` }),
    );

  /** A host `whole` answers it prepared the snapshot; what `finder` picks once it has seen that (or after 2 s). */
  const prepareWhole = async (fleet: string, finder: PeerFinder) => {
    await etcd.put(
      fleetKeys(fleet).preparedBy(SNAPSHOT, 'whole'),
      JSON.stringify({ ok: true, slot: 'b', snapshot: SNAPSHOT, peer: 'http://whole.test:7071' }),
    );
    let picked: string | null = null;
    for (let i = 0; i < 100 && picked !== 'http://whole.test:7071'; i++) {
      picked = await finder.pick(() => null);
      if (picked !== 'http://whole.test:7071') await new Promise((r) => setTimeout(r, 20));
    }
    return picked;
  };

  it('picks only hosts that said they share before this host did: never one that may be pulling from it', async () => {
    const fleet = 'finder-order';
    await share(fleet, 'older');
    // a key of another name giving the younger one's URL, older than this host's (left over, or a
    // lie): it must not make the younger one look earlier
    await etcd.put(
      fleetKeys(fleet).sharingBy(SNAPSHOT, 'ghost'),
      JSON.stringify({ snapshot: SNAPSHOT, peer: 'http://younger.test:7071' }),
    );
    const own = await share(fleet, 'me');
    await share(fleet, 'younger');
    await share(fleet, 'other-snapshot', 'snap-0');
    const finder = finderFor(fleet);
    try {
      finder.ownRevision(own);
      const picked = new Set<string>();
      for (let i = 0; i < 30; i++) picked.add((await finder.pick(() => null)) ?? 'none');
      assert.deepEqual([...picked], ['http://older.test:7071']);
      // the older one failed: the younger one is never a fallback; the wait ends with the coordinator
      const none = await finder.pick((url) => (url === 'http://older.test:7071' ? 'failed' : null));
      assert.equal(none, null);
    } finally {
      finder.close();
    }
  });

  it('a host says it shares with a key made now: one left from before is made again, later than every other', async () => {
    const fleet = 'finder-stale';
    const keys = fleetKeys(fleet);
    const lease = await etcd.grantLease(30);
    // this host's key, left from an earlier swap to the same snapshot: older than the one it pulls from
    await share(fleet, 'me');
    const other = await share(fleet, 'other');
    const own = await putNewKey(
      etcd,
      keys.sharingBy(SNAPSHOT, 'me'),
      JSON.stringify({ snapshot: SNAPSHOT, peer: 'http://me.test:7071' }),
      lease,
    );
    assert.ok(own > other, `its revision ${own} is after the other's ${other}`);
    assert.equal((await etcd.get(keys.sharingBy(SNAPSHOT, 'me')))?.createRevision, own);
    // so the host it pulls from never picks it: it said so later
    const finder = new PeerFinder({
      etcd,
      keys,
      snapshot: SNAPSHOT,
      self: 'other',
      from: 'prepared',
      seeds: ['seed'],
      waitMs: 300,
      backstopMs: 50,
      log: memoryLogger(),
    });
    try {
      finder.ownRevision(other);
      assert.equal(await finder.pick(() => null), null);
    } finally {
      finder.close();
    }
    // a key made new is its own put's revision
    const fresh = await putNewKey(etcd, keys.sharingBy(SNAPSHOT, 'new'), '{}', lease);
    assert.equal((await etcd.get(keys.sharingBy(SNAPSHOT, 'new')))?.createRevision, fresh);
  });

  it('before it shares, any host sharing is older than it; a host holding it whole comes first', async () => {
    const fleet = 'finder-whole';
    await share(fleet, 'sharing');
    const finder = finderFor(fleet, 2000);
    try {
      assert.equal(await finder.pick(() => null), 'http://sharing.test:7071');
      // one that prepared it (holds it whole, never waits for a file) is picked first, as it is seen
      assert.equal(await prepareWhole(fleet, finder), 'http://whole.test:7071');
      for (let i = 0; i < 20; i++) assert.equal(await finder.pick(() => null), 'http://whole.test:7071');
      // a sharing host whose pull failed (its answer says so) is no peer any more
      await etcd.put(
        fleetKeys(fleet).preparedBy(SNAPSHOT, 'sharing'),
        JSON.stringify({ ok: false, snapshot: SNAPSHOT, error: 'the pull failed' }),
      );
      await new Promise((r) => setTimeout(r, 200));
      const left = await finder.pick((url) => (url === 'http://whole.test:7071' ? 'failed' : null));
      assert.equal(left, null, 'no peer is left but the coordinator');
    } finally {
      finder.close();
    }
  });

  it('answers holding none of the files count as waiting: past the bound, sharing hosts are asked no more', async () => {
    const fleet = 'finder-waited';
    await share(fleet, 'sharing');
    const finder = finderFor(fleet, 1000);
    try {
      assert.equal(await finder.pick(() => null), 'http://sharing.test:7071');
      finder.waited(1200);
      assert.equal(await finder.pick(() => null), null, 'the wait for peers is spent: the coordinator');
      // a host holding it whole never waits for a file: still a peer
      assert.equal(await prepareWhole(fleet, finder), 'http://whole.test:7071');
    } finally {
      finder.close();
    }
  });
});
