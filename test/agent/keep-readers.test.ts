import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { SwapRecord } from '../../src/agent/agent-types.js';
import { type EpochRecord, readEpochFile, slotRoot } from '../../src/store/epoch-file.js';
import { type TestAgent, startTestAgent } from '../../testkit/agent.js';
import { type TestApp, startApp } from '../../testkit/app.js';
import { rawGet } from '../../testkit/server.js';
import { seeded } from '../../testkit/seeded.js';
import { type TempStore, tempStore } from '../../testkit/store.js';
import { treeOf } from '../../testkit/trees.js';
import { treeVersion, versionContent } from '../../testkit/versioned-tree.js';

const files = Array.from({ length: 60 }, (_, i) => `d${i % 6}/f${i}.txt`);
const DURATION_MS = 12_000;
/** Swaps the run goes on for, past DURATION_MS if it must (a loaded machine swaps slower): what it is about. */
const MIN_SWAPS = 5;
const READERS = 8;

/**
 * Swaps back to back with writes, and readers pinned to random retained
 * releases: every answer is whole and of the release it says it came from
 * (the release header), and a retained release never changes while it is
 * retained (its tree hashed when first published and checked after every
 * swap).
 */
describe('readers pinned to retained releases while syncs run back to back', () => {
  let store: TempStore;
  let agent: TestAgent;
  let web: TestApp;
  let written = 0;
  /** The version each release holds, by the epoch that published it, and its tree as first seen. */
  const releases = new Map<number, { version: number; tree: string[] }>();

  const writeVersion = async (version: number) => {
    const ops = files.map((path) => ({ op: 'put', path, content: versionContent(version, path) }));
    const res = await agent.call('POST', '/v1/batch', {
      body: JSON.stringify({ ops }),
      headers: { 'content-type': 'application/json' },
    });
    assert.equal(res.status, 200);
    written = version;
  };
  const epochFile = async () => (await readEpochFile(store.epochFile)) as EpochRecord;

  before(async () => {
    store = await tempStore();
    await store.fill('master', Object.fromEntries(files.map((p) => [p, versionContent(0, p)])));
    agent = await startTestAgent(store, { keep: 4, skewMaxAgeMs: 0 });
    web = await startApp({
      store: store.root,
      serverId: 'web-keep-readers',
      heartbeatInterval: 100,
      releaseHeader: 'X-Release',
    });
  });
  after(async () => {
    await web.close();
    await agent.close();
    await store.dispose();
  });

  it('serve no torn or mixed answer, and never change a retained release', async (t) => {
    const random = seeded();
    t.diagnostic(random.describe());
    const noteMounted = async () => {
      const e = await epochFile();
      const epoch = e.since ?? e.epoch;
      if (releases.has(epoch)) return;
      const root = slotRoot(e, store.epochFile);
      releases.set(epoch, { version: await treeVersion(root, files), tree: await treeOf(root) });
    };
    await noteMounted();
    const until = Date.now() + DURATION_MS;
    let swapping = true;
    let answers = 0;
    let pinnedServed = 0;
    const problems: string[] = [];
    const reader = async () => {
      while (swapping) {
        const e = await epochFile();
        const choices = [e.since ?? e.epoch, ...(e.retained ?? []).map((r) => r.epoch)];
        const wanted = choices[random.int(choices.length)] as number;
        const path = files[random.int(files.length)] as string;
        const res = await rawGet(web.port, `/${path}?dpl=${wanted}`);
        answers++;
        const from = Number(res.headers['x-release']);
        // a release just published is noted by the swapper once its sync returns
        for (let i = 0; i < 100 && !releases.has(from); i++) await new Promise((r) => setTimeout(r, 20));
        const release = releases.get(from);
        if (res.status !== 200 || release === undefined) {
          problems.push(`${path} pinned to ${wanted}: ${res.status} from ${res.headers['x-release']}`);
          continue;
        }
        if (from === wanted) pinnedServed++;
        if (res.body.toString() !== versionContent(release.version, path)) {
          problems.push(`${path} from release ${from}: ${JSON.stringify(res.body.toString())}`);
        }
      }
    };
    let swaps = 0;
    const swapper = async () => {
      while (Date.now() < until || swaps < MIN_SWAPS) {
        await writeVersion(written + 1);
        const record = (await (await agent.call('POST', '/v1/sync?wait=1')).json()) as SwapRecord;
        assert.equal(record.result, 'ok', JSON.stringify(record.error));
        swaps++;
        await noteMounted();
        // every release retained now is as it was published
        for (const r of (await epochFile()).retained ?? []) {
          const was = releases.get(r.epoch);
          assert.ok(was, `retained epoch ${r.epoch} was never seen mounted`);
          assert.deepEqual(await treeOf(slotRoot(await epochFile(), store.epochFile, r.slot)), was.tree);
        }
      }
    };
    const swapsThenStop = async () => {
      try {
        await swapper();
      } finally {
        swapping = false;
      }
    };
    await Promise.all([swapsThenStop(), ...Array.from({ length: READERS }, reader)]);
    t.diagnostic(`${answers} answers, ${pinnedServed} from the release pinned, ${swaps} swaps`);
    assert.deepEqual(problems.slice(0, 10), []);
    assert.ok(swaps >= MIN_SWAPS, `${swaps} swaps`);
    assert.ok(pinnedServed > answers / 2, 'most pinned requests were served from their release');
  });
});
