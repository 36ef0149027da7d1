import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { EtcdError, EtcdGateway, type WatchEvent } from '../../src/fleet/etcd.js';
import { type EtcdCluster, makeTestCertificates, startEtcdCluster } from '../../testkit/etcd.js';
import { tempDirs } from '../../testkit/store.js';
import { refusedUrl } from '../../testkit/server.js';
import { waitFor } from '../../testkit/wait.js';

describe('the etcd client (the HTTP/JSON gateway, against a real 3-member etcd)', { timeout: 120_000 }, () => {
  let cluster: EtcdCluster;
  let etcd: EtcdGateway;
  before(async () => {
    cluster = await startEtcdCluster(3);
    etcd = new EtcdGateway({ endpoints: cluster.endpoints.split(','), timeoutMs: 1000 });
  });
  after(async () => {
    etcd?.close();
    await cluster?.stop();
  });

  it('puts, reads keys and prefixes, and runs compare-and-swap transactions', async () => {
    await etcd.put('/t/kv/a', 'one');
    await etcd.put('/t/kv/b', 'two ✓');
    await etcd.put('/t/kw', 'outside the prefix');
    assert.equal((await etcd.get('/t/kv/b'))?.value, 'two ✓');
    assert.equal(await etcd.get('/t/kv/none'), null);
    const { kvs } = await etcd.getPrefix('/t/kv/');
    assert.deepEqual(
      kvs.map((k) => k.key),
      ['/t/kv/a', '/t/kv/b'],
    );
    // create-if-absent: only the first of two succeeds
    const create = () =>
      etcd.txn(
        [{ key: '/t/kv/once', target: 'create', result: 'equal', createRevision: 0 }],
        [{ put: { key: '/t/kv/once', value: 'first' } }],
      );
    assert.equal((await create()).succeeded, true);
    assert.equal((await create()).succeeded, false);
    const once = await etcd.get('/t/kv/once');
    const moved = await etcd.txn(
      [{ key: '/t/kv/once', target: 'mod', result: 'equal', modRevision: once?.modRevision ?? 0 }],
      [{ put: { key: '/t/kv/once', value: 'second' } }, { delete: { key: '/t/kv/a' } }],
    );
    assert.equal(moved.succeeded, true);
    assert.equal((await etcd.get('/t/kv/once'))?.value, 'second');
    assert.equal(await etcd.get('/t/kv/a'), null);
    await etcd.deletePrefix('/t/kv/');
    assert.deepEqual((await etcd.getPrefix('/t/kv/')).kvs, []);
  });

  it('a key on a lease goes when the lease is not kept alive; keep-alive says so once it is gone', async () => {
    const lease = await etcd.grantLease(2);
    await etcd.put('/t/lease/k', 'v', lease);
    assert.equal(await etcd.keepAlive(lease), true);
    await waitFor('the lease to expire', async () => (await etcd.get('/t/lease/k')) === null, {
      timeout: 6000,
      step: 100,
    });
    assert.equal(await etcd.keepAlive(lease), false);
    const revoked = await etcd.grantLease(30);
    await etcd.put('/t/lease/r', 'v', revoked);
    await etcd.revoke(revoked);
    assert.equal(await etcd.get('/t/lease/r'), null);
  });

  it('a watch sees every change in order, across the death of the member it listens to', async () => {
    const seen: WatchEvent[] = [];
    const start = await etcd.put('/t/watch/start', 'x');
    const watch = etcd.watch('/t/watch/', { prefix: true, fromRevision: start + 1, onEvents: (e) => seen.push(...e) });
    try {
      await etcd.put('/t/watch/k', '1');
      await waitFor('the first event', () => seen.length === 1);
      // the client talks to the first endpoint it could; kill every member in turn but keep a quorum
      for (const member of cluster.members) {
        await member.kill();
        await etcd.put('/t/watch/k', `after ${member.name}`).catch(async () => {
          await delay(500);
          await etcd.put('/t/watch/k', `after ${member.name}`);
        });
        await member.restart();
        await cluster.leader();
      }
      await etcd.delete('/t/watch/k');
      await waitFor('every event', () => seen.length === 5, { timeout: 15_000, step: 20 });
      assert.deepEqual(
        seen.map((e) => `${e.type} ${e.kv.value}`),
        ['put 1', 'put after m0', 'put after m1', 'put after m2', 'delete '],
      );
      const revisions = seen.map((e) => e.kv.modRevision);
      assert.deepEqual(
        revisions,
        [...revisions].sort((x, y) => x - y),
        'in revision order, none twice',
      );
    } finally {
      watch.close();
    }
  });

  it('a watch from a compacted revision says so (the caller re-reads), then goes on', async () => {
    const first = await etcd.put('/t/compact/k', '1');
    const last = await etcd.put('/t/compact/k', '2');
    await fetch(`${cluster.members[0].clientUrl}/v3/kv/compaction`, {
      method: 'POST',
      body: JSON.stringify({ revision: String(last), physical: true }),
    });
    let compacted = 0;
    const seen: string[] = [];
    const watch = etcd.watch('/t/compact/', {
      prefix: true,
      fromRevision: first,
      onEvents: (e) => seen.push(...e.map((x) => x.kv.value)),
      onCompacted: (rev) => {
        compacted = rev;
      },
    });
    try {
      await waitFor('the compaction to be reported', () => compacted > 0, { timeout: 5000 });
      assert.ok(compacted >= last - 1, `compacted at ${compacted}`);
      await etcd.put('/t/compact/k', '3');
      await waitFor('the watch to go on', () => seen.includes('3'), { timeout: 5000 });
    } finally {
      watch.close();
    }
  });

  it('every call has a deadline: a stopped member is passed over; no member at all is an error naming each', async () => {
    const stopped = cluster.members[0];
    // a client that tries the stopped member first
    const first = new EtcdGateway({ endpoints: cluster.endpoints.split(','), timeoutMs: 500 });
    try {
      await stopped.pause();
      const started = Date.now();
      await first.put('/t/deadline/k', 'v');
      assert.ok(Date.now() - started < 3000, `took ${Date.now() - started} ms`);
    } finally {
      await stopped.resume();
      first.close();
    }
    const nowhere = new EtcdGateway({
      endpoints: [await refusedUrl(0), await refusedUrl(1)],
      timeoutMs: 300,
    });
    try {
      await assert.rejects(nowhere.get('/t/x'), (err: Error) => {
        assert.ok(err instanceof EtcdError);
        assert.match(err.message, /etcd did not answer \/v3\/kv\/range \(127\.0\.0\.1:\d+: .*; 127\.0\.0\.1:\d+: /);
        return true;
      });
    } finally {
      nowhere.close();
    }
    assert.throws(() => new EtcdGateway({ endpoints: ['etcd:2379'] }), /must be http:\/\/ or https:\/\//);
    assert.throws(() => new EtcdGateway({ endpoints: [] }), /no etcd endpoint/);
  });
});

describe('the etcd client with authentication and TLS', { timeout: 120_000 }, () => {
  const dirs = tempDirs();
  after(() => dirs.removeAll());

  it('logs in with a user and password, and is refused without them', async () => {
    const cluster = await startEtcdCluster(1);
    const url = cluster.members[0]?.clientUrl as string;
    const admin = async (path: string, body: object) => {
      const res = await fetch(`${url}${path}`, { method: 'POST', body: JSON.stringify(body) });
      assert.equal(res.status, 200, `${path}: ${await res.text()}`);
    };
    try {
      await admin('/v3/auth/user/add', { name: 'root', password: 'root-secret' });
      await admin('/v3/auth/role/add', { name: 'root' });
      await admin('/v3/auth/user/grant', { user: 'root', role: 'root' });
      await admin('/v3/auth/enable', {});
      const anonymous = new EtcdGateway({ endpoints: [url], timeoutMs: 1000 });
      await assert.rejects(
        anonymous.put('/t/auth/k', 'v'),
        /etcd: .*(user name is empty|permission denied|invalid auth token)/i,
      );
      anonymous.close();
      const wrong = new EtcdGateway({ endpoints: [url], timeoutMs: 1000, username: 'root', password: 'nope' });
      await assert.rejects(wrong.put('/t/auth/k', 'v'), /authentication failed|invalid user ID or password/i);
      wrong.close();
      const root = new EtcdGateway({ endpoints: [url], timeoutMs: 1000, username: 'root', password: 'root-secret' });
      await root.put('/t/auth/k', 'v');
      assert.equal((await root.get('/t/auth/k'))?.value, 'v');
      const seen: string[] = [];
      const watch = root.watch('/t/auth/', { prefix: true, onEvents: (e) => seen.push(...e.map((x) => x.kv.value)) });
      await delay(200);
      await root.put('/t/auth/k', 'w');
      await waitFor('the watch to see the change', () => seen.includes('w'), { timeout: 5000 });
      watch.close();
      root.close();
    } finally {
      await cluster.stop();
    }
  });

  it('speaks TLS with a client certificate, and refuses a server it cannot verify', async () => {
    const dir = await dirs.make('mirrorswap-etcd-tls-');
    const tls = makeTestCertificates(dir);
    const cluster = await startEtcdCluster(1, {}, tls);
    const url = cluster.members[0]?.clientUrl as string;
    try {
      assert.match(url, /^https:/);
      const client = new EtcdGateway({
        endpoints: [url],
        timeoutMs: 2000,
        caFile: tls.caFile,
        certFile: tls.clientCertFile,
        keyFile: tls.clientKeyFile,
      });
      await client.put('/t/tls/k', 'v');
      assert.equal((await client.get('/t/tls/k'))?.value, 'v');
      client.close();
      const unverified = new EtcdGateway({ endpoints: [url], timeoutMs: 2000 });
      await assert.rejects(unverified.get('/t/tls/k'), /certificate/i);
      unverified.close();
    } finally {
      await cluster.stop();
    }
  });
});
