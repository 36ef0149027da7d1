import assert from 'node:assert/strict';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type Browser, type Page, chromium } from 'playwright-core';
import { type TestAgent, startTestAgent } from '../../testkit/agent.js';
import { type TestApp, startApp } from '../../testkit/app.js';
import { type TempStore, tempStore } from '../../testkit/store.js';
import { tool } from '../../testkit/tools.js';

describe('the agent status page in a real browser', () => {
  let store: TempStore;
  let agent: TestAgent;
  let app: TestApp;
  let browser: Browser;
  let page: Page;
  let shots: string;
  /** Wait (no eval: the page's CSP forbids it) until an element's text matches. */
  const waitText = (selector: string, re: RegExp) =>
    page.locator(selector).filter({ hasText: re }).waitFor({ timeout: 10_000 });

  before(async () => {
    const executablePath = tool('chromium', 'chromium');
    store = await tempStore();
    await store.fill('master', { 'index.html': 'v1' });
    agent = await startTestAgent(store);
    app = await startApp({ store: store.root, serverId: 'web-status', heartbeatInterval: 100 });
    // a hand-written heartbeat with hostile text: it must show as text, never run
    await writeFile(
      join(store.serversDir, 'hostile.json'),
      JSON.stringify({
        format: 1,
        id: 'hostile',
        host: '<img src=x onerror="window.pwned=1">',
        pid: 1,
        epoch: 0,
        mounted: null,
        inflight: { a: 0, b: 0 },
        at: new Date().toISOString(),
        interval: 1000,
        kind: 'static',
      }),
    );
    shots = await mkdtemp(join(tmpdir(), 'mirrorswap-shots-'));
    browser = await chromium.launch({
      executablePath,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    page = await browser.newPage();
  });
  after(async () => {
    await browser?.close();
    await app?.close();
    await agent?.close();
    await store?.dispose();
    await rm(shots, { recursive: true, force: true });
  });

  it('is served with a strict Content-Security-Policy and shows nothing without the token', async () => {
    const res = await page.goto(`${agent.url}/`);
    assert.equal(res?.status(), 200);
    assert.match(res?.headers()['content-security-policy'] ?? '', /default-src 'none'; script-src 'nonce-/);
    assert.equal(await page.isVisible('#status'), false);
    await page.fill('#token', 'not-the-token-at-all');
    await page.click('#auth button');
    await waitText('#message', /^the token was refused$/);
    assert.equal(await page.isVisible('#status'), false);
  });

  it('renders the epoch, both slots, the servers and pending changes once given the token', async () => {
    await page.fill('#token', agent.token);
    await page.click('#auth button');
    await page.waitForSelector('#status', { state: 'visible' });
    await waitText('#epoch', /^1$/);
    assert.equal(await page.textContent('#mounted'), 'a');
    assert.match((await page.textContent('#standby')) ?? '', /^b /);
    await waitText('#servers', /web-status/);
    const hostile = await page.textContent('#servers');
    assert.ok(hostile?.includes('<img src=x onerror="window.pwned=1">'), 'hostile text was not shown as text');
    assert.equal(await page.evaluate(() => (globalThis as { pwned?: number }).pwned), undefined);
    // two copies, no release retained: no table of them
    assert.equal(await page.isVisible('#releases'), false);
  });

  it('updates after a swap started from its Sync button, and records the swap with its phases', async () => {
    await agent.call('PUT', '/v1/files/index.html', { body: 'v2' });
    await waitText('#pending', /^1/);
    await page.click('#sync');
    await waitText('#message', /^sync: ok/);
    await waitText('#epoch', /^2$/);
    assert.equal(await page.textContent('#mounted'), 'b');
    const swaps = (await page.textContent('#swaps')) ?? '';
    assert.match(swaps, /sync2a → bok1 files/);
    const file = join(process.env.MIRRORSWAP_SCREENSHOT_DIR ?? shots, 'status.png');
    await page.screenshot({ path: file, fullPage: true });
    assert.ok((await stat(file)).size > 5000, 'the screenshot is empty');
  });

  it('rolls back from its Roll back button', async () => {
    await page.click('#rollback');
    await waitText('#message', /^rollback: ok/);
    await waitText('#mounted', /^a$/);
    assert.match((await page.textContent('#pending')) ?? '', /paused/);
  });

  it('keeping releases: lists each retained one with the requests it served pinned', async () => {
    const keepStore = await tempStore();
    await keepStore.fill('master', { 'index.html': 'r0' });
    const keeping = await startTestAgent(keepStore, { keep: 3 });
    const web = await startApp({ store: keepStore.root, serverId: 'web-keep', heartbeatInterval: 100 });
    const keepPage = await browser.newPage();
    try {
      for (const r of ['r1', 'r2']) {
        await keeping.call('PUT', '/v1/files/index.html', { body: r });
        const res = await keeping.call('POST', `/v1/sync?wait=1&release=${r}`);
        assert.equal(((await res.json()) as { result: string }).result, 'ok');
      }
      for (let i = 0; i < 2; i++) {
        const res = await fetch(`http://127.0.0.1:${web.port}/index.html?dpl=r1`);
        assert.equal(await res.text(), 'r1');
      }
      await keepPage.goto(`${keeping.url}/`);
      await keepPage.fill('#token', keeping.token);
      await keepPage.click('#auth button');
      await keepPage.locator('#retained').filter({ hasText: /r1/ }).waitFor({ timeout: 10_000 });
      assert.equal(await keepPage.textContent('#keep'), '3');
      const rows = await keepPage.locator('#retained tr').allTextContents();
      assert.equal(rows.length, 2, rows.join('\n'));
      // slot, epoch, release, age, until, in flight, served pinned, by fallback
      const cells = await keepPage.locator('#retained tr').first().locator('td').allTextContents();
      assert.equal(cells[2], 'r1');
      await keepPage
        .locator('#retained tr')
        .first()
        .locator('td')
        .nth(6)
        .filter({ hasText: /^2$/ })
        .waitFor({ timeout: 10_000 });
      // the copies' disk use, on demand: each copy, and all of them with each file once
      await keepPage.click('#disk');
      await keepPage
        .locator('#disk-total')
        .filter({ hasText: /^all copies: [0-9.]+ MiB/ })
        .waitFor({ timeout: 10_000 });
      const copies = await keepPage.locator('#copies tr td:first-child').allTextContents();
      assert.deepEqual(copies.sort(), ['a', 'b', 'c']);
    } finally {
      await keepPage.close();
      await web.close();
      await keeping.close();
      await keepStore.dispose();
    }
  });
});
