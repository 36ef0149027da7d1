import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, it } from 'node:test';
import type { AgentStatus, SwapRecord } from '../../../src/agent/agent.js';
import { readEpochFile } from '../../../src/store/epoch-file.js';
import { startTestAgent } from '../../../testkit/agent.js';
import { type TempStore, tempStore } from '../../../testkit/store.js';
import { holdsFor, waitFor } from '../../../testkit/wait.js';

const epochOf = async (store: TempStore) => (await readEpochFile(store.epochFile))?.epoch ?? 0;

describe('sync signals', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });
  const setup = async (options: Parameters<typeof startTestAgent>[1]) => {
    const store = await tempStore();
    await store.fill('master', { 'a.txt': 'a' });
    const agent = await startTestAgent(store, options);
    cleanups.push(
      () => store.dispose(),
      () => agent.close(),
    );
    return { store, agent };
  };

  it('--auto syncs once writes settle, one swap for a burst of writes', async () => {
    // settled for a second: on a slow disk one durable write can take longer than a shorter pause
    const { store, agent } = await setup({ auto: true, settleMs: 1000 });
    for (let i = 0; i < 5; i++) await agent.call('PUT', `/v1/files/burst${i}.txt`, { body: String(i) });
    await waitFor('the auto sync', async () => (await epochOf(store)) === 2, { timeout: 5000 });
    // the record is kept once the swap ends (after its drain), a moment after the epoch is published
    const swaps = await waitFor('the swap record', async () => {
      const { lastSwaps } = (await (await agent.call('GET', '/v1/status')).json()) as AgentStatus;
      return lastSwaps.length > 0 ? lastSwaps : null;
    });
    assert.equal(swaps[0]?.copied.files, 5, 'the one swap did not cover the whole burst');
    await holdsFor('no second swap after the burst', async () => (await epochOf(store)) === 2, 400);
  });

  it('--auto picks up a file a tool wrote straight into master', async () => {
    const { store } = await setup({ auto: true, settleMs: 100 });
    await writeFile(join(store.master, 'direct.txt'), 'by hand');
    await waitFor('the auto sync', async () => (await epochOf(store)) === 2, { timeout: 5000 });
  });

  it('--interval syncs periodically, and only when master changed', async () => {
    const { store, agent } = await setup({ intervalMs: 150 });
    await holdsFor('no interval sync with nothing to copy', async () => (await epochOf(store)) === 1, 400);
    await agent.call('PUT', '/v1/files/x.txt', { body: 'x' });
    await waitFor('the interval sync', async () => (await epochOf(store)) === 2, { timeout: 5000 });
  });

  it('coalesces sync requests made during a swap into one more swap', async () => {
    const { store, agent } = await setup({});
    await agent.call('PUT', '/v1/files/x.txt', { body: 'x' });
    const results = await Promise.all(
      Array.from({ length: 5 }, () =>
        agent.call('POST', '/v1/sync?wait=1').then((r) => r.json() as Promise<SwapRecord>),
      ),
    );
    const epochs = new Set(results.map((r) => r.epoch));
    assert.ok(epochs.size <= 2, `five requests made ${epochs.size} swaps`);
    assert.equal(await epochOf(store), Math.max(...epochs));
    assert.ok(results.every((r) => r.result === 'ok'));
  });

  it('rollback pauses --auto until the next explicit sync', async () => {
    const { store, agent } = await setup({ auto: true, settleMs: 100 });
    await agent.call('PUT', '/v1/files/v.txt', { body: 'v2' });
    await waitFor('the auto sync', async () => (await epochOf(store)) === 2);
    assert.equal((await agent.call('POST', '/v1/rollback')).status, 200);
    assert.equal(await epochOf(store), 3);
    await agent.call('PUT', '/v1/files/v.txt', { body: 'v3' });
    const status = (await (await agent.call('GET', '/v1/status')).json()) as AgentStatus;
    assert.equal(status.paused, true);
    await holdsFor('no automatic sync while paused', async () => (await epochOf(store)) === 3, 400);
    assert.equal((await agent.call('POST', '/v1/sync?wait=1')).status, 200);
    assert.equal(await epochOf(store), 4);
  });

  it('refuses a rollback when the standby was never completed', async () => {
    const { agent, store } = await setup({});
    await agent.close();
    // slot positions recorded against another journal are void: neither slot is known to be whole
    await writeFile(store.slotPositionsFile, '{"format":1,"journal":"other","slots":{}}');
    const again = await startTestAgent(store, {});
    cleanups.push(() => again.close());
    const res = await again.call('POST', '/v1/rollback');
    assert.equal(res.status, 503);
    const record = (await res.json()) as SwapRecord;
    assert.equal(record.error?.code, 'NO_ROLLBACK');
    assert.equal(await epochOf(store), 1);
  });

  it('exports swap metrics: counts by result, phase histograms, copies, pending changes, servers', async () => {
    const { agent } = await setup({});
    await agent.call('PUT', '/v1/files/m.txt', { body: 'metric' });
    await agent.call('POST', '/v1/sync?wait=1');
    const text = await (await agent.call('GET', '/metrics', { auth: false })).text();
    for (const line of [
      'mirrorswap_agent_epoch 2',
      'mirrorswap_agent_swaps_total{result="ok",kind="sync"} 1',
      'mirrorswap_agent_swap_phase_seconds_count{phase="copy"} 1',
      'mirrorswap_agent_copied_files_total 1',
      'mirrorswap_agent_copied_bytes_total 6',
      'mirrorswap_agent_pending_changes 0',
      'mirrorswap_agent_writes_total{op="put",result="ok"} 1',
      'mirrorswap_agent_servers{state="live"} 0',
    ]) {
      assert.ok(text.includes(line), `missing: ${line}`);
    }
  });
});
