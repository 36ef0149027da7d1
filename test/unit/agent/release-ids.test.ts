import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { AgentStatus, SwapRecord } from '../../../src/agent/agent.js';
import { parseEpochRecord, readEpochFile, releaseIdProblem } from '../../../src/store/epoch-file.js';
import { type TestAgent, startTestAgent } from '../../../testkit/agent.js';
import { type TestApp, startApp } from '../../../testkit/app.js';
import { rawGet } from '../../../testkit/server.js';
import { type TempStore, tempStore } from '../../../testkit/store.js';

describe('release ids', () => {
  let store: TempStore;
  let agent: TestAgent;
  let web: TestApp;
  let named: TestApp;

  before(async () => {
    store = await tempStore();
    await store.fill('master', { 'app.js': 'one' });
    agent = await startTestAgent(store);
    web = await startApp({ store: store.root, serverId: 'web-release', heartbeatInterval: 100 });
    named = await startApp({
      store: store.root,
      serverId: 'web-release-header',
      heartbeatInterval: 100,
      releaseHeader: 'X-Release',
    });
  });
  after(async () => {
    await named.close();
    await web.close();
    await agent.close();
    await store.dispose();
  });

  const sync = async (query: string) => {
    const res = await agent.call('POST', `/v1/sync?wait=1${query}`);
    return { status: res.status, body: (await res.json()) as SwapRecord & { error?: string } };
  };
  const status = async () => (await (await agent.call('GET', '/v1/status')).json()) as AgentStatus;
  const metrics = async () => (await agent.call('GET', '/metrics')).text();
  const body = async (path: string) => (await rawGet(web.port, path)).body.toString();

  it('a sync names its release in the record, the epoch file, status and the metrics', async () => {
    await agent.call('PUT', '/v1/files/app.js', { body: 'two' });
    const first = await sync('&release=3f2a9c1');
    assert.equal(first.status, 200);
    assert.equal(first.body.release, '3f2a9c1');
    const epoch = await readEpochFile(store.epochFile);
    assert.equal(epoch?.release, '3f2a9c1');
    assert.equal(epoch?.previous?.epoch, 1, 'the release mounted before: init');
    assert.equal(epoch?.previous?.release, undefined);
    assert.equal((await status()).release, '3f2a9c1');
    assert.match(
      await metrics(),
      new RegExp(`mirrorswap_agent_release_info\\{release="3f2a9c1",epoch="${epoch?.epoch}"\\} 1`),
    );

    await agent.call('PUT', '/v1/files/app.js', { body: 'three' });
    const second = await sync('&release=dpl_8f2c.v1%2Bbuild');
    assert.equal(second.body.release, 'dpl_8f2c.v1+build');
    const next = await readEpochFile(store.epochFile);
    assert.deepEqual(next?.previous, { epoch: epoch?.epoch, release: '3f2a9c1' });
    const s = await status();
    assert.deepEqual(s.previous, { epoch: epoch?.epoch, release: '3f2a9c1', retained: true });
    // one info series at a time: the mounted release's
    assert.equal((await metrics()).match(/^mirrorswap_agent_release_info\{/gm)?.length, 1);
    assert.equal(await body('/app.js'), 'three');
    // the header names the release the file came from; a server without the option sends none
    const answer = await rawGet(named.port, '/app.js');
    assert.equal(answer.headers['x-release'], 'dpl_8f2c.v1+build');
    assert.equal((await rawGet(web.port, '/app.js')).headers['x-release'], undefined);
  });

  it('refuses a release id that breaks the rules, before anything is queued', async () => {
    for (const bad of ['', '-x', '.hidden', 'a b', 'a/b', 'x'.repeat(129), 'é', 'a%0Ab', 'a&release=b']) {
      const res = await sync(`&release=${encodeURIComponent(bad)}`);
      assert.equal(res.status, 400, `release ${JSON.stringify(bad)}`);
      assert.equal(res.body.error, 'BAD_RELEASE');
    }
    // a parameter given twice is not taken as either value
    assert.equal((await sync('&release=a&release=b')).status, 400);
    assert.equal((await readEpochFile(store.epochFile))?.release, 'dpl_8f2c.v1+build');
  });

  it('rollback --to refuses the mounted release and one no longer held, naming what is retained', async () => {
    for (const to of ['dpl_8f2c.v1%2Bbuild', 'nope', '1']) {
      const res = await agent.call('POST', `/v1/rollback?to=${to}`);
      assert.equal(res.status, 503, to);
      const refusal = (await res.json()) as SwapRecord;
      assert.equal(refusal.error?.code, 'NO_ROLLBACK');
      assert.match(refusal.error?.message ?? '', /3f2a9c1|mounted/);
    }
    assert.equal(await body('/app.js'), 'three', 'a refused rollback changes nothing');
    assert.equal((await status()).paused, false, 'and pauses nothing');
  });

  it('rollback --to the release before, by id or by epoch, mounts it again under a new epoch', async () => {
    const before = await readEpochFile(store.epochFile);
    const res = await agent.call('POST', '/v1/rollback?to=3f2a9c1');
    assert.equal(res.status, 200);
    const record = (await res.json()) as SwapRecord;
    assert.equal(record.release, '3f2a9c1');
    assert.equal(await body('/app.js'), 'two');
    const epoch = await readEpochFile(store.epochFile);
    assert.equal(epoch?.release, '3f2a9c1');
    assert.equal(epoch?.epoch, (before?.epoch ?? 0) + 1);
    assert.deepEqual(epoch?.previous, { epoch: before?.epoch, release: 'dpl_8f2c.v1+build' });
    // the standby now holds a newer release than the mounted one: not a rollback
    assert.equal((await status()).previous?.retained, false);
    const again = await agent.call('POST', `/v1/rollback?to=${before?.epoch}`);
    assert.equal(again.status, 503);
    // a sync that names no release publishes none
    const plain = await sync('');
    assert.equal(plain.body.release, undefined);
    assert.equal((await readEpochFile(store.epochFile))?.release, undefined);
    assert.match(await metrics(), /mirrorswap_agent_release_info\{release="",epoch="\d+"\} 1/);
    // a release without an id is named by its epoch
    const unnamed = (await readEpochFile(store.epochFile))?.epoch;
    assert.equal((await rawGet(named.port, '/app.js')).headers['x-release'], String(unnamed));
  });

  it('refuses a release header that is not a field name of its own', async () => {
    for (const bad of ['', 'X Release', 'ETag', 'content-length', 'Vary', 'x'.repeat(65), 7, true]) {
      await assert.rejects(
        startApp({ store: store.root, releaseHeader: bad as string }),
        /releaseHeader option/,
        String(bad),
      );
    }
  });
});

describe('release ids in the epoch file', () => {
  const base = { format: 1, epoch: 3, mounted: 'a', roots: { a: 'a', b: 'b' }, publishedAt: '2026-12-05T00:00:00Z' };
  it('reads a release and the one before, and refuses malformed ones naming the field', () => {
    const record = parseEpochRecord(
      JSON.stringify({ ...base, release: 'abc', previous: { epoch: 2, release: 'def' } }),
      'test',
    );
    assert.equal(record.release, 'abc');
    assert.deepEqual(record.previous, { epoch: 2, release: 'def' });
    for (const [extra, field] of [
      [{ release: 'a b' }, 'release'],
      [{ release: 7 }, 'release'],
      [{ previous: 2 }, 'previous'],
      [{ previous: { epoch: 0 } }, 'previous.epoch'],
      [{ previous: { epoch: 1, release: '../x' } }, 'previous.release'],
    ] as const) {
      assert.throws(
        () => parseEpochRecord(JSON.stringify({ ...base, ...extra }), 'test'),
        (err: Error) => err.message.includes(`"${field}"`),
        field,
      );
    }
  });
  it('a release id is 1-128 safe characters starting with a letter or digit', () => {
    for (const ok of ['a', '3f2a9c1e', 'v1.2.3+build.5', 'dpl_x:y@z-1', 'x'.repeat(128)])
      assert.equal(releaseIdProblem(ok), null);
    for (const bad of ['', '_a', 'x'.repeat(129), 'a\nb', 'a\u0000', 'ü', null, 3])
      assert.ok(releaseIdProblem(bad), String(bad));
  });
});
