import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { after, describe, it } from 'node:test';
import { mirrorStatic } from '../../../middleware/static/mirror-static.js';
import { type MembershipStamp, membershipFile, writeMembership } from '../../../src/store/membership.js';
import { memoryLogger } from '../../../testkit/logger.js';
import { type TempStore, tempStore } from '../../../testkit/store.js';
import { waitFor } from '../../../testkit/wait.js';

const stores: TempStore[] = [];
after(async () => {
  for (const s of stores) await s.dispose();
});

function stamp(over: Partial<MembershipStamp>): MembershipStamp {
  return {
    format: 1,
    fleet: 'www',
    host: 'web-3',
    pid: 1,
    member: true,
    until: new Date(Date.now() + 60_000).toISOString(),
    fleetEpoch: 2,
    reason: null,
    at: new Date().toISOString(),
    ...over,
  };
}

/** The middleware's readiness against the membership stamp a host agent writes, without a host agent. */
describe("a web server's readiness follows its host's fleet membership stamp", () => {
  it('ready only while the stamp says member, unexpired, and the server serves the committed epoch', async () => {
    const store = await tempStore();
    stores.push(store);
    await store.fill('a', { 'x.txt': 'x' });
    await store.publish(2, 'a');
    const mw = mirrorStatic({ store: store.root, heartbeatInterval: 50, logger: memoryLogger() });
    try {
      await mw.ready;
      // no stamp: a single host, ready once something is mounted
      assert.deepEqual({ ready: mw.readiness().ready, fleet: mw.readiness().fleet }, { ready: true, fleet: null });
      // the stamp is read in the background every heartbeat interval: wait until this one is the one judged
      const judged = async (s: MembershipStamp | 'fifo' | 'gone') => {
        if (s === 'gone') await rm(membershipFile(store.stateDir), { force: true });
        else if (s === 'fifo') {
          await rm(membershipFile(store.stateDir), { force: true });
          execFileSync('mkfifo', [membershipFile(store.stateDir)]);
        } else await writeMembership(store.stateDir, s);
        const want =
          s === 'gone'
            ? (r: ReturnType<typeof mw.readiness>) => /is gone/.test(r.reason ?? '')
            : s === 'fifo'
              ? (r: ReturnType<typeof mw.readiness>) => /cannot be read/.test(r.reason ?? '')
              : (r: ReturnType<typeof mw.readiness>) =>
                  r.fleet?.until === s.until && r.fleet?.member === s.member && r.fleet?.fleetEpoch === s.fleetEpoch;
        return waitFor('the stamp to be read', () => {
          const r = mw.readiness();
          return want(r) ? r : null;
        });
      };
      assert.equal((await judged(stamp({}))).ready, true);
      const lapsed = await judged(stamp({ until: new Date(Date.now() - 1).toISOString() }));
      assert.equal(lapsed.ready, false);
      assert.match(lapsed.reason ?? '', /fleet host web-3's fleet membership lapsed/);
      // a stamp that runs out while nobody rewrites it (a stopped host agent): judged by the clock alone
      const expiring = new Date(Date.now() + 1500).toISOString();
      await judged(stamp({ until: expiring }));
      if (Date.now() < Date.parse(expiring)) assert.equal(mw.readiness().ready, true);
      await waitFor('the stamp to run out', () => !mw.readiness().ready, { timeout: 3000 });
      assert.ok(Date.now() >= Date.parse(expiring), 'not before its time');
      const behind = await judged(stamp({ fleetEpoch: 3 }));
      assert.equal(behind.ready, false);
      assert.match(behind.reason ?? '', /serves epoch 2, behind the fleet's committed epoch 3/);
      const left = await judged(stamp({ member: false, until: null, reason: 'its host agent stopped' }));
      assert.match(left.reason ?? '', /not a member of its fleet: its host agent stopped/);
      // something else in its place never hangs the server and never reads as ready
      const started = Date.now();
      const fifo = await judged('fifo');
      assert.equal(fifo.ready, false);
      assert.ok(Date.now() - started < 1000);
      // once a stamp was seen, its loss is "membership unknown", not "a single host"
      const gone = await judged('gone');
      assert.equal(gone.ready, false);
      assert.match(gone.reason ?? '', /is gone: membership unknown/);
      assert.equal((await judged(stamp({}))).ready, true);
    } finally {
      await mw.close();
    }
    assert.equal(mw.readiness().ready, false, 'a closing server is not ready');
  });

  it('nothing mounted yet (a store without a first sync) is not ready', async () => {
    const store = await tempStore();
    stores.push(store);
    const mw = mirrorStatic({ store: store.root, logger: memoryLogger() });
    try {
      await mw.ready;
      assert.equal(mw.readiness().ready, false);
      assert.match(mw.readiness().reason ?? '', /no copy is mounted yet/);
    } finally {
      await mw.close();
    }
  });
});
