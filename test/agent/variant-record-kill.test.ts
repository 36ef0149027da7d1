import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { brotliDecompressSync, gunzipSync } from 'node:zlib';
import type { SwapRecord } from '../../src/agent/agent.js';
import { readEpochFile } from '../../src/store/epoch-file.js';
import { otherSlot } from '../../src/store/store-layout.js';
import { variantSelectionPath } from '../../src/tree/variant-selection.js';
import { startAgentProc, writeTokenFile } from '../../testkit/cluster.js';
import { tempStore } from '../../testkit/store.js';
import { compressibleText as text } from '../../testkit/variants.js';

/*
 * A sync into a copy whose variants follow other settings removes the copy's selection record before
 * it derives the copy whole, and writes the new one once done (variant-selection.ts). An agent killed
 * the moment the record is gone, or the moment the new one is there, and restarted with the new
 * settings or the old ones: two syncs later each copy holds exactly the variants selected, each
 * decoding to its original.
 */
describe('an agent killed at the moments of the variant selection record', () => {
  for (const moment of ['removed', 'written'] as const)
    for (const restart of ['same', 'old'] as const)
      it(`killed once the record is ${moment}, restarted with the ${restart} settings`, async () => {
        const store = await tempStore();
        const { file: tokenFile, token } = await writeTokenFile(store);
        const files = Array.from({ length: 300 }, (_, f) => `d${f % 5}/f${f}.js`);
        await store.fill('master', Object.fromEntries(files.map((p) => [p, text(`v0 ${p}`, 8192)])));
        const br = ['--variant-encodings', 'br'];
        const both = ['--variant-encodings', 'br,gzip'];
        let agent = await startAgentProc(store, tokenFile, token, br);
        try {
          for (let n = 0; n < 2; n++)
            assert.equal((await agent.api<SwapRecord>('POST', '/v1/sync?wait=1')).body.result, 'ok');
          await agent.proc.kill('SIGKILL');
          const standby = otherSlot((await readEpochFile(store.epochFile))?.mounted ?? 'a');
          const record = variantSelectionPath(store.slots[standby]);
          agent = await startAgentProc(store, tokenFile, token, both);
          const before = await readFile(record, 'utf8');
          void agent.api('POST', '/v1/sync').catch(() => {});
          // watched as closely as the test can: the kill lands at (or just after) that moment
          for (let i = 0; i < 20_000; i++) {
            const now = await readFile(record, 'utf8').catch(() => null);
            if (moment === 'removed' ? now === null : now !== null && now !== before) break;
            await new Promise((r) => setImmediate(r));
          }
          await agent.proc.kill('SIGKILL');
          const want = restart === 'same' ? ['br', 'gz'] : ['br'];
          agent = await startAgentProc(store, tokenFile, token, restart === 'same' ? both : br);
          for (let n = 0; n < 2; n++) {
            const { body } = await agent.api<SwapRecord>('POST', '/v1/sync?wait=1');
            assert.equal(body.result, 'ok', JSON.stringify(body.error));
          }
          for (const slot of ['a', 'b'] as const)
            for (const p of files) {
              const original = await readFile(join(store.slots[slot], p));
              for (const [suffix, decode] of [['.gz', gunzipSync] as const, ['.br', brotliDecompressSync] as const]) {
                const variant = await readFile(join(store.slots[slot], p + suffix)).catch(() => null);
                assert.equal(variant !== null, want.includes(suffix.slice(1)), `${slot} ${p}${suffix}`);
                if (variant) assert.ok(decode(variant).equals(original), `${slot} ${p}${suffix} stale`);
              }
            }
        } finally {
          await agent.proc.kill('SIGKILL');
          await store.dispose();
        }
      });
});
