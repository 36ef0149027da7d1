import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { AgentStatus, SwapRecord } from '../../src/agent/agent-types.js';
import { type EpochRecord, readEpochFile } from '../../src/store/epoch-file.js';
import type { SlotName } from '../../src/store/store-layout.js';
import { type TestAgent, startTestAgent } from '../../testkit/agent.js';
import { type TestApp, startApp } from '../../testkit/app.js';
import { rawGet } from '../../testkit/server.js';
import { type TempStore, tempStore } from '../../testkit/store.js';
import { treeOf } from '../../testkit/trees.js';
import { waitFor } from '../../testkit/wait.js';

/** A file larger than loopback sockets buffer: a response of it stays in flight while its client does not read. */
const BIG = 48 << 20;

/** Release n's lazily loaded chunk: a hashed name of its own, as a bundler writes it. */
const chunkOf = (n: number) => `assets/chunk-${n}a${n}b${n}c${n}d.js`;
const chunkBody = (n: number) => `export const release = ${n};\n${'x'.repeat(2000)}\n`;

describe('keeping more releases: retained copies, pins, the asset fallback, rollback to any', () => {
  let store: TempStore;
  let agent: TestAgent;
  let web: TestApp;
  const records = new Map<number, SwapRecord>();

  /** Publish release n: its page and chunk; the chunk of release n-1 is deleted, as a bundler's output replaces it. */
  async function release(n: number): Promise<SwapRecord> {
    await agent.call('PUT', '/v1/files/index.html', { body: `<script src="/${chunkOf(n)}"></script> release ${n}` });
    await agent.call('PUT', `/v1/files/${chunkOf(n)}`, { body: chunkBody(n) });
    if (n > 1) await agent.call('DELETE', `/v1/files/${chunkOf(n - 1)}`);
    const res = await agent.call('POST', `/v1/sync?wait=1&release=r${n}`);
    const record = (await res.json()) as SwapRecord;
    assert.equal(record.result, 'ok', JSON.stringify(record.error));
    records.set(n, record);
    // the web server serves it before the next step looks
    await waitFor('the web server to switch', () => web.mw.state().epoch >= record.epoch);
    return record;
  }
  const epochFile = async () => (await readEpochFile(store.epochFile)) as EpochRecord;
  const get = (path: string, headers: Record<string, string> = {}) => rawGet(web.port, path, headers);

  before(async () => {
    store = await tempStore();
    await store.fill('master', { 'keep.txt': 'the same in every release', 'big.bin': Buffer.alloc(BIG, 7) });
    agent = await startTestAgent(store, { keep: 4, skewMaxAgeMs: 60 * 60_000 });
    web = await startApp({
      store: store.root,
      serverId: 'web-keep',
      heartbeatInterval: 100,
      releaseHeader: 'X-Release',
    });
    await release(1);
  });
  after(async () => {
    await web.close();
    await agent.close();
    await store.dispose();
  });

  it('each sync keeps the release it replaced, up to --keep in all, newest first', async () => {
    await release(2);
    await release(3);
    const e = await epochFile();
    assert.equal(e.release, 'r3');
    // the release init published (no id) is the third kept besides the one mounted
    assert.deepEqual(
      e.retained?.map((r) => r.release),
      ['r2', 'r1', undefined],
    );
    assert.deepEqual(
      e.retained?.map((r) => r.epoch),
      [records.get(2)?.epoch, records.get(1)?.epoch, 1],
    );
    assert.ok(e.retained?.every((r) => r.until !== undefined && Date.parse(r.until) > Date.now()));
    // four copies in use: a, b, then c and d made by the first syncs that needed them
    assert.deepEqual(new Set([e.mounted, ...(e.retained ?? []).map((r) => r.slot)]), new Set(['a', 'b', 'c', 'd']));
  });

  it('a request pinned by query, header or cookie is served whole from its release, HTML included', async () => {
    const sources: Record<string, string>[] = [{}, { 'x-deployment-id': 'r2' }, { cookie: 'theme=dark; __dpl=r2' }];
    for (const headers of sources) {
      const path = Object.keys(headers).length === 0 ? `/${chunkOf(2)}?dpl=r2` : `/${chunkOf(2)}`;
      const res = await get(path, headers);
      assert.equal(res.status, 200, JSON.stringify(headers));
      assert.equal(res.body.toString(), chunkBody(2));
      assert.equal(res.headers['x-release'], 'r2');
      const page = await get(path.replace(chunkOf(2), 'index.html'), headers);
      assert.match(page.body.toString(), /release 2$/);
    }
    // pinned outside the URL: no shared cache may keep it for others; by the query (part of the URL) it may
    assert.equal(
      (await get(`/${chunkOf(2)}`, { 'x-deployment-id': 'r2' })).headers['cache-control'],
      'private, no-cache',
    );
    assert.notEqual((await get(`/${chunkOf(2)}?dpl=r2`)).headers['cache-control'], 'private, no-cache');
    // by the epoch that published it, too
    const byEpoch = await get(`/index.html?dpl=${records.get(1)?.epoch}`);
    assert.match(byEpoch.body.toString(), /release 1$/);
  });

  it('a navigation is never pinned by the cookie: a reload gets the mounted release', async () => {
    const res = await get('/index.html', { cookie: '__dpl=r2', 'sec-fetch-mode': 'navigate' });
    assert.match(res.body.toString(), /release 3$/);
  });

  it('a request naming no release gets a hashed asset the mounted release lacks from the newest retained one', async () => {
    const res = await get(`/${chunkOf(1)}`);
    assert.equal(res.status, 200);
    assert.equal(res.body.toString(), chunkBody(1));
    assert.equal(res.headers['x-release'], 'r1');
    // a path that is no hashed asset is not looked for in older releases
    await agent.call('PUT', '/v1/files/plain.js', { body: 'plain' });
    await release(4);
    await agent.call('DELETE', '/v1/files/plain.js');
    await release(5);
    assert.equal((await get('/plain.js')).status, 404);
    const metrics = await (await fetch(`${web.url}/metrics`)).text();
    assert.match(metrics, /mirrorswap_server_pinned_requests_total\{result="pinned"\} [1-9]/);
    assert.match(metrics, /mirrorswap_server_pinned_requests_total\{result="fallback"\} [1-9]/);
  });

  it('a release that left retention: pins to it get the mounted release, and its deleted chunk a 404', async () => {
    const e = await epochFile();
    assert.deepEqual(
      e.retained?.map((r) => r.release),
      ['r4', 'r3', 'r2'],
    );
    const res = await get(`/index.html?dpl=r1`);
    assert.match(res.body.toString(), /release 5$/);
    assert.equal((await get(`/${chunkOf(1)}?dpl=r1`)).status, 404);
    const metrics = await (await fetch(`${web.url}/metrics`)).text();
    assert.match(metrics, /mirrorswap_server_pinned_requests_total\{result="unknown"\} [1-9]/);
  });

  it('copies share unchanged files by hard link; a retained release never changes', async () => {
    const e = await epochFile();
    const slots = [e.mounted, ...(e.retained ?? []).map((r) => r.slot)];
    const inodes = await Promise.all(slots.map(async (s) => (await stat(join(store.slots[s], 'keep.txt'))).ino));
    assert.equal(new Set(inodes).size, 1, 'one inode for the unchanged file in every copy');
    const big = await Promise.all(slots.map(async (s) => (await stat(join(store.slots[s], 'big.bin'))).ino));
    assert.equal(new Set(big).size, 1, 'a large file (copied outside the walk threads) is shared too');
    // r3's copy, hashed before and after a release that changes the file every copy shares
    const r3 = e.retained?.find((r) => r.release === 'r3')?.slot as SlotName;
    const before = await hashTree(store.slots[r3]);
    await agent.call('PUT', '/v1/files/keep.txt', { body: 'changed at last' });
    await release(6);
    assert.equal(await readFile(join(store.slots[(await epochFile()).mounted], 'keep.txt'), 'utf8'), 'changed at last');
    assert.ok(
      (await epochFile()).retained?.some((r) => r.release === 'r3' && r.slot === r3),
      'r3 is still retained',
    );
    assert.deepEqual(await hashTree(store.slots[r3]), before, 'a retained release never changes');
    assert.equal(await readFile(join(store.slots[r3], 'keep.txt'), 'utf8'), 'the same in every release');
  });

  it('the sync that reuses a retained copy retires it first and says so; one younger than --skew-max-age is counted', async () => {
    const record = records.get(6) as SwapRecord;
    assert.equal(record.reused?.release, 'r2');
    assert.equal(record.reused?.early, true);
    assert.equal(typeof record.phases.retire, 'number');
    assert.ok((record.shared ?? 0) >= 0);
    const metrics = await (await agent.call('GET', '/metrics')).text();
    assert.match(metrics, /mirrorswap_agent_early_reuses_total [1-9]/);
    assert.match(metrics, /mirrorswap_agent_retained_release_age_seconds\{slot="[a-h]",epoch="\d+",release="r5"\}/);
  });

  it('a request in flight on the oldest retained copy holds its reuse until it ends, and gets its bytes whole', async () => {
    const e = await epochFile();
    const oldest = (e.retained ?? []).reduce((x, y) => (y.epoch < x.epoch ? y : x));
    // a body larger than the sockets' buffers, read only later, pinned to the oldest retained release: its copy is the next sync's
    const held = slowGet(web.port, `/big.bin?dpl=${oldest.release}`);
    await waitFor('the request to be in flight', () => (web.mw.state().inflight[oldest.slot] ?? 0) > 0);
    let done = false;
    const sync = release(7).then((r) => {
      done = true;
      return r;
    });
    await new Promise((r) => setTimeout(r, 600));
    assert.equal(done, false, 'the sync waits for the pinned request');
    const body = await held.finish();
    assert.equal(body.length, BIG);
    assert.ok(body.every((b) => b === 7));
    const record = await sync;
    assert.equal(record.to, oldest.slot);
  });

  it('status lists the retained releases with their age, end and requests in flight', async () => {
    // the requests of the test before end in the web server first, and in the agent's status with its
    // next heartbeat
    await waitFor('no request in flight on a retained release', async () =>
      ((await (await agent.call('GET', '/v1/status')).json()) as AgentStatus).retained.every((r) => r.inflight === 0),
    );
    const status = (await (await agent.call('GET', '/v1/status')).json()) as AgentStatus;
    assert.equal(status.keep, 4);
    assert.deepEqual(
      status.retained.map((r) => r.release),
      ['r6', 'r5', 'r4'],
    );
    for (const r of status.retained) {
      assert.equal(typeof r.ageSeconds, 'number');
      assert.equal(r.inflight, 0);
      assert.ok(r.until);
    }
    // what each retained release served, pinned or by fallback, counted by the web server's heartbeat
    const servedOf = async (release: string) =>
      ((await (await agent.call('GET', '/v1/status')).json()) as AgentStatus).retained.find(
        (r) => r.release === release,
      )?.served;
    const before = (await servedOf('r5')) as { pinned: number; fallback: number };
    for (let i = 0; i < 3; i++) assert.equal((await get('/index.html?dpl=r5')).status, 200);
    // release 5's chunk, deleted by release 6: served to a request naming no release from r5's copy
    assert.equal((await get(`/${chunkOf(5)}`)).headers['x-release'], 'r5');
    // a heartbeat may count a request served while it is still in flight there (the client has its
    // answer before the server's own end of it): wait for the heartbeat that has it ended too
    await waitFor('three pinned requests and one fallback counted for r5, and ended', async () => {
      const now = ((await (await agent.call('GET', '/v1/status')).json()) as AgentStatus).retained.find(
        (r) => r.release === 'r5',
      );
      return (
        now?.served.pinned === before.pinned + 3 && now.served.fallback === before.fallback + 1 && now.inflight === 0
      );
    });
    // and in the agent's metrics, per retained release
    const served = (await servedOf('r5')) as { pinned: number; fallback: number };
    const metrics = await (await agent.call('GET', '/metrics')).text();
    const r5 = (kind: string) =>
      new RegExp(
        `mirrorswap_agent_retained_release_requests\\{slot="[a-h]",epoch="\\d+",release="r5",kind="${kind}"\\} (\\d+)`,
      ).exec(metrics)?.[1];
    assert.equal(r5('pinned'), String(served.pinned));
    assert.equal(r5('fallback'), String(served.fallback));
    assert.equal(r5('inflight'), '0');
    // the copies' disk: the large file once in all, shared by every copy
    const disk = (
      (await (await agent.call('GET', '/v1/status?disk=1')).json()) as {
        disk: { copies: { name: string; bytes: number; shared: number; owned: number }[]; total: number };
      }
    ).disk;
    assert.deepEqual(disk.copies.map((c) => c.name).sort(), ['a', 'b', 'c', 'd']);
    for (const c of disk.copies) assert.ok(c.shared >= BIG, `slot ${c.name} shares the large file`);
    const sum = disk.copies.reduce((n, c) => n + c.bytes, 0);
    assert.ok(disk.total >= BIG && disk.total < sum - 2 * BIG, 'shared files counted once in the total');
  });

  it('rollback --to any retained release mounts its copy as it is, with no copy; the one it replaces stays retained', async () => {
    const res = await agent.call('POST', '/v1/rollback?to=r5');
    const record = (await res.json()) as SwapRecord;
    assert.equal(record.result, 'ok', JSON.stringify(record.error));
    assert.equal(record.copied.files, 0);
    assert.equal(record.release, 'r5');
    await waitFor('the web server to switch', () => web.mw.state().epoch >= record.epoch);
    assert.match((await get('/index.html')).body.toString(), /release 5$/);
    assert.match((await get('/index.html?dpl=r7')).body.toString(), /release 7$/);
    const refused = await agent.call('POST', '/v1/rollback?to=r1');
    const body = (await refused.json()) as SwapRecord;
    assert.equal(body.error?.code ?? (body as unknown as { error: string }).error, 'NO_ROLLBACK');
  });
});

/** Every entry of a tree (type, path, mode, mtime, content) hashed: a retained release must not change at all. */
async function hashTree(root: string): Promise<string[]> {
  return (await treeOf(root)).map((line) => createHash('sha256').update(line).digest('hex'));
}

/** A GET whose body is read only once `finish` is called: the request stays in flight until then. */
function slowGet(port: number, path: string): { finish(): Promise<Buffer> } {
  const chunks: Buffer[] = [];
  let resolveBody: (b: Buffer) => void = () => {};
  let rejectBody: (e: Error) => void = () => {};
  const body = new Promise<Buffer>((resolve, reject) => {
    resolveBody = resolve;
    rejectBody = reject;
  });
  let response: import('node:http').IncomingMessage | undefined;
  const req = request({ host: '127.0.0.1', port, path, agent: false }, (res) => {
    response = res;
    res.pause();
    res.on('data', (c: Buffer) => chunks.push(c));
    res.on('end', () => resolveBody(Buffer.concat(chunks)));
    res.on('error', rejectBody);
  });
  req.on('error', rejectBody);
  req.end();
  return {
    finish() {
      const resume = () => (response ? response.resume() : setTimeout(resume, 10));
      resume();
      return body;
    },
  };
}
