import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import { type TestAgent, startTestAgent } from '../../../testkit/agent.js';
import { type TestApp, startApp } from '../../../testkit/app.js';
import { rawGet } from '../../../testkit/server.js';
import { type TempStore, tempFilesIn, tempStore } from '../../../testkit/store.js';
import { tarOf } from '../../../testkit/tar.js';
import { waitFor } from '../../../testkit/wait.js';

/** Send raw bytes and return what comes back before the server closes (or `ms` pass). */
function rawExchange(port: number, bytes: string | Buffer, ms = 2000): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    let out = '';
    const done = () => {
      socket.destroy();
      resolve(out);
    };
    socket.on('data', (d) => {
      out += d.toString();
    });
    socket.on('close', done);
    socket.on('error', done);
    socket.setTimeout(ms, done);
    socket.write(bytes);
  });
}

describe('malformed and abusive HTTP against the web server and the agent', () => {
  let store: TempStore;
  let app: TestApp;
  let agent: TestAgent;
  let agentPort: number;

  before(async () => {
    store = await tempStore();
    await store.fill('master', { 'ok.txt': 'fine' });
    agent = await startTestAgent(store, { watchMaster: false }, 1024 * 1024);
    agentPort = Number(new URL(agent.url).port);
    app = await startApp({ store: store.root });
  });
  after(async () => {
    await app.close();
    await agent.close();
    await store.dispose();
  });

  const cases: [string, string | Buffer, RegExp][] = [
    ['garbage instead of a request line', 'NOT HTTP AT ALL\r\n\r\n', /^HTTP\/1\.1 400/],
    [
      'a header of 64 KiB',
      `GET /ok.txt HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(64 * 1024)}\r\n\r\n`,
      /^HTTP\/1\.1 431/,
    ],
    ['a header line without a colon', 'GET /ok.txt HTTP/1.1\r\nHost: x\r\nbroken header\r\n\r\n', /^HTTP\/1\.1 400/],
    ['a bad Content-Length', 'PUT /v1/files/x HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n', /^HTTP\/1\.1 400/],
    [
      'two Content-Lengths',
      'PUT /v1/files/x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab',
      /^HTTP\/1\.1 400/,
    ],
    ['NUL in the request line', Buffer.from('GET /ok\0.txt HTTP/1.1\r\nHost: x\r\n\r\n'), /^HTTP\/1\.1 400/],
    [
      'a header with a control character',
      'GET /ok.txt HTTP/1.1\r\nHost: x\r\nX-Bad: a\u0001b\r\n\r\n',
      /^HTTP\/1\.1 400/,
    ],
  ];
  for (const [name, bytes, expected] of cases) {
    it(`answers ${name} with a 4xx and keeps serving`, async () => {
      for (const port of [app.port, agentPort]) {
        const reply = await rawExchange(port, bytes);
        assert.match(reply, expected, `port ${port}: ${reply.slice(0, 80)}`);
      }
      assert.equal((await rawGet(app.port, '/ok.txt')).body.toString(), 'fine');
      assert.equal((await rawGet(agentPort, '/healthz')).status, 200);
    });
  }

  it('is not held up by a slow client that keeps a write open, and leaves nothing when it gives up', async () => {
    const socket = connect({ host: '127.0.0.1', port: agentPort });
    socket.on('error', () => {});
    socket.write(
      `PUT /v1/files/slow.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${agent.token}\r\nContent-Length: 100000\r\n\r\n`,
    );
    socket.write(Buffer.alloc(1000));
    await waitFor('the staged temp file', async () => (await tempFilesIn(store.master)).length === 1);
    // other writers and a whole swap go through meanwhile
    assert.equal((await agent.call('PUT', '/v1/files/fast.txt', { body: 'fast' })).status, 201);
    const sync = await agent.call('POST', '/v1/sync?wait=1');
    assert.equal(sync.status, 200);
    assert.equal((await rawGet(app.port, '/fast.txt')).body.toString(), 'fast');
    socket.destroy();
    await waitFor('the abandoned body to be removed', async () => (await tempFilesIn(store.master)).length === 0);
    assert.ok(!(await readdir(store.master)).includes('slow.bin'));
  });

  it('lets a slow client hold a tar batch open without holding anyone up, and applies none of it when it gives up', async () => {
    const archive = await tarOf([
      [{ name: 'slowtar/first.txt' }, 'first'],
      [{ name: 'slowtar/second.bin' }, 'x'.repeat(50_000)],
    ]);
    const socket = connect({ host: '127.0.0.1', port: agentPort });
    socket.on('error', () => {});
    socket.write(
      `POST /v1/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${agent.token}\r\nContent-Type: application/x-tar\r\nContent-Length: ${archive.length}\r\n\r\n`,
    );
    socket.write(archive.subarray(0, 4096)); // the first file whole, the second begun
    await waitFor('both files staged', async () => (await tempFilesIn(store.master)).length === 2);
    assert.equal((await agent.call('PUT', '/v1/files/fast2.txt', { body: 'fast' })).status, 201);
    assert.equal((await agent.call('POST', '/v1/sync?wait=1')).status, 200);
    socket.destroy();
    await waitFor('the abandoned batch to be removed', async () => (await tempFilesIn(store.master)).length === 0);
    assert.ok(!(await readdir(store.master)).includes('slowtar'));
  });
});

describe("the agent API's own routing and body reading, against raw clients", () => {
  let store: TempStore;
  let agent: TestAgent;
  let port: number;
  const LIMIT = 4096;

  before(async () => {
    store = await tempStore();
    agent = await startTestAgent(store, { watchMaster: false }, LIMIT);
    port = Number(new URL(agent.url).port);
  });
  after(async () => {
    await agent.close();
    await store.dispose();
  });

  const auth = () => `Authorization: Bearer ${agent.token}\r\n`;
  const request = (line: string, headers = '', body = '') =>
    `${line} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n${headers}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
  const statusOf = (reply: string) => Number(/^HTTP\/1\.1 (\d{3})/.exec(reply)?.[1]);
  const errorOf = (reply: string) =>
    (JSON.parse(reply.slice(reply.indexOf('\r\n\r\n') + 4)) as { error: string }).error;
  const stillServing = async () => {
    assert.equal((await rawGet(port, '/healthz')).status, 200);
    assert.equal((await agent.call('PUT', '/v1/files/after.txt', { body: 'after' })).status, 201);
  };

  it('answers methods it has no rule for with 405 on /v1/files, 404 elsewhere, 401 before either without the token', async () => {
    const cases: [string, boolean, number, string | null][] = [
      ['PROPFIND /v1/files/x.txt', true, 405, 'METHOD_NOT_ALLOWED'],
      ['PATCH /v1/files/x.txt', true, 405, 'METHOD_NOT_ALLOWED'],
      ['GET /v1/files/x.txt', true, 405, 'METHOD_NOT_ALLOWED'],
      ['PROPFIND /v1/files/x.txt', false, 401, 'UNAUTHORIZED'],
      ['OPTIONS /v1/status', true, 404, 'NOT_FOUND'],
      ['DELETE /v1/batch', true, 404, 'NOT_FOUND'],
      ['PUT /v1/sync', true, 404, 'NOT_FOUND'],
      ['TRACE /healthz', false, 404, 'NOT_FOUND'],
      ['PUT /metrics', false, 404, 'NOT_FOUND'],
      // not a method at all: node:http's parser refuses it before any rule sees it
      ['BREW /v1/files/x.txt', true, 400, null],
    ];
    for (const [line, withToken, status, code] of cases) {
      const reply = await rawExchange(port, request(line, withToken ? auth() : '', 'body'));
      assert.equal(statusOf(reply), status, `${line}: ${reply.slice(0, 200)}`);
      if (code) assert.equal(errorOf(reply), code, line);
      if (status === 405) assert.match(reply, /\r\nAllow: PUT, DELETE\r\n/);
      if (status === 401) assert.match(reply, /\r\nWWW-Authenticate: Bearer realm="mirrorswap"\r\n/);
    }
    assert.ok(!(await readdir(store.master)).includes('x.txt'));
    await stillServing();
  });

  it('matches routes on the path as sent: dot segments and encoded slashes are never resolved into /v1/files', async () => {
    const cases: [string, number, string][] = [
      ['PUT /v1/files/../escape.txt', 400, 'BAD_PATH'],
      ['PUT /v1/files/a/..%2F..%2Fescape.txt', 400, 'BAD_PATH'],
      ['PUT /v1/files/%2e%2e%2fescape.txt', 400, 'BAD_PATH'],
      ['PUT /v1/files/a%2Fb%2F..%2F..%2F..%2Fescape.txt', 400, 'BAD_PATH'],
      ['PUT /v1/batch/../files/escape.txt', 404, 'NOT_FOUND'],
      ['PUT /v1%2Ffiles/escape.txt', 404, 'NOT_FOUND'],
      ['PUT /v1/%66iles/escape.txt', 404, 'NOT_FOUND'],
      ['PUT /v1//files/escape.txt', 404, 'NOT_FOUND'],
      ['DELETE /v1/files/..', 400, 'BAD_PATH'],
      ['GET /healthz/..', 404, 'NOT_FOUND'],
    ];
    for (const [line, status, code] of cases) {
      const reply = await rawExchange(port, request(line, auth(), 'payload'));
      assert.equal(statusOf(reply), status, `${line}: ${reply.slice(0, 200)}`);
      assert.equal(errorOf(reply), code, line);
    }
    assert.deepEqual(await tempFilesIn(store.master), []);
    await assert.rejects(readdir(join(store.master, 'escape.txt')), { code: 'ENOENT' });
    await assert.rejects(readdir(join(store.root, 'escape.txt')), { code: 'ENOENT' });
    await stillServing();
  });

  it('refuses a JSON batch over the limit without a Content-Length (chunked) with 413, and one that inflates over it', async () => {
    const body = JSON.stringify({ ops: [{ op: 'put', path: 'big.txt', content: 'x'.repeat(2 * LIMIT) }] });
    const chunks = [body.slice(0, 1000), body.slice(1000)]
      .map((c) => `${Buffer.byteLength(c).toString(16)}\r\n${c}\r\n`)
      .join('');
    const chunked = await rawExchange(
      port,
      `POST /v1/batch HTTP/1.1\r\nHost: x\r\n${auth()}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n${chunks}0\r\n\r\n`,
    );
    assert.equal(statusOf(chunked), 413, chunked.slice(0, 200));
    assert.equal(errorOf(chunked), 'BODY_TOO_LARGE');
    assert.match(chunked, /\r\nConnection: close\r\n/);

    const gzipped = gzipSync(body); // small on the wire, over the limit once inflated
    assert.ok(gzipped.length < LIMIT);
    const inflated = await rawExchange(
      port,
      Buffer.concat([
        Buffer.from(
          `POST /v1/batch HTTP/1.1\r\nHost: x\r\n${auth()}Content-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: ${gzipped.length}\r\n\r\n`,
        ),
        gzipped,
      ]),
    );
    assert.equal(statusOf(inflated), 413, inflated.slice(0, 200));

    const unknownCoding = await rawExchange(
      port,
      request('POST /v1/batch', `${auth()}Content-Type: application/json\r\nContent-Encoding: zip\r\n`, '{}'),
    );
    assert.equal(statusOf(unknownCoding), 415, unknownCoding.slice(0, 200));
    assert.equal(errorOf(unknownCoding), 'BAD_REQUEST');
    assert.ok(!(await readdir(store.master)).includes('big.txt'));
    await stillServing();
  });

  it('stays up and applies nothing when a client hangs up in the middle of a body, whatever it was sending', async () => {
    const starts = [
      `POST /v1/batch HTTP/1.1\r\nHost: x\r\n${auth()}Content-Type: application/json\r\nContent-Length: 3000\r\n\r\n{"ops":[{"op":"put","path":"cut1.txt","content":"`,
      `POST /v1/batch HTTP/1.1\r\nHost: x\r\n${auth()}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n20\r\n{"ops":[{"op":"put","path":"cut2`,
      `PUT /v1/files/cut3.txt HTTP/1.1\r\nHost: x\r\n${auth()}Transfer-Encoding: chunked\r\n\r\n10\r\nhalf a chu`,
      `POST /v1/batch HTTP/1.1\r\nHost: x\r\n${auth()}Content-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: 3000\r\n\r\n`,
    ];
    for (const [i, start] of starts.entries()) {
      const socket = connect({ host: '127.0.0.1', port });
      socket.on('error', () => {});
      await new Promise<void>((resolve) => socket.write(start, () => resolve()));
      if (i === 3)
        await new Promise<void>((resolve) => socket.write(gzipSync('x'.repeat(100)).subarray(0, 10), () => resolve()));
      await new Promise((resolve) => setTimeout(resolve, 50));
      socket.destroy();
      await stillServing();
    }
    await waitFor('no staged file left', async () => (await tempFilesIn(store.master)).length === 0);
    const names = await readdir(store.master);
    for (const name of ['cut1.txt', 'cut2.txt', 'cut3.txt']) assert.ok(!names.includes(name), name);
    // a client that went away is its own doing: never counted (nor logged) as the agent's failure
    const metrics = await (await agent.call('GET', '/metrics')).text();
    assert.doesNotMatch(metrics, /mirrorswap_agent_writes_total\{op="put",result="500"\}/);
  });
});
