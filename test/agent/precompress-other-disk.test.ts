import assert from 'node:assert/strict';
import { mkdir, readdir } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import type { AgentStatus, SwapRecord } from '../../src/agent/agent.js';
import { type TestAgent, startTestAgent } from '../../testkit/agent.js';
import { type TempStore, tempStore } from '../../testkit/store.js';
import { mountTmpfs } from '../../testkit/tools.js';
import { compressibleText as text } from '../../testkit/variants.js';
import { waitFor } from '../../testkit/wait.js';

describe('the variant cache on another file system than the copies', () => {
  let store: TempStore;
  let agent: TestAgent;
  let unmount: (() => void) | undefined;
  before(async () => {
    store = await tempStore();
    await mkdir(store.variantCacheDir, { recursive: true });
    unmount = mountTmpfs(store.variantCacheDir, '16m');
    await store.fill('master', { 'site/a.js': text('a0') });
    agent = await startTestAgent(store, { auto: false, watchMaster: false });
  });
  after(async () => {
    await agent?.close();
    unmount?.();
    await store.dispose();
  });
  const status = async () => ((await (await agent.call('GET', '/v1/status')).json()) as AgentStatus).precompress;
  const sync = async () => {
    const record = (await (await agent.call('POST', '/v1/sync?wait=1')).json()) as SwapRecord;
    assert.equal(record.result, 'ok', JSON.stringify(record.error ?? record));
    return record;
  };

  it('entries both copies took (by copy: no link across file systems) are let go, as on one file system', async () => {
    for (let i = 0; i < 5; i++) await agent.call('PUT', `/v1/files/site/p${i}.js`, { body: text(`p${i}`) });
    await waitFor('precompressed', async () => {
      const s = await status();
      return s && s.files >= 5 && s.queued === 0 ? s : null;
    });
    assert.equal((await sync()).variants?.cached, 10);
    assert.equal((await sync()).variants?.cached, 10);
    await new Promise((r) => setTimeout(r, 500)); // the prune after the swap
    const left = (await readdir(store.variantCacheDir)).length;
    assert.equal(
      left,
      0,
      `${left} entries kept an hour after both copies took them (${(await status())?.entries} known)`,
    );
  });
});
