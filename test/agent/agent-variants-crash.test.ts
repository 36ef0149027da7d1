import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { brotliDecompressSync, gunzipSync } from 'node:zlib';
import type { AgentStatus, SwapRecord } from '../../src/agent/agent.js';
import type { SlotName } from '../../src/store/store-layout.js';
import { startAgentProc, writeTokenFile } from '../../testkit/cluster.js';
import { tempStore } from '../../testkit/store.js';
import { checkCopyIndex, compressibleText as text } from '../../testkit/variants.js';

describe('an agent killed mid-sync', () => {
  it('leaves the next sync producing a consistent copy: every current record true, every variant its original', async () => {
    const store = await tempStore();
    const { file: tokenFile, token } = await writeTokenFile(store);
    const files: string[] = [];
    for (let d = 0; d < 6; d++) for (let f = 0; f < 30; f++) files.push(`d${d}/f${f}.js`);
    await store.fill('master', Object.fromEntries(files.map((p) => [p, text(`v0 ${p}`, 4096)])));
    let agent = await startAgentProc(store, tokenFile, token);
    try {
      for (let round = 1; round <= 2; round++) {
        for (const p of files) await writeFile(join(store.master, p), text(`v${round} ${p}`, 4096));
        // a sync under way (the watcher logs the changes), killed after a varying time
        await new Promise((r) => setTimeout(r, 300));
        void agent.api('POST', '/v1/sync').catch(() => {});
        await new Promise((r) => setTimeout(r, 20 + round * 40));
        await agent.proc.kill('SIGKILL');
        agent = await startAgentProc(store, tokenFile, token);
        for (let n = 0; n < 2; n++) {
          const { body } = await agent.api<SwapRecord>('POST', '/v1/sync?wait=1');
          assert.equal(body.result, 'ok', JSON.stringify(body.error));
        }
        for (const slot of ['a', 'b'] as const) {
          // every file has its variants and a current record once both copies synced again
          assert.equal(await checkCopyIndex(store.slots[slot]), files.length * 2, `round ${round}, slot ${slot}`);
        }
        const verify = await agent.api<{ differences: unknown[] }>('GET', '/v1/verify');
        assert.deepEqual(verify.body.differences, []);
      }
    } finally {
      await agent.proc.kill('SIGKILL');
      await store.dispose();
    }
  });
  it('a full sync after one killed once its files were in place publishes no variant of the release before', async () => {
    const store = await tempStore();
    const { file: tokenFile, token } = await writeTokenFile(store);
    const files = Array.from({ length: 400 }, (_, f) => `f${f}.js`);
    await store.fill('master', Object.fromEntries(files.map((p) => [p, text(`v0 ${p}`, 16384)])));
    let agent = await startAgentProc(store, tokenFile, token);
    /** The files of `slot` whose X.gz or X.br decodes to other bytes than X's. */
    const staleIn = async (slot: SlotName) => {
      const stale: string[] = [];
      for (const p of files) {
        const original = await readFile(join(store.slots[slot], p));
        for (const [suffix, decode] of [['.gz', gunzipSync] as const, ['.br', brotliDecompressSync] as const]) {
          const variant = await readFile(join(store.slots[slot], p + suffix)).catch(() => null);
          if (variant && !decode(variant).equals(original)) stale.push(p + suffix);
        }
      }
      return stale;
    };
    try {
      const standby = (await agent.api<AgentStatus>('GET', '/v1/status')).body.standby?.slot as SlotName;
      for (const p of files) await writeFile(join(store.master, p), text(`v1 ${p}`, 16384));
      await new Promise((r) => setTimeout(r, 300));
      void agent.api('POST', '/v1/sync').catch(() => {});
      // killed once the last file is in place in the standby: its variants are still made (or not yet)
      const last = join(store.slots[standby], files.at(-1) as string);
      while (!(await readFile(last, 'utf8').catch(() => '')).startsWith('function v1'))
        await new Promise((r) => setTimeout(r, 2));
      await agent.proc.kill('SIGKILL');
      agent = await startAgentProc(store, tokenFile, token);
      // a full sync (as `mirrorswap sync --full`): the standby compared whole, then mounted
      const { body } = await agent.api<SwapRecord>('POST', '/v1/sync?wait=1&full=1');
      assert.equal(body.result, 'ok', JSON.stringify(body.error));
      assert.equal(body.mode, 'full');
      assert.deepEqual((await staleIn(standby)).slice(0, 5), [], `slot ${standby}, now mounted`);
      assert.equal(await checkCopyIndex(store.slots[standby]), files.length * 2);
    } finally {
      await agent.proc.kill('SIGKILL');
      await store.dispose();
    }
  });
});
