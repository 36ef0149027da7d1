import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { gunzipSync } from 'node:zlib';
import type { SwapRecord } from '../../src/agent/agent-types.js';
import { readEpochFile } from '../../src/store/epoch-file.js';
import { readHeartbeats } from '../../src/store/heartbeat.js';
import { NginxCompanion } from '../../src/nginx/companion.js';
import { renderInclude } from '../../src/nginx/include-file.js';
import { type TestAgent, startTestAgent } from '../../testkit/agent.js';
import { heldDownload } from '../../testkit/cluster.js';
import { memoryLogger } from '../../testkit/logger.js';
import { type TestNginx, startNginx } from '../../testkit/nginx.js';
import { rawGet } from '../../testkit/server.js';
import { type TempStore, tempStore } from '../../testkit/store.js';
import { compressibleText } from '../../testkit/variants.js';
import { waitFor } from '../../testkit/wait.js';

const MB = 1024 * 1024;

/** Release n's script: compressible, so each release's copy has its own `app.js.gz` beside it. */
const appOf = (n: number) => compressibleText(`release ${n}`, 4096);

function get(
  port: number,
  path: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

describe('the nginx companion with a store keeping releases', () => {
  let store: TempStore;
  let agent: TestAgent;
  let nginx: TestNginx;
  let companion: NginxCompanion;

  const release = async (n: number) => {
    await agent.call('PUT', '/v1/files/page.txt', { body: `release ${n}` });
    await agent.call('PUT', '/v1/files/app.js', { body: appOf(n) });
    const record = (await (await agent.call('POST', `/v1/sync?wait=1&release=r${n}`)).json()) as SwapRecord;
    assert.equal(record.result, 'ok', JSON.stringify(record.error));
    await waitFor('nginx to serve it', async () => (await get(nginx.port, '/page.txt')).body === `release ${n}`);
    return record;
  };

  before(async () => {
    store = await tempStore();
    await store.fill('master', { 'page.txt': 'release 0', 'big.bin': Buffer.alloc(64 * MB, 'A') });
    agent = await startTestAgent(store, { keep: 3, serverTtlMs: 5000 }, 128 * MB);
    nginx = await startNginx();
    companion = await NginxCompanion.start({
      layout: store,
      includeFile: nginx.includeFile,
      pidFile: nginx.pidFile,
      reloadTimeout: 1500,
      retryInterval: 200,
      serverId: 'nginx-keep',
      heartbeatInterval: 200,
      watch: 'native',
      pollInterval: 1000,
      logger: memoryLogger(),
    });
    await nginx.start();
    await waitFor('the companion to see nginx', () => companion.status().master === nginx.master());
    await release(1);
    await release(2);
  });
  after(async () => {
    await companion?.close();
    await nginx?.dispose();
    await agent?.close();
    await store?.dispose();
  });

  it('serves a request pinned by query, header or cookie from its retained release', async () => {
    assert.equal((await get(nginx.port, '/page.txt?dpl=r1')).body, 'release 1');
    assert.equal((await get(nginx.port, '/page.txt', { 'x-deployment-id': 'r1' })).body, 'release 1');
    assert.equal((await get(nginx.port, '/page.txt', { cookie: 'a=b; __dpl=r1' })).body, 'release 1');
    const e = await readEpochFile(store.epochFile);
    const r1 = e?.retained?.find((r) => r.release === 'r1');
    assert.ok(r1);
    assert.equal((await get(nginx.port, `/page.txt?dpl=${r1.epoch}`)).body, 'release 1', 'by epoch');
    // the query wins over the header; a cookie never pins a navigation; unknown names get the mounted release
    assert.equal((await get(nginx.port, '/page.txt?dpl=r2', { 'x-deployment-id': 'r1' })).body, 'release 2');
    const nav = { cookie: '__dpl=r1', 'sec-fetch-mode': 'navigate' };
    assert.equal((await get(nginx.port, '/page.txt', nav)).body, 'release 2');
    assert.equal((await get(nginx.port, '/page.txt?dpl=r9')).body, 'release 2');
    assert.equal((await get(nginx.port, '/page.txt?dpl=%22r1')).body, 'release 2');
  });

  it('marks an answer pinned outside the URL (header, cookie) private, its precompressed variant too', async () => {
    // a shared cache keys by the URL: an answer of a retained release chosen by a header or a cookie must
    // not be kept there for requests that name nothing (the middleware marks it so as well)
    const gzip = { 'accept-encoding': 'gzip' };
    for (const headers of [{ 'x-deployment-id': 'r1' }, { cookie: 'a=b; __dpl=r1' }] as Record<string, string>[]) {
      const res = await rawGet(nginx.port, '/page.txt', headers);
      assert.equal(res.body.toString(), 'release 1');
      assert.equal(res.headers['cache-control'], 'private, no-cache', JSON.stringify(headers));
      const zipped = await rawGet(nginx.port, '/app.js', { ...headers, ...gzip });
      assert.equal(zipped.headers['content-encoding'], 'gzip');
      assert.equal(gunzipSync(zipped.body).toString(), appOf(1));
      assert.equal(zipped.headers['cache-control'], 'private, no-cache', `${JSON.stringify(headers)}, gzip`);
    }
    // by the query (part of the URL), or naming the mounted release, nothing, or a release not retained: as nginx sends it
    for (const [path, headers] of [
      ['/page.txt?dpl=r1', {}],
      ['/page.txt', { 'x-deployment-id': 'r2' }],
      ['/page.txt', {}],
      ['/page.txt', { cookie: '__dpl=r9' }],
      ['/page.txt', { cookie: '__dpl=r1', 'sec-fetch-mode': 'navigate' }],
      ['/app.js?dpl=r1', gzip],
    ] as const) {
      assert.equal(
        (await rawGet(nginx.port, path, headers)).headers['cache-control'],
        undefined,
        `${path} ${JSON.stringify(headers)}`,
      );
    }
  });

  it("reports nginx's workers in flight on every retained copy their pins reach", async () => {
    const e = await readEpochFile(store.epochFile);
    const hb = (await readHeartbeats(store.serversDir)).find((h) => h.id === 'nginx-keep');
    for (const r of e?.retained ?? []) assert.ok((hb?.inflight[r.slot] ?? 0) > 0, `slot ${r.slot}`);
  });

  it('a sync reusing a retained copy waits for the worker a pinned download holds, which ends whole', async () => {
    const e = await readEpochFile(store.epochFile);
    const oldest = (e?.retained ?? []).reduce((x, y) => (y.epoch < x.epoch ? y : x));
    const download = heldDownload(nginx.port, `/big.bin?dpl=${oldest.epoch}`);
    await download.started;
    let done = false;
    const next = release(3).then(() => {
      done = true;
    });
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(done, false, 'the copy of the retained release is not reused while its worker lives');
    download.resume();
    const body = await download.done;
    assert.equal(body.length, 64 * MB);
    assert.ok(body.every((b) => b === 65));
    await next;
    assert.equal((await get(nginx.port, '/page.txt?dpl=r2')).body, 'release 2');
  });

  it('a retained release past its --skew-max-age: the companion reloads nginx without it, the others still served', async () => {
    await agent.close();
    agent = await startTestAgent(store, { keep: 3, serverTtlMs: 5000, skewMaxAgeMs: 4000 }, 128 * MB);
    await release(4);
    // release 3 is retained for 4 s more; release 2 (retained under the default) for a day
    assert.equal((await get(nginx.port, '/page.txt?dpl=r3')).body, 'release 3');
    assert.equal((await get(nginx.port, '/page.txt?dpl=r2')).body, 'release 2');
    const e = await readEpochFile(store.epochFile);
    const r3 = e?.retained?.find((r) => r.release === 'r3');
    assert.ok(r3?.until);
    await waitFor(
      'nginx to stop serving pins to release 3',
      async () => (await get(nginx.port, '/page.txt?dpl=r3')).body === 'release 4',
      { timeout: 20_000 },
    );
    assert.ok(Date.now() >= Date.parse(r3.until), 'not before its end');
    assert.equal((await get(nginx.port, '/page.txt?dpl=r2')).body, 'release 2');
    assert.equal(companion.status().served?.epoch, e?.epoch, 'the same epoch, its include written again');
  });

  it('refuses a retained root nginx would misread, and renders none when nothing is retained', () => {
    assert.throws(() => renderInclude(3, 'a', '/srv/a', [{ slot: 'b', root: '/srv/b;evil', names: ['2'] }]), /misread/);
    assert.match(renderInclude(3, 'a', '/srv/a'), /^root \/srv\/a;$/m);
    // nginx compares a pin as sent: an id with + is listed percent-encoded too
    const include = renderInclude(3, 'a', '/srv/a', [{ slot: 'b', root: '/srv/b', names: ['2', 'v1+b'] }]);
    assert.match(include, /= "v1\+b"\)/);
    assert.match(include, /= "v1%2Bb"\)/);
  });
});
