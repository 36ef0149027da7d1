import { seeded } from '../../testkit/seeded.js';
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import type { AgentStatus, SwapRecord } from '../../src/agent/agent.js';
import { readEpochFile, slotRoot } from '../../src/store/epoch-file.js';
import { otherSlot } from '../../src/store/store-layout.js';
import {
  type AgentProc,
  HOLD_BYTES,
  heldDownload,
  startAgentProc,
  startWebProc,
  writeTokenFile,
} from '../../testkit/cluster.js';
import type { CliProcess } from '../../testkit/proc.js';
import { type TempStore, tempFilesIn, tempStore } from '../../testkit/store.js';
import { treeVersion, versionContent } from '../../testkit/versioned-tree.js';
import { waitFor } from '../../testkit/wait.js';

const DIRS = 10;
const PER_DIR = 60; // 600 files, each fsynced: a copy long enough to be killed in the middle of
const files = Array.from({ length: DIRS * PER_DIR }, (_, i) => `d${i % DIRS}/f${Math.floor(i / DIRS)}.txt`);
const body = versionContent;

/**
 * Kill -9 the agent at each step of its work, restart it, and check the
 * invariants: the mounted copy is one whole published version, every
 * acknowledged write is in master, no temp file survives, and the restarted
 * agent converges to master.
 */
describe('agent crash and restart', () => {
  let store: TempStore;
  let tokenFile: string;
  let token: string;
  let agent: AgentProc;
  let web: Awaited<ReturnType<typeof startWebProc>>;
  const procs: CliProcess[] = [];
  let acknowledged = 0;

  const start = async (extra: string[] = []) => {
    agent = await startAgentProc(store, tokenFile, token, extra);
    procs.push(agent.proc);
  };
  const writeVersion = async (version: number) => {
    const ops = files.map((path) => ({ op: 'put', path, content: body(version, path) }));
    const res = await fetch(`${agent.url}/v1/batch`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ ops }),
    });
    assert.equal(res.status, 200);
    acknowledged = version;
  };
  const phase = async () => (await agent.api<AgentStatus>('GET', '/v1/status')).body.swapping?.phase ?? null;

  const versionOf = (root: string) => treeVersion(root, files);

  const checkAfterRestart = async () => {
    const epoch = await readEpochFile(store.epochFile);
    assert.ok(epoch, 'no epoch file after restart');
    const mountedVersion = await versionOf(slotRoot(epoch, store.epochFile));
    assert.ok(mountedVersion <= acknowledged);
    assert.equal(await versionOf(store.master), acknowledged, 'an acknowledged write is missing from master');
    assert.deepEqual(await tempFilesIn(store.master), []);
    const { body: record } = await agent.api<SwapRecord>('POST', '/v1/sync?wait=1');
    assert.equal(record.result, 'ok', JSON.stringify(record.error));
    const after = await readEpochFile(store.epochFile);
    assert.ok(after);
    assert.equal(await versionOf(slotRoot(after, store.epochFile)), acknowledged);
    const verify = await agent.api<{ differences: unknown[] }>('GET', '/v1/verify');
    assert.deepEqual(verify.body.differences, []);
    for (const slot of ['a', 'b'] as const) {
      assert.deepEqual(await tempFilesIn(store.slots[slot]), [], `temp files left in slot ${slot}`);
    }
    // the standby still holds the previous state whole
    await versionOf(store.slots[otherSlot(after.mounted)]);
  };

  const crash = async () => {
    await agent.proc.kill('SIGKILL');
  };

  before(async () => {
    store = await tempStore();
    await store.fill('master', Object.fromEntries(files.map((p) => [p, body(0, p)])));
    // a large file outside the versioned set, in both copies, to hold a request open
    await store.fill('master', { 'hold.bin': Buffer.alloc(HOLD_BYTES) });
    ({ file: tokenFile, token } = await writeTokenFile(store));
    await start();
    web = await startWebProc(store, 'web-crash');
    procs.push(web.proc);
  });
  after(async () => {
    for (const p of procs) await p.kill('SIGKILL');
    await store.dispose();
  });

  it('killed while copying into the standby', async () => {
    await writeVersion(1);
    void agent.api('POST', '/v1/sync').catch(() => {});
    await waitFor('the copy phase', async () => (await phase()) === 'copy', { timeout: 10_000, step: 2 });
    await crash();
    await start();
    await checkAfterRestart();
  });

  it('killed while publishing (inside the on-mount hook)', async () => {
    await crash();
    await start(['--on-mount', 'sleep 5']);
    await writeVersion(2);
    void agent.api('POST', '/v1/sync').catch(() => {});
    await waitFor('the publish phase', async () => (await phase()) === 'publish', { timeout: 10_000, step: 2 });
    await crash();
    await start();
    await checkAfterRestart();
  });

  it('killed while draining, with a download still holding the old copy', async () => {
    await writeVersion(3);
    const download = heldDownload(web.port, '/hold.bin');
    await download.started;
    void agent.api('POST', '/v1/sync').catch(() => {});
    await waitFor('the drain phase', async () => (await phase()) === 'drain', { timeout: 10_000, step: 2 });
    await crash();
    await start();
    download.resume();
    await download.done;
    await checkAfterRestart();
  });

  it('killed in the middle of receiving a write', async () => {
    const { request } = await import('node:http');
    const req = request(`${agent.url}/v1/files/partial.bin`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${token}`, 'content-length': String(8 * 1024 * 1024) },
    });
    req.on('error', () => {});
    req.write(Buffer.alloc(1024 * 1024));
    await waitFor('the staged temp file', async () => (await tempFilesIn(store.master)).length > 0);
    await crash();
    req.destroy();
    await start();
    const names = await readdir(store.master);
    assert.ok(!names.includes('partial.bin'), 'a partial write reached master');
    await checkAfterRestart();
  });

  it('killed at random moments across several runs', async (t) => {
    const random = seeded();
    t.diagnostic(random.describe());
    for (let run = 0; run < 3; run++) {
      await writeVersion(acknowledged + 1);
      void agent.api('POST', '/v1/sync').catch(() => {});
      await new Promise((r) => setTimeout(r, random.int(400)));
      await crash();
      await start();
      try {
        await checkAfterRestart();
      } catch (err) {
        throw new Error(`run ${run}, ${random.describe()}: ${(err as Error).message}`, { cause: err });
      }
    }
  });

  it('never splits a batch across epochs while writes race the syncs', async () => {
    let writing = true;
    const writer = (async () => {
      while (writing) await writeVersion(acknowledged + 1);
    })();
    for (let i = 0; i < 4; i++) {
      const { body: record } = await agent.api<SwapRecord>('POST', '/v1/sync?wait=1');
      assert.equal(record.result, 'ok');
      const epoch = await readEpochFile(store.epochFile);
      assert.ok(epoch);
      await versionOf(slotRoot(epoch, store.epochFile)); // throws on a mix
    }
    writing = false;
    await writer;
  });
});
