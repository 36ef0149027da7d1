import { readEpochFile } from '../src/store/epoch-file.js';
import { startAgentProc, startWebProc, writeTokenFile } from '../testkit/cluster.js';
import { tempStore } from '../testkit/store.js';

const store = await tempStore();
const { file, token } = await writeTokenFile(store);
const agent = await startAgentProc(store, file, token);
const web = await startWebProc(store, 'w1');
// a cache with some keys, as a serving server has
for (let i = 0; i < 200; i++) await agent.api('PUT', `/v1/files/k${i}.txt`, `x${i}`);
await agent.api('PUT', '/v1/files/which.txt', 'v0');
await agent.api('POST', '/v1/sync?wait=1');
for (let i = 0; i < Number(process.env.KEYS ?? 200); i++) await (await fetch(`${web.url}/k${i}.txt`)).text();
const lags: number[] = [];
for (let s = 1; s <= 20; s++) {
  await agent.api('PUT', '/v1/files/which.txt', `v${s}`);
  const served = (async () => {
    for (;;) {
      const t = await (await fetch(`${web.url}/which.txt`)).text();
      if (t === `v${s}`) return Date.now();
      await new Promise((r) => setTimeout(r, 1));
    }
  })();
  await agent.api('POST', '/v1/sync?wait=1');
  const at = await served;
  const rec = await readEpochFile(store.epochFile);
  lags.push(at - Date.parse(rec?.publishedAt ?? ''));
}
console.log('publish -> serving ms', lags.sort((a, b) => a - b).join(' '));

process.exit(0);
