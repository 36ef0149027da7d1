import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { type Browser, type Page, chromium } from 'playwright-core';
import type { SwapRecord } from '../../src/agent/agent-types.js';
import { type TestAgent, startTestAgent } from '../../testkit/agent.js';
import { type TestApp, startApp } from '../../testkit/app.js';
import { type TempStore, tempStore } from '../../testkit/store.js';
import { tool } from '../../testkit/tools.js';
import { waitFor } from '../../testkit/wait.js';

/**
 * The skew a single-page app meets on every deploy, in a real browser: a tab
 * opened on release N lazily imports a chunk after releases that deleted or
 * renamed it were published. The page imports its chunk two ways: naming its
 * release (`?dpl=`, as Next.js does with `deploymentId`) and naming nothing
 * (the asset fallback).
 */

const chunkName = (n: number) => `assets/chunk-${n}f0e1d2c3.js`;
const chunkBody = (n: number) => `export const release = ${n};\nexport const pad = '${'x'.repeat(3000)}';\n`;
/** Release n's page: it knows its own release id, as a framework's build does. */
const page = (n: number) => `<!doctype html><html><head><meta charset="utf-8"><title>release ${n}</title></head>
<body><p id="release">${n}</p><script type="module">
const load = async (url) => {
  try { return String((await import(url)).release); } catch (err) { return 'failed: ' + err.message; }
};
// a module loaded once is cached by the browser: each round asks the server with a query of its own
window.loadPinned = (round) => load('/${chunkName(n)}?dpl=r${n}&round=' + round);
window.loadUnpinned = (round) => load('/${chunkName(n)}?round=' + round);
window.fetchPinned = async () => (await fetch('/${chunkName(n)}?dpl=r${n}')).text();
</script></body></html>`;

/** What release n's page offers the test. */
interface Loaders {
  loadPinned(round: number): Promise<string>;
  loadUnpinned(round: number): Promise<string>;
  fetchPinned(): Promise<string>;
}

async function launch(): Promise<Browser> {
  return chromium.launch({
    executablePath: tool('chromium', 'chromium'),
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
  });
}

/** A store keeping `keep` releases, with its agent and one Express web server. */
async function site(
  keep: number,
): Promise<{ store: TempStore; agent: TestAgent; web: TestApp; close(): Promise<void> }> {
  const store = await tempStore();
  const agent = await startTestAgent(store, { keep });
  const web = await startApp({ store: store.root, serverId: `web-skew-${keep}`, heartbeatInterval: 100 });
  return {
    store,
    agent,
    web,
    async close() {
      await web.close();
      await agent.close();
      await store.dispose();
    },
  };
}

/** Publish release n: a new page and a new chunk; release n-1's chunk deleted (a bundler's new output). */
async function publish(s: Awaited<ReturnType<typeof site>>, n: number): Promise<SwapRecord> {
  await s.agent.call('PUT', '/v1/files/index.html', { body: page(n) });
  await s.agent.call('PUT', `/v1/files/${chunkName(n)}`, { body: chunkBody(n) });
  if (n > 1) await s.agent.call('DELETE', `/v1/files/${chunkName(n - 1)}`);
  const record = (await (await s.agent.call('POST', `/v1/sync?wait=1&release=r${n}`)).json()) as SwapRecord;
  assert.equal(record.result, 'ok', JSON.stringify(record.error));
  await waitFor('the web server to switch', () => s.web.mw.state().epoch >= record.epoch);
  return record;
}

describe('skew protection in a real browser', () => {
  let browser: Browser;
  before(async () => {
    browser = await launch();
  });
  after(async () => {
    await browser?.close();
  });

  it('--keep 5: a tab of release 1 loads its chunk after releases 2 to 5, published 5 s apart, deleted it', async () => {
    const s = await site(5);
    let tab: Page | undefined;
    try {
      await publish(s, 1);
      tab = await browser.newPage();
      await tab.goto(`${s.web.url}/index.html`);
      assert.equal(await tab.textContent('#release'), '1');
      const failures: string[] = [];
      for (let n = 2; n <= 5; n++) {
        await delay(5000);
        await publish(s, n);
        const [pinned, unpinned] = await tab.evaluate(async (round) => {
          const w = globalThis as unknown as Loaders;
          return [await w.loadPinned(round), await w.loadUnpinned(round)];
        }, n);
        for (const got of [pinned, unpinned]) if (got !== '1') failures.push(`after release ${n}: ${got}`);
        // new tabs get the new release
        const fresh = await browser.newPage();
        await fresh.goto(`${s.web.url}/index.html`);
        assert.equal(await fresh.textContent('#release'), String(n));
        await fresh.close();
      }
      assert.deepEqual(failures, [], 'no failed chunk load');
      // the pinned answer is byte for byte release 1's chunk
      assert.equal(await tab.evaluate(() => (globalThis as unknown as Loaders).fetchPinned()), chunkBody(1));

      // release 6 makes release 1 leave retention: the documented answer is the mounted release's,
      // where its chunk was deleted long ago: a 404, and the import fails
      await publish(s, 6);
      const res = await fetch(`${s.web.url}/${chunkName(1)}?dpl=r1&after=6`);
      assert.equal(res.status, 404);
      const gone = await tab.evaluate(
        async (url) => {
          try {
            await import(url);
            return 'loaded';
          } catch {
            return 'failed';
          }
        },
        `/${chunkName(1)}?dpl=r1&after=6`,
      );
      assert.equal(gone, 'failed');
    } finally {
      await tab?.close();
      await s.close();
    }
  });

  it('--keep 2 (the default): the same tab fails to load its chunk once the next release deleted it', async () => {
    const s = await site(2);
    let tab: Page | undefined;
    try {
      await publish(s, 1);
      tab = await browser.newPage();
      await tab.goto(`${s.web.url}/index.html`);
      await publish(s, 2);
      const got = await tab.evaluate(() => (globalThis as unknown as Loaders).loadPinned(2));
      assert.match(got, /^failed/, 'what skew protection prevents: the chunk is gone');
    } finally {
      await tab?.close();
      await s.close();
    }
  });
});
