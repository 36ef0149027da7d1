import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import type { SwapRecord } from '../../src/agent/agent.js';
import { readEpochFile, slotRoot } from '../../src/store/epoch-file.js';
import { type AgentProc, HOLD_BYTES, heldDownload, startAgentProc, startWebProc } from '../cluster.js';
import { rawGet } from '../server.js';
import { seeded } from '../seeded.js';
import { tempStore } from '../store.js';
import { treeVersion as treeVersionOf, versionContent } from '../versioned-tree.js';

const FILES = Array.from({ length: 200 }, (_, i) => `d${i % 8}/f${i}.txt`);
const content = versionContent;

const treeVersion = (root: string) => treeVersionOf(root, FILES);

/**
 * Kill -9 the agent at random moments (writing, copying, publishing,
 * draining) and now and then a web server in mid-request; restart them; after
 * each run check the invariants. Resolves with the number of runs done.
 */
export async function runCrashCampaign({
  runs,
  log = () => {},
}: {
  runs: number;
  log?: (line: string) => void;
}): Promise<number> {
  const store = await tempStore('mirrorswap-crash-');
  await store.fill('master', {
    ...Object.fromEntries(FILES.map((p) => [p, content(0, p)])),
    'hold.bin': Buffer.alloc(HOLD_BYTES),
  });
  const token = randomBytes(24).toString('hex');
  const tokenFile = join(store.root, 'token');
  await writeFile(tokenFile, token, { mode: 0o600 });
  let agent: AgentProc = await startAgentProc(store, tokenFile, token, ['--server-ttl', '1500ms']);
  let web = await startWebProc(store, 'crash-web');
  let acknowledged = 0;
  const writeVersion = async (v: number) => {
    const res = await fetch(`${agent.url}/v1/batch`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ ops: FILES.map((path) => ({ op: 'put', path, content: content(v, path) })) }),
    });
    if (res.status === 200) acknowledged = v;
  };
  // the kill moments are seeded: a failure names its seed, and MIRRORSWAP_TEST_SEED replays it
  const random = seeded();
  log(`crash campaign: ${random.describe()}`);
  try {
    for (let run = 1; run <= runs; run++) {
      const killWeb = run % 5 === 0;
      const hold = killWeb ? heldDownload(web.port, '/hold.bin') : null;
      if (hold) await hold.started;
      // a write that may be cut by the kill, then a sync that may be cut anywhere
      const writing = writeVersion(acknowledged + 1).catch(() => {});
      void fetch(`${agent.url}/v1/sync`, { method: 'POST', headers: { authorization: `Bearer ${token}` } }).catch(
        () => {},
      );
      await delay(random.int(500));
      if (killWeb) {
        await web.proc.kill('SIGKILL');
        hold?.abort();
      }
      await agent.proc.kill('SIGKILL');
      await writing;
      agent = await startAgentProc(store, tokenFile, token, ['--server-ttl', '1500ms']);
      if (killWeb) web = await startWebProc(store, 'crash-web');

      // invariants
      const epoch = await readEpochFile(store.epochFile);
      assert.ok(epoch, 'no epoch file');
      const mountedVersion = await treeVersion(slotRoot(epoch, store.epochFile));
      assert.ok(mountedVersion <= acknowledged + 1, 'the mounted copy holds a version never written');
      const masterVersion = await treeVersion(store.master);
      assert.ok(
        masterVersion >= acknowledged,
        `an acknowledged write (version ${acknowledged}) is missing from master`,
      );
      acknowledged = masterVersion;
      assert.deepEqual(
        await readdir(join(store.master, '.mirrorswap-tmp')).catch(() => []),
        [],
        'temp files left in master',
      );
      const { body: record } = (await agent.api<SwapRecord>('POST', '/v1/sync?wait=1')) as { body: SwapRecord };
      assert.equal(record.result, 'ok', `run ${run}: the restarted agent did not converge: ${record.error?.message}`);
      const after = await readEpochFile(store.epochFile);
      assert.ok(after);
      assert.equal(await treeVersion(slotRoot(after, store.epochFile)), acknowledged);
      const verify = await agent.api<{ differences: unknown[] }>('GET', '/v1/verify');
      assert.deepEqual(verify.body.differences, [], `run ${run}: the mounted copy differs from master`);
      for (const slot of ['a', 'b'] as const) {
        assert.deepEqual(
          await readdir(join(store.slots[slot], '.mirrorswap-tmp')).catch(() => []),
          [],
          `temp files left in slot ${slot}`,
        );
      }
      const served = await rawGet(web.port, `/${FILES[run % FILES.length]}`);
      assert.equal(served.status, 200);
      assert.equal(served.body.toString(), content(acknowledged, FILES[run % FILES.length] as string));
      log(`run ${run}: ok (epoch ${after.epoch}, version ${acknowledged}${killWeb ? ', web server killed too' : ''})`);
    }
    return runs;
  } catch (err) {
    throw new Error(`${random.describe()}: ${(err as Error).message}`, { cause: err });
  } finally {
    await web.proc.kill('SIGKILL');
    await agent.proc.kill('SIGKILL');
    await store.dispose();
  }
}
