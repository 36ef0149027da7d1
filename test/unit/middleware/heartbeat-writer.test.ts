import assert from 'node:assert/strict';
import { readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { tempDirs } from '../../../testkit/store.js';
import { HeartbeatWriter, type HeartbeatState } from '../../../middleware/mount/heartbeat-writer.js';
import { readHeartbeats, servedFrom } from '../../../src/store/heartbeat.js';
import { writeFile } from 'node:fs/promises';

const dirs = tempDirs();
after(() => dirs.removeAll());

async function serversDir(): Promise<string> {
  const dir = await dirs.make('mirrorswap-hb-');
  return join(dir, 'servers');
}

describe('HeartbeatWriter', () => {
  it('writes a heartbeat the agent can read, at start and when asked', async () => {
    const dir = await serversDir();
    let state: HeartbeatState = { epoch: 1, mounted: 'a', inflight: { a: 0, b: 0 } };
    const written: number[] = [];
    const writer = new HeartbeatWriter({
      serversDir: dir,
      id: 'web-1',
      interval: 60_000,
      kind: 'static',
      snapshot: () => state,
      onError: (err) => assert.fail(err),
      onWritten: (at) => written.push(at),
    });
    await writer.start();
    let [hb] = await readHeartbeats(dir);
    assert.equal(hb?.id, 'web-1');
    assert.equal(hb?.epoch, 1);
    state = { ...state, epoch: 2, inflight: { a: 3, b: 0 } };
    await writer.writeNow();
    [hb] = await readHeartbeats(dir);
    assert.equal(hb?.epoch, 2);
    assert.equal(hb?.inflight.a, 3);
    assert.equal(written.length, 2);
    await writer.close();
  });

  it('carries what each retained release served; a malformed count is read as none, the heartbeat still read', async () => {
    const dir = await serversDir();
    const writer = new HeartbeatWriter({
      serversDir: dir,
      id: 'web-1',
      interval: 60_000,
      kind: 'static',
      snapshot: () => ({
        epoch: 5,
        mounted: 'c',
        inflight: { a: 0, b: 0 },
        served: { '3': { pinned: 4, fallback: 1 } },
      }),
      onError: (err) => assert.fail(err),
    });
    await writer.start();
    const [hb] = await readHeartbeats(dir);
    assert.ok(hb);
    assert.deepEqual(servedFrom(hb, 3), { pinned: 4, fallback: 1 });
    assert.deepEqual(servedFrom(hb, 4), { pinned: 0, fallback: 0 });
    await writer.close();
    // hand-written or from another version: whatever `served` holds, the rest of the heartbeat counts
    for (const served of [
      'lots',
      null,
      [1, 2],
      { '3': 'x' },
      { '3': { pinned: -1, fallback: 1.5 } },
      { '3': { pinned: 2 ** 60 } },
    ]) {
      const at = new Date().toISOString();
      const body = {
        format: 1,
        id: 'odd',
        host: 'h',
        pid: 1,
        epoch: 5,
        mounted: 'a',
        inflight: { a: 2, b: 0 },
        at,
        interval: 1000,
        kind: 'static',
        served,
      };
      await writeFile(join(dir, 'odd.json'), JSON.stringify(body));
      const [odd] = await readHeartbeats(dir);
      assert.equal(odd?.inflight.a, 2, JSON.stringify(served));
      assert.deepEqual(
        servedFrom(odd as NonNullable<typeof odd>, 3),
        { pinned: 0, fallback: 0 },
        JSON.stringify(served),
      );
    }
  });

  it('folds requests made during a write into one more write, which carries the latest state', async () => {
    const dir = await serversDir();
    let epoch = 1;
    let snapshots = 0;
    const writer = new HeartbeatWriter({
      serversDir: dir,
      id: 'web-2',
      interval: 60_000,
      kind: 'static',
      snapshot: () => {
        snapshots++;
        return { epoch, mounted: 'a', inflight: { a: 0, b: 0 } };
      },
      onError: (err) => assert.fail(err),
    });
    await writer.start();
    snapshots = 0;
    const writes = [];
    for (epoch = 2; epoch <= 11; epoch++) writes.push(writer.writeNow());
    epoch = 11;
    await Promise.all(writes);
    assert.ok(snapshots <= 2, `${snapshots} writes for 10 requests made together`);
    assert.equal((await readHeartbeats(dir))[0]?.epoch, 11, 'the last write did not carry the latest state');
    // a request made in the callback of the last write still gets a write of its own
    await writer.writeNow().then(() => {
      epoch = 12;
      return writer.writeNow();
    });
    assert.equal((await readHeartbeats(dir))[0]?.epoch, 12);
    await writer.close();
  });

  it('removes its file on close, and writes nothing after', async () => {
    const dir = await serversDir();
    const writer = new HeartbeatWriter({
      serversDir: dir,
      id: 'web-3',
      interval: 50,
      kind: 'proxy',
      snapshot: () => ({ epoch: 1, mounted: 'b', inflight: { a: 0, b: 0 } }),
      onError: (err) => assert.fail(err),
    });
    await writer.start();
    await stat(writer.file);
    await writer.close();
    await assert.rejects(stat(writer.file), { code: 'ENOENT' });
    await writer.writeNow();
    await assert.rejects(stat(writer.file), { code: 'ENOENT' });
  });

  it('reports a write that fails instead of throwing', async () => {
    const dir = await serversDir();
    const errors: Error[] = [];
    const writer = new HeartbeatWriter({
      serversDir: dir,
      id: 'web-4',
      interval: 60_000,
      kind: 'static',
      snapshot: () => ({ epoch: 1, mounted: 'a', inflight: { a: 0, b: 0 } }),
      onError: (err) => errors.push(err),
    });
    await writer.start();
    // the servers directory replaced by a file: no heartbeat can be written into it
    await rm(dir, { recursive: true });
    await import('node:fs/promises').then((fs) => fs.writeFile(dir, 'not a directory'));
    await writer.writeNow();
    assert.equal(errors.length, 1);
    assert.equal(await readFile(dir, 'utf8'), 'not a directory');
    await writer.close();
  });
});
