import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { SwapRecord } from '../../src/agent/agent.js';
import { type EpochRecord, readEpochFile, slotRoot } from '../../src/store/epoch-file.js';
import { type EtcdCluster, startEtcdCluster } from '../../testkit/etcd.js';
import { type FleetCoordinatorProc, type FleetHostProc, TestFleet } from '../../testkit/fleet.js';
import { treeOf } from '../../testkit/trees.js';

// Fleet mode keeping releases (`mirrorswap host --keep 4`), with real processes: a coordinator, two
// host agents each with its own store and web server (`mirrorswap serve`), and etcd. Every host keeps
// the same releases under the same epochs and ids, so a pin resolves to the same bytes on each; a
// host's copies share what did not change; a rollback mounts a retained copy with no pull.

const KEEP = 4;
const chunk = (n: number) => `assets/chunk-${n}a${n}b${n}c${n}d.js`;
const BIG = 4 * 1024 * 1024;

describe('fleet mode keeping releases', { timeout: 600_000 }, () => {
  let cluster: EtcdCluster;
  let fleet: TestFleet;
  let coordinator: FleetCoordinatorProc;
  const hosts: FleetHostProc[] = [];

  const put = async (path: string, body: string | Buffer) => {
    const res = await coordinator.api(
      'PUT',
      `/v1/files/${path}`,
      typeof body === 'string' ? body : body.toString('latin1'),
    );
    assert.ok(res.status === 201 || res.status === 200, JSON.stringify(res.body));
  };
  /** Release n: its page and chunk, release n-1's chunk deleted (as a bundler's output replaces it). */
  const release = async (n: number): Promise<SwapRecord> => {
    await put('index.html', `release ${n}`);
    await put(chunk(n), `export const release = ${n};\n`);
    if (n > 1) assert.equal((await coordinator.api('DELETE', `/v1/files/${chunk(n - 1)}`)).status, 200);
    const res = await coordinator.api<SwapRecord>('POST', `/v1/sync?wait=1&release=r${n}`);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.result, 'ok', JSON.stringify(res.body.error));
    await fleet.converged(res.body.epoch, hosts);
    return res.body;
  };
  const get = async (h: FleetHostProc, path: string, headers: Record<string, string> = {}) => {
    const res = await fetch(`${h.web?.url}${path}`, { headers });
    return { status: res.status, body: Buffer.from(await res.arrayBuffer()).toString() };
  };
  const epochOf = async (h: FleetHostProc) => (await readEpochFile(h.store.epochFile)) as EpochRecord;
  /** Every file of a copy, hashed: a retained release must never change. */
  const hashTree = async (root: string) =>
    createHash('sha256')
      .update((await treeOf(root)).join('\n'))
      .digest('hex');

  before(async () => {
    cluster = await startEtcdCluster(1);
    fleet = await TestFleet.create(cluster, 'keep');
    coordinator = await fleet.startCoordinator();
    await put('big.bin', Buffer.alloc(BIG, 'k'));
    for (const id of ['k1', 'k2']) hosts.push(await fleet.addHost(id, { args: ['--keep', String(KEEP)] }));
    for (let n = 1; n <= 4; n++) await release(n);
  });
  after(async () => {
    await fleet?.stop();
    await cluster?.stop();
  });

  it('every host retains the same releases, under the same epochs and ids, K-2 besides the mounted one', async () => {
    const [first, ...others] = await Promise.all(hosts.map(epochOf));
    assert.ok(first);
    assert.equal(first.release, 'r4');
    assert.deepEqual(
      first.retained?.map((r) => r.release),
      ['r3', 'r2'],
    );
    const names = (e: EpochRecord) =>
      JSON.stringify([e.epoch, e.release, e.retained?.map((r) => [r.epoch, r.release])]);
    for (const e of others) assert.equal(names(e), names(first));
    // four copies in use on each host at most: the mounted one, two retained, one free
    for (const h of hosts) {
      const e = await epochOf(h);
      const used = new Set([e.mounted, ...(e.retained ?? []).map((r) => r.slot)]);
      assert.equal(used.size, 3);
      for (const s of used) assert.ok(['a', 'b', 'c', 'd'].includes(s), s);
    }
  });

  it('a pin resolves to the same bytes on every host, by id, epoch, header or cookie; one not retained gets the mounted release', async () => {
    const e = await epochOf(hosts[0] as FleetHostProc);
    const r2 = e.retained?.find((r) => r.release === 'r2');
    assert.ok(r2);
    for (const h of hosts) {
      assert.equal((await get(h, '/index.html?dpl=r3')).body, 'release 3');
      assert.equal((await get(h, `/index.html?dpl=${r2.epoch}`)).body, 'release 2');
      assert.equal((await get(h, '/index.html', { 'x-deployment-id': 'r2' })).body, 'release 2');
      assert.equal((await get(h, '/index.html', { cookie: '__dpl=r3' })).body, 'release 3');
      // release 2's chunk, deleted by release 3: pinned, and as an asset fallback for a request naming none
      assert.equal((await get(h, `/${chunk(2)}?dpl=r2`)).body, 'export const release = 2;\n');
      assert.equal((await get(h, `/${chunk(2)}`)).body, 'export const release = 2;\n');
      // release 1 left retention on every host: its pin gets the mounted release, its chunk a 404
      assert.equal((await get(h, '/index.html?dpl=r1')).body, 'release 4');
      assert.equal((await get(h, `/${chunk(1)}`)).status, 404);
    }
  });

  it("a host's copies share what did not change; its pulls link it from the mounted copy", async () => {
    for (const h of hosts) {
      const e = await epochOf(h);
      const inodes = new Set<number>();
      for (const s of [e.mounted, ...(e.retained ?? []).map((r) => r.slot)]) {
        inodes.add((await stat(join(slotRoot(e, h.store.epochFile, s), 'big.bin'))).ino);
      }
      assert.equal(inodes.size, 1, `${h.id}: big.bin is one file in every copy`);
      const pull = (await h.status()).lastPull as { linked?: number; bytes: number } | null;
      assert.ok((pull?.linked ?? 0) >= 1, `${h.id} linked what it held: ${JSON.stringify(pull)}`);
      assert.ok((pull?.bytes ?? BIG) < BIG, `${h.id} fetched no copy of big.bin: ${JSON.stringify(pull)}`);
    }
  });

  it('a retained release never changes while newer releases come and copies are reused', async () => {
    const h = hosts[0] as FleetHostProc;
    const e = await epochOf(h);
    const r3 = e.retained?.find((r) => r.release === 'r3');
    assert.ok(r3);
    const root = slotRoot(e, h.store.epochFile, r3.slot);
    const before = await hashTree(root);
    await release(5);
    assert.equal(await hashTree(root), before);
    assert.equal((await get(h, '/index.html?dpl=r3')).body, 'release 3');
    assert.equal(await readFile(join(root, 'index.html'), 'utf8'), 'release 3');
  });

  it('a fleet rollback mounts the retained copy on every host, with no pull', async () => {
    const pullsBefore = await Promise.all(hosts.map(async (h) => (await h.status()).lastPull?.snapshot));
    const back = await coordinator.api<SwapRecord>('POST', '/v1/rollback?wait=1');
    assert.equal(back.status, 200, JSON.stringify(back.body));
    assert.equal(back.body.result, 'ok', JSON.stringify(back.body.error));
    await fleet.converged(back.body.epoch, hosts);
    for (const [i, h] of hosts.entries()) {
      assert.equal((await get(h, '/index.html')).body, 'release 4');
      assert.equal((await h.status()).lastPull?.snapshot, pullsBefore[i], `${h.id} pulled nothing`);
      const e = await epochOf(h);
      assert.equal(e.release, 'r4');
      // the release it replaced stays retained, pinnable
      assert.equal((await get(h, '/index.html?dpl=r5')).body, 'release 5');
    }
  });

  it('--keep lowered on a host (4 to 3): the next commit retains one, nothing retained is written, pins resolve', async () => {
    const h = hosts[1] as FleetHostProc;
    const before = await epochOf(h);
    const kept = await Promise.all(
      (before.retained ?? []).map(async (r) => ({
        r,
        hash: await hashTree(slotRoot(before, h.store.epochFile, r.slot)),
      })),
    );
    await h.restartAgent(['--keep', '3']);
    // a member again (its predecessor's lease has ended) before the next swap counts it
    await fleet.converged(before.epoch, [h], 20_000);
    const record = await release(6);
    const after = await epochOf(h);
    assert.equal(after.epoch, record.epoch);
    assert.deepEqual(
      after.retained?.map((r) => r.release),
      // by the epoch that published each, newest first, as on a single host: r5 (r4 is older, mounted
      // again by the rollback)
      ['r5'],
    );
    // what was retained when the prepare ran was not written by it
    for (const { r, hash } of kept) {
      if (r.slot === after.mounted || after.retained?.some((x) => x.slot === r.slot)) {
        assert.equal(await hashTree(slotRoot(before, h.store.epochFile, r.slot)), hash, `slot ${r.slot}`);
      }
    }
    assert.equal((await get(h, '/index.html?dpl=r5')).body, 'release 5');
    assert.equal((await get(h, '/index.html?dpl=r4')).body, 'release 6', 'r4 left retention');
    assert.equal((await get(h, '/index.html')).body, 'release 6');
  });
});
