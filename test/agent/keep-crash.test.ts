import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { AgentStatus, SwapRecord } from '../../src/agent/agent.js';
import { type EpochRecord, readEpochFile, slotRoot } from '../../src/store/epoch-file.js';
import {
  type AgentProc,
  HOLD_BYTES,
  heldDownload,
  startAgentProc,
  startWebProc,
  writeTokenFile,
} from '../../testkit/cluster.js';
import type { CliProcess } from '../../testkit/proc.js';
import { rawGet } from '../../testkit/server.js';
import { seeded } from '../../testkit/seeded.js';
import { type TempStore, tempFilesIn, tempStore } from '../../testkit/store.js';
import { treeOf } from '../../testkit/trees.js';
import { treeVersion, versionContent } from '../../testkit/versioned-tree.js';
import { waitFor } from '../../testkit/wait.js';

const DIRS = 10;
const PER_DIR = 40;
const files = Array.from({ length: DIRS * PER_DIR }, (_, i) => `d${i % DIRS}/f${Math.floor(i / DIRS)}.txt`);

/**
 * Kill -9 the agent of a store keeping four releases at each step of a sync
 * that reuses a retained copy (retire, wait, copy, publish, drain) and at
 * random moments: every release the epoch file retains must be intact (the
 * same entries, modes, times and bytes as when it was published) and
 * servable to requests pinned to it, the mounted one whole, and the next
 * sync must converge.
 */
describe('a store keeping releases, killed at every step of a sync', () => {
  let store: TempStore;
  let tokenFile: string;
  let token: string;
  let agent: AgentProc;
  let web: Awaited<ReturnType<typeof startWebProc>>;
  const procs: CliProcess[] = [];
  let acknowledged = 0;
  /** Each published release's tree (by the epoch that published it), as it was when first seen. */
  const published = new Map<number, string[]>();

  const start = async () => {
    agent = await startAgentProc(store, tokenFile, token, ['--keep', '4', '--skew-max-age', '0']);
    procs.push(agent.proc);
  };
  const writeVersion = async (version: number) => {
    const ops = files.map((path) => ({ op: 'put', path, content: versionContent(version, path) }));
    const res = await fetch(`${agent.url}/v1/batch`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ ops }),
    });
    assert.equal(res.status, 200);
    acknowledged = version;
  };
  const phase = async () => (await agent.api<AgentStatus>('GET', '/v1/status')).body.swapping?.phase ?? null;
  const epochFile = async () => (await readEpochFile(store.epochFile)) as EpochRecord;

  /** Note the tree of every release the epoch file names that was not seen yet. */
  const record = async () => {
    const e = await epochFile();
    const since = e.since ?? e.epoch;
    if (!published.has(since)) published.set(since, await treeOf(slotRoot(e, store.epochFile)));
  };

  /** Every retained release intact and servable to a pinned request; the mounted one whole. */
  const checkReleases = async (when: string) => {
    const e = await epochFile();
    await treeVersion(slotRoot(e, store.epochFile), files); // throws on a mix
    for (const r of e.retained ?? []) {
      const root = slotRoot(e, store.epochFile, r.slot);
      const was = published.get(r.epoch);
      assert.ok(was, `${when}: retained epoch ${r.epoch} was never seen published`);
      assert.deepEqual(await treeOf(root), was, `${when}: retained release of epoch ${r.epoch} changed`);
      const version = await treeVersion(root, files);
      await waitFor('the web server to follow the epoch file', async () => {
        const res = await rawGet(web.port, `/${files[0]}?dpl=${r.epoch}`);
        return res.body.toString() === versionContent(version, files[0] as string);
      });
    }
  };

  const syncOk = async () => {
    const { body } = await agent.api<SwapRecord>('POST', '/v1/sync?wait=1');
    assert.equal(body.result, 'ok', JSON.stringify(body.error));
    await record();
  };

  before(async () => {
    store = await tempStore();
    await store.fill('master', Object.fromEntries(files.map((p) => [p, versionContent(0, p)])));
    // a large file outside the versioned set, to hold a request open
    await store.fill('master', { 'hold.bin': Buffer.alloc(HOLD_BYTES) });
    ({ file: tokenFile, token } = await writeTokenFile(store));
    await start();
    web = await startWebProc(store, 'web-keep-crash');
    procs.push(web.proc);
    await record();
    // every copy holds a release: the next sync reuses the oldest retained one
    for (let v = 1; v <= 3; v++) {
      await writeVersion(v);
      await syncOk();
    }
    assert.equal((await epochFile()).retained?.length, 3);
  });
  after(async () => {
    for (const p of procs) await p.kill('SIGKILL');
    await store.dispose();
  });

  for (const step of ['retire', 'wait', 'copy', 'publish', 'drain'] as const) {
    it(`killed in the ${step} phase`, async (t) => {
      await writeVersion(acknowledged + 1);
      // the wait phase is held open by a download pinned to the release whose copy is reused
      const e = await epochFile();
      const oldest = (e.retained ?? []).reduce((x, y) => (y.epoch < x.epoch ? y : x));
      const held = step === 'wait' ? heldDownload(web.port, `/hold.bin?dpl=${oldest.epoch}`) : null;
      await held?.started;
      void agent.api('POST', '/v1/sync').catch(() => {});
      const reached = await waitFor(`the ${step} phase`, async () => (await phase()) === step, {
        timeout: 3000,
        step: 1,
      }).then(
        () => true,
        () => false,
      );
      await agent.proc.kill('SIGKILL');
      // a phase too short to be seen still had the agent killed somewhere around it (or after the swap)
      t.diagnostic(reached ? `killed in ${step}` : `${step} not seen: killed later`);
      await start();
      // what is mounted now was published whole, and is not written while mounted or retained
      await record();
      if (held) {
        held.resume();
        const body = await held.done;
        assert.equal(body.length, HOLD_BYTES, 'the pinned download came whole');
      }
      await checkReleases(`after a kill in ${step}`);
      await syncOk();
      await checkReleases(`after the sync that followed a kill in ${step}`);
      assert.equal(await treeVersion(slotRoot(await epochFile(), store.epochFile), files), acknowledged);
    });
  }

  it('killed at random moments across several runs', async (t) => {
    const random = seeded();
    t.diagnostic(random.describe());
    for (let run = 0; run < 4; run++) {
      await writeVersion(acknowledged + 1);
      void agent.api('POST', '/v1/sync').catch(() => {});
      await new Promise((r) => setTimeout(r, random.int(300)));
      await agent.proc.kill('SIGKILL');
      await start();
      await record();
      try {
        await checkReleases(`run ${run}`);
        await syncOk();
        await checkReleases(`run ${run}, after a sync`);
      } catch (err) {
        throw new Error(`run ${run}, ${random.describe()}: ${(err as Error).message}`, { cause: err });
      }
    }
    for (const slot of ['a', 'b', 'c', 'd'] as const) {
      assert.deepEqual(await tempFilesIn(store.slots[slot]), [], `temp files left in slot ${slot}`);
    }
  });
});
