import assert from 'node:assert/strict';
import { type IncomingMessage, type ServerResponse, request } from 'node:http';
import { type Socket, connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import express, { type NextFunction, type Request, type Response } from 'express';
import type { SwapRecord } from '../../src/agent/agent.js';
import { type MirrorProxy, type ProxyOptions, mirrorProxy } from '../../middleware/proxy/mirror-proxy.js';
import { startTestAgent } from '../../testkit/agent.js';
import { memoryLogger } from '../../testkit/app.js';
import { listeningUrl, runCli } from '../../testkit/proc.js';
import { type Running, hangUpAtFirstByte, listen, rawGet } from '../../testkit/server.js';
import { type TempStore, tempStore } from '../../testkit/store.js';
import { waitFor } from '../../testkit/wait.js';

interface Upstream extends Running {
  /** Every request line and headers the upstream parsed, in order. */
  seen: { method: string; url: string; headers: IncomingMessage['headers']; body: string }[];
}

/** An application upstream that records what reaches it; /sse streams events, /ws upgrades, /101 answers 101 unasked. */
async function upstream(name: string): Promise<Upstream> {
  const seen: Upstream['seen'] = [];
  const running = await listen((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      seen.push({
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        body: Buffer.concat(chunks).toString(),
      });
      if (req.url === '/sse') {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        const timer = setInterval(() => res.write(`data: ${name}\n\n`), 20);
        res.on('close', () => clearInterval(timer));
        return;
      }
      if (req.url === '/stall') return; // never answers
      if (req.url === '/101') {
        res.socket?.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json', connection: 'x-echo-token' });
      res.end(
        JSON.stringify({ pool: name, url: req.url, headers: req.headers, body: Buffer.concat(chunks).toString() }),
      );
    });
  });
  running.server.on('upgrade', (req: IncomingMessage, socket: Socket) => {
    socket.on('end', () => socket.end()); // http.Server sockets are half-open: close with the proxy
    if (req.url === '/ws-stall') return; // accepts, never answers the handshake
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
    socket.on('data', (d) => socket.write(`${name}:${d.toString()}`));
  });
  return Object.assign(running, { seen });
}

/** Send raw bytes and collect what comes back until the connection closes or `ms` pass. */
function raw(port: number, text: string | Buffer, ms = 1500): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let got = '';
    socket.on('data', (d) => (got += d.toString()));
    const done = () => resolve(got);
    socket.on('close', done);
    socket.on('error', () => {});
    socket.write(text);
    setTimeout(() => {
      socket.destroy();
      done();
    }, ms);
  });
}

const inflightZero = (proxy: MirrorProxy) =>
  waitFor('every proxied request to be released', () => {
    const { a, b } = proxy.state().inflight;
    return a === 0 && b === 0;
  });

describe('mirrorProxy on the internet: framing, headers, hostile input', () => {
  let store: TempStore;
  let up: Upstream;
  let proxy: MirrorProxy;
  let front: Running;
  let gate: Promise<void> | null = null;
  let gateEntered: ((res: Response) => void) | null = null;

  const start = async (options: Partial<ProxyOptions> = {}) => {
    const p = mirrorProxy({
      store: store.root,
      upstreams: { a: up.url, b: up.url },
      logger: memoryLogger(),
      idleTimeout: 500,
      connectTimeout: 500,
      ...options,
    });
    await p.ready;
    // wired as the README shows: an Express app, the proxy as a middleware, upgrades from the server
    const app = express();
    app.use(async (_req: Request, res: Response, next: NextFunction) => {
      if (gate) {
        gateEntered?.(res);
        await gate;
      }
      next();
    });
    app.use(p);
    const server = await listen(app);
    server.server.on('upgrade', (req, socket, head) => p.upgrade(req, socket, head));
    return { proxy: p, front: server };
  };

  before(async () => {
    store = await tempStore();
    await store.publish(1, 'a');
    up = await upstream('a');
    ({ proxy, front } = await start());
  });
  after(async () => {
    await front.close();
    await proxy.close();
    await up.close();
    await store.dispose();
  });

  it('never lets Connection: content-length smuggle a second request', async () => {
    up.seen.length = 0;
    const smuggled = 'GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n';
    const body = `hello${smuggled}`;
    // GET: a method node:http sends without framing unless told the length
    await raw(
      front.port,
      `GET /upload HTTP/1.1\r\nHost: x\r\nConnection: content-length\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
    );
    await waitFor('the upload to arrive', () => up.seen.some((r) => r.url === '/upload'));
    assert.equal(up.seen.find((r) => r.url === '/upload')?.body, body, 'the body lost its framing');
    assert.ok(!up.seen.some((r) => r.url === '/smuggled'), 'the upstream read a smuggled request');
  });

  it('never lets Connection: transfer-encoding smuggle a second request', async () => {
    up.seen.length = 0;
    const smuggled = 'GET /smuggled2 HTTP/1.1\r\nHost: x\r\n\r\n';
    const chunk = `hi${smuggled}`;
    await raw(
      front.port,
      `POST /upload2 HTTP/1.1\r\nHost: x\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n${chunk.length.toString(16)}\r\n${chunk}\r\n0\r\n\r\n`,
    );
    await waitFor('the upload to arrive', () => up.seen.some((r) => r.url === '/upload2'));
    assert.equal(up.seen.find((r) => r.url === '/upload2')?.body, chunk);
    assert.ok(!up.seen.some((r) => r.url === '/smuggled2'), 'the upstream read a smuggled request');
  });

  it("a client's Connection never removes the proxy's own X-Forwarded-*", async () => {
    const res = await rawGet(front.port, '/fwd', {
      connection: 'x-forwarded-for, x-forwarded-proto, x-forwarded-host',
    });
    const echoed = JSON.parse(res.body.toString()) as { headers: Record<string, string> };
    assert.equal(echoed.headers['x-forwarded-for'], '127.0.0.1');
    assert.equal(echoed.headers['x-forwarded-proto'], 'http');
    assert.ok(echoed.headers['x-forwarded-host']);
  });

  it('Expect: 100-continue takes the same path: hop-by-hop headers stripped, timeouts on', async () => {
    const answer = await raw(
      front.port,
      'POST /expect HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nProxy-Authorization: Basic c2VjcmV0\r\nTE: trailers\r\nConnection: x-hop\r\nX-Hop: 1\r\nContent-Length: 4\r\n\r\nbody',
    );
    assert.match(answer, /200 OK/);
    const got = up.seen.find((r) => r.url === '/expect');
    assert.ok(got);
    for (const h of ['proxy-authorization', 'te', 'x-hop', 'expect']) assert.equal(got.headers[h], undefined, h);
    assert.equal(got.body, 'body');
    const started = Date.now();
    const stalled = await raw(
      front.port,
      'POST /stall HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx',
      5000,
    );
    assert.match(stalled, /504 Gateway Timeout/);
    assert.ok(Date.now() - started < 3000, 'no idle timeout on the Expect path');
    await inflightZero(proxy);
  });

  for (const target of ['http://[::1', 'http://%zz/', '//[', 'http://a b/', 'x:y', '*']) {
    it(`a malformed request target (${target}) is answered, never a crash, on the request and the upgrade path`, async () => {
      const answer = await raw(front.port, `GET ${target} HTTP/1.1\r\nHost: x\r\n\r\n`);
      assert.match(answer, /^HTTP\/1\.1 (200|400|404|502)/);
      const upgrade = await raw(
        front.port,
        `GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`,
      );
      assert.ok(upgrade === '' || /^HTTP\/1\.1 (101|200|400|404|502)/.test(upgrade), upgrade);
      assert.equal((await rawGet(front.port, '/still-up')).status, 200, 'the server died');
      await inflightZero(proxy);
    });
  }

  it('a duplicate Host is refused with 400, as nginx does', async () => {
    const answer = await raw(front.port, 'GET /dup HTTP/1.1\r\nHost: a.test\r\nHost: evil.test\r\n\r\n');
    assert.match(answer, /^HTTP\/1\.1 400/);
    assert.ok(!up.seen.some((r) => r.url === '/dup'));
  });

  it("replaces a client's X-Forwarded-Host and -Proto by default, and keeps them with trustProxy", async () => {
    const spoof = { 'x-forwarded-host': 'evil.test', 'x-forwarded-proto': 'https', 'x-forwarded-for': '6.6.6.6' };
    const res = await rawGet(front.port, '/spoof', { host: 'site.test', ...spoof });
    const h = (JSON.parse(res.body.toString()) as { headers: Record<string, string> }).headers;
    assert.equal(h['x-forwarded-host'], 'site.test');
    assert.equal(h['x-forwarded-proto'], 'http');
    assert.equal(h['x-forwarded-for'], '127.0.0.1');
    const trusting = await start({ trustProxy: true, serverId: 'trusting' });
    try {
      const t = await rawGet(trusting.front.port, '/spoof', { host: 'site.test', ...spoof });
      const th = (JSON.parse(t.body.toString()) as { headers: Record<string, string> }).headers;
      assert.equal(th['x-forwarded-host'], 'evil.test');
      assert.equal(th['x-forwarded-proto'], 'https');
      assert.equal(th['x-forwarded-for'], '6.6.6.6, 127.0.0.1');
    } finally {
      await trusting.front.close();
      await trusting.proxy.close();
    }
  });

  it("an upstream's 101 to a request that did not ask to upgrade is a 502, not a hang", async () => {
    const answer = await raw(front.port, 'GET /101 HTTP/1.1\r\nHost: x\r\n\r\n', 3000);
    assert.match(answer, /^HTTP\/1\.1 502/);
    await inflightZero(proxy);
  });

  it("does not echo the client's Connection tokens, nor the upstream's", async () => {
    const res = await rawGet(front.port, '/echo', { connection: 'keep-alive, x-client-token', 'x-client-token': '1' });
    assert.ok(!String(res.headers.connection ?? '').includes('x-client-token'));
    assert.ok(!String(res.headers.connection ?? '').includes('x-echo-token'));
  });

  it('a client gone during an asynchronous step before the proxy leaks no count', async () => {
    let open: () => void = () => {};
    const entered = new Promise<Response>((resolve) => (gateEntered = resolve));
    gate = new Promise<void>((resolve) => (open = resolve));
    const socket = connect(front.port, '127.0.0.1');
    socket.on('error', () => {});
    socket.write('GET /slow-auth HTTP/1.1\r\nHost: x\r\n\r\n');
    const res = await entered;
    socket.destroy();
    // the proxy must run only once the server has seen the client go
    await waitFor('the server to see the client gone', () => res.destroyed);
    gate = null;
    open();
    await waitFor('the proxy to have run', () => up.seen.length >= 0 && !gate);
    await inflightZero(proxy);
  });

  it('a WebSocket handshake to a stalled upstream times out, and a client that leaves is released', async () => {
    const started = Date.now();
    const answer = await raw(
      front.port,
      'GET /ws-stall HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n',
      5000,
    );
    assert.match(answer, /^HTTP\/1\.1 504/);
    assert.ok(Date.now() - started < 3000);
    await inflightZero(proxy);
    const socket = connect(front.port, '127.0.0.1');
    socket.on('error', () => {});
    socket.write('GET /ws-stall HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n');
    await waitFor('the handshake to be counted', () => proxy.state().inflight.a === 1);
    socket.destroy();
    await inflightZero(proxy);
  });

  it('counts a client that hangs up apart (client_closed), never as an upstream 5xx', async () => {
    await hangUpAtFirstByte(front.port, '/sse');
    await inflightZero(proxy);
    const text = await proxy.registry.metrics();
    assert.match(text, /mirrorswap_proxy_requests_total\{[^}]*status_class="client_closed"[^}]*\} [1-9]/);
    assert.doesNotMatch(text, /mirrorswap_proxy_upstream_errors_total\{[^}]*kind="reset"[^}]*\} [1-9]/);
  });
});

describe('mirrorProxy under slow clients and long-lived responses', () => {
  let store: TempStore;
  let up: Upstream;
  before(async () => {
    store = await tempStore();
    await store.publish(1, 'a');
    up = await upstream('a');
  });
  after(async () => {
    await up.close();
    await store.dispose();
  });

  it('slow uploads cannot exhaust the upstream pool: every phase is bounded', async () => {
    const proxy = mirrorProxy({
      store: store.root,
      upstreams: { a: up.url, b: up.url },
      logger: memoryLogger(),
      serverId: 'slow',
      clientBodyTimeout: 400,
      connectTimeout: 1000,
    });
    await proxy.ready;
    const front = await listen((req, res) => proxy(req, res, () => res.end()));
    const slow: Socket[] = [];
    try {
      // more slow uploads than the pool has sockets (256), each sending one byte of 1000
      for (let i = 0; i < 270; i++) {
        const s = connect(front.port, '127.0.0.1');
        s.on('error', () => {});
        s.write(`POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nx`);
        slow.push(s);
      }
      const started = Date.now();
      const res = await rawGet(front.port, '/healthy');
      assert.ok(Date.now() - started < 3000, `a request to a healthy upstream waited ${Date.now() - started} ms`);
      assert.ok([200, 504].includes(res.status), String(res.status));
      const after408 = await rawGet(front.port, '/healthy-later');
      assert.equal(after408.status, 200);
    } finally {
      for (const s of slow) s.destroy();
      await front.close();
      await proxy.close();
    }
  });

  it('a server-sent-events stream open across a swap is cut after its grace, counted, and the swap drains', async () => {
    const upB = await upstream('b');
    const agent = await startTestAgent(store, { drainTimeoutMs: 3000, serverTtlMs: 2000 });
    const proxy = mirrorProxy({
      store: store.root,
      upstreams: { a: up.url, b: upB.url },
      logger: memoryLogger(),
      serverId: 'sse',
      heartbeatInterval: 100,
      responseDrainTimeout: 300,
    });
    await proxy.ready;
    const front = await listen((req, res) => proxy(req, res, () => res.end()));
    try {
      const from = proxy.state().slot as 'a' | 'b';
      const lines: string[] = [];
      let ended = false;
      const req = request({ host: '127.0.0.1', port: front.port, path: '/sse' }, (res) => {
        res.on('data', (d: Buffer) =>
          lines.push(
            ...d
              .toString()
              .split('\n')
              .filter((l) => l.startsWith('data:')),
          ),
        );
        res.on('close', () => (ended = true));
        res.on('error', () => {});
      });
      req.on('error', () => {});
      req.end();
      await waitFor('the stream to flow', () => lines.length > 2);
      const record = (await (await agent.call('POST', '/v1/sync?wait=1')).json()) as SwapRecord;
      assert.equal(record.result, 'ok', `the stream held the swap: ${JSON.stringify(record.error)}`);
      await waitFor('the stream to be cut', () => ended);
      const pools = new Set(lines.map((l) => l.slice(6)));
      assert.equal(pools.size, 1, 'one stream was served from both copies');
      assert.equal(proxy.state().inflight[from], 0);
      assert.match(await proxy.registry.metrics(), /mirrorswap_proxy_cut_after_swap_total\{kind="response"\} 1/);
    } finally {
      await front.close();
      await proxy.close();
      await agent.close();
      await upB.close();
    }
  });
});

describe('mirrorswap serve --upstream', () => {
  let store: TempStore;
  let up: Upstream;
  before(async () => {
    store = await tempStore();
    await store.fill('a', { 'index.html': 'static' });
    await store.publish(1, 'a');
    up = await upstream('app');
  });
  after(async () => {
    await up.close();
    await store.dispose();
  });

  it('forwards WebSocket upgrades to the app, and survives malformed targets', async () => {
    const proc = runCli(['serve', '--store', store.root, '--listen', '127.0.0.1:0', '--upstream', up.url]);
    try {
      const port = Number(new URL(await listeningUrl(proc)).port);
      const echoed = await new Promise<string>((resolve, reject) => {
        const req = request({
          host: '127.0.0.1',
          port,
          path: '/ws',
          headers: { Connection: 'Upgrade', Upgrade: 'websocket' },
        });
        req.on('upgrade', (_res, socket: Socket) => {
          socket.once('data', (d) => {
            resolve(d.toString());
            socket.destroy();
          });
          socket.write('ping');
        });
        req.on('response', (res) => reject(new Error(`no upgrade: ${res.statusCode}`)));
        req.on('error', reject);
        req.end();
      });
      assert.equal(echoed, 'app:ping');
      for (const target of ['http://[::1', '//[', 'http://a b/']) {
        await raw(port, `GET ${target} HTTP/1.1\r\nHost: x\r\n\r\n`);
        await raw(port, `GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`);
      }
      assert.equal((await rawGet(port, '/index.html')).body.toString(), 'static');
      assert.equal(proc.child.exitCode, null, 'the server exited');
    } finally {
      await proc.kill();
    }
  });
});
