import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { connect } from 'node:net';
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
