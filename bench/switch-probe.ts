/**
 * Publish to serving: how long after the agent publishes an epoch a
 * `mirrorswap serve` answers from the new copy, with a cache of N paths from
 * the old copy to warm (`--keys`, default 200) and with none, side by side in
 * one run. Each of `--swaps` syncs changes one file; a client polls it every
 * millisecond.
 *
 *   npm run build && node dist/bench/switch-probe.js --swaps 20 --keys 200
 */
import { readEpochFile } from '../src/store/epoch-file.js';
import { startAgentProc, startWebProc, writeTokenFile } from '../testkit/cluster.js';
import { tempStore } from '../testkit/store.js';
import { flag, machine, percentile } from './lib.js';

const swaps = flag('swaps', 20);
const keys = flag('keys', 200);

async function lags(cachedPaths: number): Promise<number[]> {
  const store = await tempStore();
  const { file, token } = await writeTokenFile(store);
  const agent = await startAgentProc(store, file, token);
  const web = await startWebProc(store, 'probe');
  try {
    for (let i = 0; i < cachedPaths; i++) await agent.api('PUT', `/v1/files/k${i}.txt`, `x${i}`);
    await agent.api('PUT', '/v1/files/which.txt', 'v0');
    await agent.api('POST', '/v1/sync?wait=1');
    // the paths a serving server has in its cache, to look up again in each new copy
    for (let i = 0; i < cachedPaths; i++) await (await fetch(`${web.url}/k${i}.txt`)).text();
    const out: number[] = [];
    for (let s = 1; s <= swaps; s++) {
      await agent.api('PUT', '/v1/files/which.txt', `v${s}`);
      const served = (async () => {
        for (;;) {
          if ((await (await fetch(`${web.url}/which.txt`)).text()) === `v${s}`) return Date.now();
          await new Promise((r) => setTimeout(r, 1));
        }
      })();
      await agent.api('POST', '/v1/sync?wait=1');
      const at = await served;
      out.push(at - Date.parse((await readEpochFile(store.epochFile))?.publishedAt ?? ''));
    }
    return out.sort((a, b) => a - b);
  } finally {
    await Promise.all([web.proc.kill('SIGTERM'), agent.proc.kill('SIGTERM')]).catch(() => {});
    await store.dispose();
  }
}

console.log(`publish -> serving, ${swaps} swaps (${machine()})`);
for (const n of [0, keys]) {
  const sorted = await lags(n);
  console.log(
    `  ${String(n).padStart(5)} cached paths: p50 ${percentile(sorted, 50)} ms, p99 ${percentile(sorted, 99)} ms, max ${sorted.at(-1)} ms`,
  );
}
