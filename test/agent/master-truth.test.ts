import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { lstat, mkdir, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { Agent, type AgentStatus, type SwapRecord } from '../../src/agent/agent.js';
import { compareTreesSync } from '../../src/tree/compare-trees.js';
import { readEpochFile, slotRoot } from '../../src/store/epoch-file.js';
import { memoryLogger } from '../../testkit/app.js';
import { type AgentProc, startAgentProc, writeTokenFile } from '../../testkit/cluster.js';
import type { RunOptions } from '../../testkit/proc.js';
import { type TempStore, tempStore } from '../../testkit/store.js';
import { waitFor } from '../../testkit/wait.js';

/**
 * The mounted copy is always a published state of master, whatever path a
 * change took to master: the journal is a hint, the file system the truth.
 * Each case goes through the agent as operators run it and through master
 * as tools write to it.
 */
describe('what is served is a published state of master, whatever path a change took', () => {
  let store: TempStore;
  let tokenFile: string;
  let token: string;
  let agent: AgentProc | undefined;

  const start = async (extra: string[] = [], run: RunOptions = {}) => {
    agent = await startAgentProc(store, tokenFile, token, extra, run);
    return agent;
  };
  const stop = async () => {
    await agent?.proc.kill();
    agent = undefined;
  };
  const sync = async (full = false): Promise<SwapRecord> => {
    const res = await (agent as AgentProc).api<SwapRecord>('POST', `/v1/sync?wait=1${full ? '&full=1' : ''}`);
    assert.equal(res.body.result, 'ok', JSON.stringify(res.body));
    return res.body;
  };
  const put = async (path: string, content: string) => {
    const res = await fetch(`${(agent as AgentProc).url}/v1/files/${path}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${token}` },
      body: content,
    });
    assert.ok(res.ok, `PUT ${path}: ${res.status} ${await res.text()}`);
  };
  const del = async (path: string) => {
    const res = await fetch(`${(agent as AgentProc).url}/v1/files/${path}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(res.status, 200, await res.text());
  };
  /** The mounted copy differs from master in nothing (paths, kinds, sizes, mtimes, modes, links). */
  const assertServedIsMaster = async (when: string) => {
    const epoch = await readEpochFile(store.epochFile);
    assert.ok(epoch, 'no epoch published');
    const diffs = compareTreesSync(store.master, slotRoot(epoch, store.epochFile));
    assert.deepEqual(diffs, [], `${when}: the mounted slot ${epoch.mounted} differs from master`);
  };
  const writeDirect = async (files: Record<string, string>) => {
    for (const [rel, content] of Object.entries(files)) {
      await mkdir(join(store.master, rel, '..'), { recursive: true });
      await writeFile(join(store.master, rel), content);
    }
  };

  beforeEach(async () => {
    store = await tempStore();
    ({ file: tokenFile, token } = await writeTokenFile(store));
  });
  afterEach(async () => {
    await stop();
    await store.dispose();
  });

  it('publishes files written into master while the agent was stopped, on both copies', async () => {
    await store.fill('master', { 'index.html': 'v1' });
    await start();
    await sync();
    await stop();
    await writeDirect({ 'offline/a.txt': 'written while no agent ran', 'index.html': 'v2, offline' });
    await start();
    await sync();
    await assertServedIsMaster('first sync after the restart');
    await sync();
    await assertServedIsMaster('second sync after the restart (the other copy)');
    const verify = await (agent as AgentProc).api<{ differences: unknown[] }>('GET', '/v1/verify');
    assert.deepEqual(verify.body.differences, []);
  });

  for (const watch of [true, false]) {
    it(`a full sync is not undone by the next ordinary sync${watch ? '' : ' (--no-watch-master)'}`, async () => {
      const extra = watch ? [] : ['--no-watch-master'];
      await store.fill('master', { 'index.html': 'v1' });
      await start(extra);
      await sync();
      await sync();
      if (!watch) {
        // without a watcher a direct write is seen only by a full sync, which must pass it on
        await writeDirect({ 'direct/one.txt': '1', 'direct/two.txt': '2' });
      } else {
        await stop();
        await writeDirect({ 'direct/one.txt': '1', 'direct/two.txt': '2' });
        await start(extra);
      }
      await sync(true);
      await assertServedIsMaster('after sync --full');
      await put('api.txt', 'through the API');
      await sync();
      await assertServedIsMaster('the ordinary sync after the full one');
      await sync();
      await assertServedIsMaster('and the one after it');
    });
  }

  for (const watch of [true, false]) {
    it(`DELETE of a directory then a write under the same name leaves none of the deleted files${watch ? '' : ' (--no-watch-master)'}`, async () => {
      await start(watch ? [] : ['--no-watch-master']);
      await put('docs/old1.txt', 'old 1');
      await put('docs/old2.txt', 'old 2');
      await sync();
      await sync();
      await del('docs');
      await put('docs/new.txt', 'new');
      await sync();
      await assertServedIsMaster('after the delete and write');
      await sync();
      await assertServedIsMaster('on the other copy too');
    });
  }

  it('a directory renamed into master, as deploys do, is published and watched from then on', async () => {
    await writeDirect({ 'site/index.html': 'release 1', 'site/css/a.css': 'a1', 'site/gone-in-2.txt': 'x' });
    await start();
    await sync();
    await sync();
    // the common deploy: build aside, move the live directory away, rename the build in, remove the old
    const build = join(store.root, 'build');
    await mkdir(join(build, 'css'), { recursive: true });
    await writeFile(join(build, 'index.html'), 'release 2');
    await writeFile(join(build, 'css/a.css'), 'a2, longer');
    await writeFile(join(build, 'new-in-2.txt'), 'new');
    await rename(join(store.master, 'site'), join(store.master, 'site.old'));
    await rename(build, join(store.master, 'site'));
    await rm(join(store.master, 'site.old'), { recursive: true });
    await sync();
    await assertServedIsMaster('after the deploy');
    await writeFile(join(store.master, 'site/later.txt'), 'a direct write into the renamed-in directory');
    await writeFile(join(store.master, 'site/index.html'), 'release 2.1');
    await sync();
    await assertServedIsMaster('after a later direct write into it');
    await sync();
    await assertServedIsMaster('on the other copy too');
  });

  it('a burst of direct writes that overflows the kernel event queue is published whole', async () => {
    await writeDirect({ 'index.html': 'v1' });
    await start();
    await sync();
    await sync();
    // Stop the agent so the kernel queues every event (16384 by default), then write far more.
    const pid = (agent as AgentProc).proc.child.pid as number;
    process.kill(pid, 'SIGSTOP');
    try {
      const max = Number((await readFile('/proc/sys/fs/inotify/max_queued_events', 'utf8')).trim());
      const files = Math.ceil(max / 2) + 2000; // a create and a modify each: past the queue's size
      await mkdir(join(store.master, 'burst'));
      await Promise.all(
        Array.from({ length: 8 }, async (_, w) => {
          for (let i = w; i < files; i += 8) await writeFile(join(store.master, 'burst', `f${i}.txt`), `${i}`);
        }),
      );
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    await sync();
    await assertServedIsMaster('after the burst');
    await sync();
    await assertServedIsMaster('on the other copy too');
  });

  it('a directory that cannot be watched (watch limit) is still published, with every later write into it', async () => {
    await writeDirect({ 'index.html': 'v1', 'a/x.txt': 'x' });
    // In a user namespace of its own the agent has its own inotify watch limit: master, a, and the fence.
    await start([], {
      through: `exec unshare --user --map-root-user sh -c 'echo 3 > /proc/sys/user/max_inotify_watches && exec "$0" "$@"' "$@"`,
    });
    await sync();
    await sync();
    await writeDirect({ 'unwatched/one.txt': '1' });
    await sync();
    await assertServedIsMaster('after a directory that cannot be watched appeared');
    await writeDirect({ 'unwatched/two.txt': '2', 'unwatched/deeper/three.txt': '3' });
    await sync();
    await assertServedIsMaster('after later writes into it');
    await sync();
    await assertServedIsMaster('on the other copy too');
    const status = await (agent as AgentProc).api<AgentStatus>('GET', '/v1/status');
    assert.equal(status.body.changeTracking.complete, false, 'the status must say changes may be missed');
  });

  it('a direct write made just before a sync is in that sync', async () => {
    await start();
    await sync();
    for (let i = 0; i < 5; i++) {
      await writeFile(join(store.master, `quick${i}.txt`), `${i}`);
      await sync();
      await assertServedIsMaster(`sync right after direct write ${i}`);
    }
  });

  it('an agent started on a store whose epoch file is missing recovers it without writing into a served copy', async () => {
    await start();
    await put('index.html', 'v1');
    await sync();
    await put('index.html', 'v2');
    await sync(); // epoch 3 mounts b
    await stop();
    const before = await readEpochFile(store.epochFile);
    assert.ok(before);
    // a web server still serving that copy, its heartbeat fresh
    const heartbeat = {
      format: 1,
      id: 'web-1',
      host: 'web',
      pid: 1,
      epoch: before.epoch,
      mounted: before.mounted,
      inflight: { a: 0, b: 0 },
      at: new Date().toISOString(),
      interval: 1000,
      kind: 'static',
    };
    await writeFile(join(store.serversDir, 'web-1.json'), JSON.stringify(heartbeat));
    const servedBefore = await readFile(join(slotRoot(before, store.epochFile), 'index.html'), 'utf8');
    await writeFile(join(store.master, 'index.html'), 'v3, written while the epoch file was gone');
    await rm(store.epochFile);
    const restarted = await start();
    await restarted.proc.waitForLine(/epoch file was missing/);
    const after = await readEpochFile(store.epochFile);
    assert.ok(after);
    assert.ok(
      after.epoch > before.epoch,
      `epoch went from ${before.epoch} to ${after.epoch}: servers ignore going back`,
    );
    assert.equal(after.mounted, before.mounted, 'the copy the server serves stays mounted');
    assert.equal(
      await readFile(join(slotRoot(after, store.epochFile), 'index.html'), 'utf8'),
      servedBefore,
      'the served copy was written into',
    );
    await rm(join(store.serversDir, 'web-1.json'));
    await sync();
    await assertServedIsMaster('the first sync after recovery');
  });

  it('never publishes a file reached through a link swapped in during the copy', async () => {
    const secret = join(store.root, 'secret');
    await mkdir(secret);
    await writeFile(join(secret, 'key.txt'), 'only the agent may read this');
    await start();
    await sync();
    // a writer who may write master, racing the copy: entries flip between a file and a link
    let racing = true;
    const racer = (async () => {
      let n = 0;
      while (racing) {
        const p = join(store.master, 'flip.txt');
        const d = join(store.master, 'flipdir');
        await rm(p, { force: true });
        await rm(d, { recursive: true, force: true });
        if (n++ % 2 === 0) {
          await writeFile(p, 'harmless');
          await mkdir(d);
          await writeFile(join(d, 'key.txt'), 'harmless too');
        } else {
          await symlink(join(secret, 'key.txt'), p);
          await symlink(secret, d);
        }
      }
    })();
    try {
      for (let i = 0; i < 20; i++) {
        await sync(i % 5 === 0);
        for (const slot of ['a', 'b'] as const) {
          for (const rel of ['flip.txt', 'flipdir/key.txt']) {
            // a link is published as a link (the web servers never follow one out of the copy);
            // what must never be is the secret's content copied into a file of the slot
            const entry = join(store.slots[slot], rel);
            const st = await lstat(entry).catch(() => null);
            const parent = await lstat(join(entry, '..')).catch(() => null);
            if (!st?.isFile() || !parent?.isDirectory()) continue;
            const text = await readFile(entry, 'utf8');
            assert.ok(!text.includes('only the agent'), `slot ${slot} holds the secret at ${rel}`);
          }
        }
      }
    } finally {
      racing = false;
      await racer;
    }
  });

  it('a path within the documented limit but too long under master is refused with 400 and wedges nothing', async () => {
    await start();
    // 16 segments of 254 bytes: 4079, within the 4095 any path may have, but not once joined to master
    const path = Array.from({ length: 16 }, () => 'd'.repeat(254)).join('/');
    const put1 = await fetch(`${(agent as AgentProc).url}/v1/files/${path}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${token}` },
      body: 'x',
    });
    assert.equal(put1.status, 400, await put1.text());
    const batch = await fetch(`${(agent as AgentProc).url}/v1/batch`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ ops: [{ op: 'put', path, content: 'x' }] }),
    });
    assert.equal(batch.status, 400, await batch.text());
    await put('after.txt', 'still writable');
    await sync();
    await assertServedIsMaster('after the refused write');
    await stop();
    await start();
    await put('after-restart.txt', 'x');
    await sync();
    await assertServedIsMaster('after a restart');
  });

  it('a direct entry that a copy cannot hold is left out and reported, and wedges nothing', async () => {
    // Slots reached by a much longer path than master: a name that fits master can be too long for them.
    const deep = join(store.root, ...Array.from({ length: 4 }, () => 'x'.repeat(250)));
    const layout = { ...store, slots: { ...store.slots, a: join(deep, 'a'), b: join(deep, 'b') } };
    const logger = memoryLogger();
    const logs = () => logger.lines.map((l) => l.msg);
    await writeFile(join(store.master, 'index.html'), 'v1');
    const lib = await Agent.start({ layout, logger, durable: false, drainTimeoutMs: 2000, serverTtlMs: 1000 });
    try {
      let rel = '';
      while (Buffer.byteLength(join(store.master, rel)) < 4095 - 260) rel = join(rel, 'e'.repeat(250));
      await mkdir(join(store.master, rel), { recursive: true });
      await writeFile(join(store.master, rel, 'deep.txt'), 'deep');
      await writeFile(join(store.master, 'fine.txt'), 'fine');
      for (const full of [false, true, false]) {
        const record = await lib.requestSync({ reason: 'test', full });
        assert.equal(record.result, 'ok', JSON.stringify(record.error));
        assert.ok(record.copied.skipped > 0, 'the entry that cannot be held is counted as left out');
        assert.equal(await readFile(join(layout.slots[record.to], 'fine.txt'), 'utf8'), 'fine');
      }
      assert.ok(
        logs().some((m) => m.includes('left out')),
        `not reported: ${logs().join('; ')}`,
      );
    } finally {
      await lib.close();
      execFileSync('rm', ['-rf', deep]); // rm(1) walks by descriptor: paths past PATH_MAX are no obstacle
    }
  });

  it('a periodic comparison finds a change the journal missed, counts it, and the next syncs copy it', async () => {
    const logger = memoryLogger();
    await writeFile(join(store.master, 'index.html'), 'v1');
    // no watcher: a direct write is a change the journal cannot know
    const lib = await Agent.start({ layout: store, logger, durable: false, watchMaster: false, verifyIntervalMs: 200 });
    try {
      await lib.requestSync({ reason: 'test' });
      await lib.requestSync({ reason: 'test' });
      await writeFile(join(store.master, 'unseen.txt'), 'written behind the journal');
      const repaired = async () => {
        const text = await lib.metrics.registry.getSingleMetricAsString('mirrorswap_agent_master_repairs_total');
        return /trigger="verify"} 1$/m.test(text);
      };
      await waitFor('the periodic comparison to find the change', repaired, { timeout: 10_000 });
      assert.ok(
        logger.lines.some((l) => l.msg.includes('changes the journal did not know')),
        logger.lines.map((l) => l.msg).join('; '),
      );
      for (let i = 0; i < 2; i++) {
        const record = await lib.requestSync({ reason: 'test' });
        assert.equal(record.result, 'ok');
        assert.equal(record.mode, 'incremental', 'once logged, a missed change is synced like any other');
        await assertServedIsMaster(`sync ${i} after the repair`);
      }
    } finally {
      await lib.close();
    }
  });

  it('a copy whose recorded state does not say it is complete is never mounted', async () => {
    const logger = { info: () => {}, warn: () => {}, error: () => {} };
    await writeFile(join(store.master, 'index.html'), 'v1');
    const lib = await Agent.start({ layout: store, logger, durable: false });
    try {
      await writeFile(join(store.master, 'index.html'), 'v2');
      await lib.requestSync({ reason: 'test' }); // the standby now holds the older release
      const before = await readEpochFile(store.epochFile);
      assert.ok(before);
      // the positions file rewritten behind the agent's back: the standby marked as half copied
      const state = JSON.parse(await readFile(store.slotPositionsFile, 'utf8'));
      const standby = before.mounted === 'a' ? 'b' : 'a';
      state.slots[standby] = { seq: state.slots[standby].seq, syncing: true };
      await writeFile(store.slotPositionsFile, JSON.stringify(state));
      const record = await lib.rollback();
      assert.equal(record.result, 'failed');
      assert.equal(record.error?.code, 'SLOT_NOT_VOUCHED');
      assert.deepEqual(await readEpochFile(store.epochFile), before, 'nothing was published');
    } finally {
      await lib.close();
    }
  });
});
