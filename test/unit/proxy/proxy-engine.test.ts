import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { type IncomingMessage, request } from 'node:http';
import { type Server, createServer as createHttpsServer } from 'node:https';
import { type AddressInfo, type Socket, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import type { TLSSocket } from 'node:tls';
import { type MirrorProxy, type ProxyOptions, mirrorProxy } from '../../../middleware/proxy/mirror-proxy.js';
import { streamKey } from '../../../middleware/proxy/forwarder.js';
import { memoryLogger } from '../../../testkit/logger.js';
import { type RawUpstream, rawUpstream } from '../../../testkit/raw-upstream.js';
import { type Running, listen, rawGet } from '../../../testkit/server.js';
import { type TempStore, tempStore } from '../../../testkit/store.js';
import { waitFor } from '../../../testkit/wait.js';

const ok = (body: string, extra = '') =>
  `HTTP/1.1 200 OK\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`;

/**
 * Send raw bytes and collect what comes back until the connection closes or `ms` pass, or, given
 * `until`, as soon as what came back satisfies it (a kept-alive connection is not waited out).
 */
function raw(port: number, text: string, ms = 1500, until?: (got: string) => boolean): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let got = '';
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(got);
    };
    const timer = setTimeout(done, ms);
    socket.on('data', (d) => {
      got += d.toString('latin1');
      if (until?.(got)) done();
    });
    socket.on('close', done);
    socket.on('error', () => {});
    socket.write(text);
  });
}

/** Whether `got` holds a whole answer framed by its Content-Length, as the upstreams here frame theirs. */
function wholeAnswer(got: string): boolean {
  const end = got.indexOf('\r\n\r\n');
  if (end < 0) return false;
  const length = /\r\ncontent-length: *(\d+)\r\n/i.exec(got.slice(0, end + 2));
  return length !== null && got.length - (end + 4) >= Number(length[1]);
}

/** GET through Node's client, which checks framing: `complete` says whether the body arrived whole. */
function framedGet(
  port: number,
  path: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string; complete: boolean }> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, headers, agent: false }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('error', () => {});
      res.on('close', () => resolve({ status: res.statusCode ?? 0, body, complete: res.complete }));
    });
    req.on('error', () => resolve({ status: 0, body: '', complete: false }));
    req.end();
  });
}

describe('mirrorProxy on undici: no smuggling, no poisoned pool, no held sockets', () => {
  let store: TempStore;
  const cleanups: (() => Promise<void> | void)[] = [];
  before(async () => {
    store = await tempStore();
    await store.publish(1, 'a');
  });
  after(() => store.dispose());
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  async function front(upstream: string, options: Partial<ProxyOptions> = {}) {
    const proxy = mirrorProxy({
      store: store.root,
      upstreams: { a: upstream, b: upstream },
      logger: memoryLogger(),
      idleTimeout: 1000,
      connectTimeout: 1000,
      ...options,
    });
    await proxy.ready;
    const server: Running = await listen((req, res) => proxy(req, res, () => res.end()));
    server.server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) =>
      proxy.upgrade(req, socket, head),
    );
    cleanups.push(
      () => proxy.close(),
      () => server.close(),
    );
    return { proxy, server };
  }

  const released = (proxy: MirrorProxy) =>
    waitFor('every exchange to be released', () => {
      const { a, b } = proxy.state().inflight;
      return a === 0 && b === 0;
    });

  it('an upgrade goes on a connection of its own: declined, it never carries another request', async () => {
    const up = await rawUpstream((req) =>
      req.target.startsWith('/ws') ? { now: ok('no upgrade here') } : { now: ok(`page ${req.target}`) },
    );
    cleanups.push(up.close);
    const { proxy, server } = await front(up.url);
    // warm a pooled connection, then upgrades (declined) between ordinary requests
    assert.equal((await rawGet(server.port, '/first')).status, 200);
    for (let i = 0; i < 3; i++) {
      const declined = await raw(
        server.port,
        `GET /ws${i} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`,
      );
      assert.match(declined, /^HTTP\/1\.1 200 OK\r\n/);
      assert.match(declined, /no upgrade here$/);
      assert.equal((await rawGet(server.port, `/after${i}`)).body.toString(), `page /after${i}`);
    }
    await released(proxy);
    for (const upgrade of up.seen.filter((r) => r.target.startsWith('/ws'))) {
      const shared = up.seen.filter((r) => r.conn === upgrade.conn);
      assert.deepEqual(
        shared.map((r) => r.target),
        [upgrade.target],
        'an upgrade shared its connection with another request',
      );
    }
  });

  it('an upgrade request that claims a body is refused: its bytes would be read as another request', async () => {
    const up = await rawUpstream((req) => ({ now: ok(`page ${req.target}`) }));
    cleanups.push(up.close);
    const { proxy, server } = await front(up.url);
    // a request line hidden in a header value: a desynchronised upstream would read it as a request
    const next = 'GET /pub HTTP/1.1\r\nHost: x\r\nX-Hidden: GET /admin/ HTTP/1.1\r\nX-Pad: 1\r\n\r\n';
    for (const framing of [`Content-Length: ${next.indexOf('GET /admin')}`, 'Transfer-Encoding: chunked']) {
      const answer = await raw(
        server.port,
        `GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n${framing}\r\n\r\n`,
        800,
      );
      assert.match(answer, /^HTTP\/1\.1 400 /);
      // the next client's bytes, on whatever connection, must never be read as a body (the upstream has
      // parsed all it was sent, a hidden request included, before its answer is whole)
      await raw(server.port, next, 500, wholeAnswer);
    }
    await released(proxy);
    assert.ok(!up.seen.some((r) => r.target.startsWith('/admin')), 'a hidden request reached the upstream');
    assert.ok(!up.seen.some((r) => r.target === '/ws'), 'an upgrade with a body went upstream');
  });

  it('a body after a HEAD answer (in the same packet or later) never reaches another client', async () => {
    const poison = ok('what the first client uploaded');
    for (const when of ['same packet', 'later'] as const) {
      const up = await rawUpstream((req) => {
        if (req.method !== 'HEAD') return { now: ok(`account of ${req.target}`) };
        const head = 'HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n';
        return when === 'same packet' ? { now: head + poison } : { now: head, later: { after: 30, bytes: poison } };
      });
      const { proxy, server } = await front(up.url);
      for (let i = 0; i < 5; i++) {
        const head = await rawGet(server.port, '/upload', {}, 'HEAD');
        assert.equal(head.status, 200);
        assert.equal(head.body.length, 0);
        assert.equal(head.headers['content-length'], '30');
        const [one, two] = await Promise.all([
          rawGet(server.port, `/account${i}`),
          delay(40).then(() => rawGet(server.port, `/account${i}b`)),
        ]);
        assert.equal(one.body.toString(), `account of /account${i}`, when);
        assert.equal(two.body.toString(), `account of /account${i}b`, when);
      }
      await released(proxy);
      await proxy.close();
      await up.close();
    }
  });

  it('a stray body after a 204 or 304 is never read as the next answer', async () => {
    for (const status of ['204 No Content', '304 Not Modified']) {
      const up = await rawUpstream((req) =>
        req.target === '/empty'
          ? { now: `HTTP/1.1 ${status}\r\n\r\n${ok('stolen')}` }
          : { now: ok(`answer for ${req.target}`) },
      );
      const { proxy, server } = await front(up.url);
      for (let i = 0; i < 5; i++) {
        const empty = await rawGet(server.port, '/empty');
        assert.equal(empty.status, Number(status.slice(0, 3)));
        assert.equal(empty.body.length, 0);
        assert.equal((await rawGet(server.port, `/next${i}`)).body.toString(), `answer for /next${i}`);
      }
      await released(proxy);
      await proxy.close();
      await up.close();
    }
  });

  it('clients that half-close during a WebSocket handshake are released, with their upstream sockets', async () => {
    // the upstream answers 101 only after the clients have sent FIN
    const up = await rawUpstream(() => ({
      later: {
        after: 300,
        bytes: 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n',
      },
      afterwards: 'keep',
    }));
    cleanups.push(up.close);
    const { proxy, server } = await front(up.url, { idleTimeout: 60_000 });
    const clients: Socket[] = [];
    const closed: Promise<unknown>[] = [];
    for (let i = 0; i < 40; i++) {
      const s = connect(server.port, '127.0.0.1');
      s.on('error', () => {});
      closed.push(once(s, 'close'));
      s.write(`GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`);
      s.end();
      clients.push(s);
    }
    cleanups.push(() => {
      for (const s of clients) s.destroy();
    });
    // every client let go (the proxy ends an exchange on its client's FIN), then every upstream socket
    // closed: no 101 can reach the proxy after that, and nothing may be left counted in flight.
    // (Waiting for "released" first passed at once, before the proxy had taken any client in.)
    await Promise.all(closed);
    await waitFor('the upstream sockets to close', () => up.open() === 0);
    await released(proxy);
    assert.deepEqual(proxy.state().inflight, { a: 0, b: 0 });
  });

  it('a declined upgrade is relayed framed: an upstream dying mid-body leaves the client an incomplete answer', async () => {
    const up = await rawUpstream(() => ({
      now: 'HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n',
      later: { after: 50, bytes: '5\r\nworld\r\n' },
      afterwards: 'destroy',
    }));
    cleanups.push(up.close);
    const { proxy, server } = await front(up.url);
    const res = await framedGet(server.port, '/ws', { Connection: 'Upgrade', Upgrade: 'websocket' });
    assert.equal(res.status, 403);
    assert.equal(res.body, 'helloworld');
    assert.equal(res.complete, false, 'a truncated answer looked complete to the client');
    await released(proxy);
  });

  it('a declined upgrade whose upstream stalls mid-body is cut, never given a second status line', async () => {
    const up = await rawUpstream(() => ({
      now: 'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial',
      afterwards: 'stall',
    }));
    cleanups.push(up.close);
    const { proxy, server } = await front(up.url, { idleTimeout: 300 });
    const answer = await raw(
      server.port,
      'GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n',
      3000,
    );
    assert.match(answer, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(answer, /\r\nContent-Length: 100\r\n/i);
    assert.equal(answer.match(/HTTP\/1\.1 /g)?.length, 1, `a second status line: ${answer}`);
    assert.ok(answer.endsWith('partial'));
    await released(proxy);
  });

  it('a complete declined upgrade keeps its body and status', async () => {
    const up = await rawUpstream(() => ({ now: ok('go away', 'X-Why: policy\r\n') }));
    cleanups.push(up.close);
    const { server } = await front(up.url);
    const res = await framedGet(server.port, '/ws', { Connection: 'Upgrade', Upgrade: 'websocket' });
    assert.deepEqual(res, { status: 200, body: 'go away', complete: true });
  });

  it('slow uploads cannot take the upstream from anyone: 300 of them, and a GET is answered at once', async () => {
    const app = await listen((req, res) => {
      req.resume();
      req.on('end', () => res.end(`app ${req.url}`));
    });
    cleanups.push(app.close);
    const { proxy, server } = await front(app.url, { clientBodyTimeout: 5000, connectTimeout: 500 });
    const slow: Socket[] = [];
    cleanups.push(() => {
      for (const s of slow) s.destroy();
    });
    for (let i = 0; i < 300; i++) {
      const s = connect(server.port, '127.0.0.1');
      s.on('error', () => {});
      s.write('POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nx');
      slow.push(s);
    }
    await waitFor('the uploads to be taken', () => proxy.state().inflight.a >= 300, { timeout: 10_000 });
    const started = Date.now();
    const res = await rawGet(server.port, '/healthy');
    assert.equal(res.status, 200);
    assert.equal(res.body.toString(), 'app /healthy');
    assert.ok(Date.now() - started < 1000, `the GET waited ${Date.now() - started} ms`);
    // and the app saw no connection for any of them: small bodies are read whole first
    const opened = await new Promise<number>((r) => app.server.getConnections((_e, n) => r(n)));
    assert.ok(opened <= 2, `${opened} upstream connections held by slow uploads`);
  });

  it('large uploads stream, at most streamedBodiesPerClient at once from one client, the rest 503', async () => {
    const app = await listen((req, res) => {
      let n = 0;
      req.on('data', (d: Buffer) => (n += d.length));
      req.on('end', () => res.end(`got ${n}`));
    });
    cleanups.push(app.close);
    const { proxy, server } = await front(app.url, { requestBufferSize: 1024, streamedBodiesPerClient: 3 });
    const big = 'y'.repeat(2048);
    const held: Socket[] = [];
    cleanups.push(() => {
      for (const s of held) s.destroy();
    });
    for (let i = 0; i < 3; i++) {
      const s = connect(server.port, '127.0.0.1');
      s.on('error', () => {});
      s.write(`POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n${big}`);
      held.push(s);
    }
    await waitFor(
      'three streams upstream',
      () => new Promise<boolean>((r) => app.server.getConnections((_e, n) => r(n >= 3))),
    );
    const fourth = await raw(
      server.port,
      `POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n${big}`,
      1000,
    );
    assert.match(fourth, /^HTTP\/1\.1 503 /);
    // a whole large body still goes through once a slot is free
    for (const s of held) s.destroy();
    await released(proxy);
    const whole = await rawGet(server.port, '/big', {}, 'POST', 'z'.repeat(50_000));
    assert.equal(whole.body.toString(), 'got 50000');
  });

  it('keys a client by its IPv4 address or its IPv6 /64', () => {
    assert.equal(streamKey('192.0.2.7'), '192.0.2.7');
    assert.equal(streamKey('::ffff:192.0.2.7'), '192.0.2.7');
    assert.equal(streamKey('2001:db8::1'), '2001:db8:0:0::/64');
    assert.equal(streamKey('2001:DB8:0:0:ffff::1'), '2001:db8:0:0::/64');
    assert.equal(streamKey('2001:db8:1:2:3:4:5:6'), '2001:db8:1:2::/64');
    assert.equal(streamKey('::1'), '0:0:0:0::/64');
    assert.equal(streamKey('fe80::1%eth0'), 'fe80:0:0:0::/64');
  });

  it('counts streamed bodies per IPv6 /64, not per address: a client cannot multiply its bound', async () => {
    const up = await rawUpstream(() => ({}));
    cleanups.push(up.close);
    const { server } = await front(up.url, { requestBufferSize: 100, streamedBodiesPerClient: 1, trustProxy: true });
    const big = 'y'.repeat(200);
    const held: Socket[] = [];
    cleanups.push(() => {
      for (const s of held) s.destroy();
    });
    const s = connect(server.port, '127.0.0.1');
    s.on('error', () => {});
    s.write(`POST /a HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 2001:db8:1:2::1\r\nContent-Length: 100000\r\n\r\n${big}`);
    held.push(s);
    await waitFor('the first body upstream', () => up.seen.length === 0 && up.open() === 1);
    const same64 = await raw(
      server.port,
      `POST /b HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 2001:db8:1:2:aaaa::2\r\nContent-Length: 100000\r\n\r\n${big}`,
      800,
    );
    assert.match(same64, /^HTTP\/1\.1 503 /);
    const other64 = connect(server.port, '127.0.0.1');
    other64.on('error', () => {});
    other64.write(
      `POST /c HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 2001:db8:1:3::1\r\nContent-Length: 100000\r\n\r\n${big}`,
    );
    held.push(other64);
    await waitFor('a body from another /64 upstream', () => up.open() === 2);
  });

  it('buffered bodies together hold at most requestBufferTotal: past it a body streams, under the per-client bound', async () => {
    const up = await rawUpstream((req) => (req.target === '/hold' ? {} : { now: ok(`got ${req.body.length}`) }));
    cleanups.push(up.close);
    const { proxy, server } = await front(up.url, {
      requestBufferSize: 2048,
      requestBufferTotal: 3000,
      streamedBodiesPerClient: 1,
    });
    const body = 'b'.repeat(1500);
    const held: Socket[] = [];
    cleanups.push(() => {
      for (const s of held) s.destroy();
    });
    // two bodies fill the budget and stay held (the upstream never answers), the third streams
    for (let i = 0; i < 3; i++) {
      const s = connect(server.port, '127.0.0.1');
      s.on('error', () => {});
      s.write(`POST /hold HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
      held.push(s);
      await waitFor('the body to go upstream', () => up.seen.length === i + 1);
    }
    // a fourth would stream too, and the client is at its bound
    const fourth = await raw(
      server.port,
      `POST /hold HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
      1000,
    );
    assert.match(fourth, /^HTTP\/1\.1 503 /);
    assert.equal(up.seen.length, 3);
    // the budget comes back when the exchanges end
    for (const s of held) s.destroy();
    await released(proxy);
    const after_ = await rawGet(server.port, '/after', {}, 'POST', body);
    assert.equal(after_.body.toString(), `got ${body.length}`);
  });

  it('a client that stops reading an answer frees the upstream connection after clientBodyTimeout', async () => {
    const chunk = 'z'.repeat(64 * 1024);
    const app = await listen((_req, res) => {
      res.writeHead(200, { 'content-length': String(chunk.length * 400) });
      const pump = () => {
        while (res.write(chunk)) if (res.writableLength > 1e9) return;
      };
      res.on('drain', pump);
      pump();
    });
    cleanups.push(app.close);
    const { proxy, server } = await front(app.url, { clientBodyTimeout: 400 });
    const s = connect(server.port, '127.0.0.1');
    s.on('error', () => {});
    s.pause(); // reads nothing
    s.write('GET /huge HTTP/1.1\r\nHost: x\r\n\r\n');
    cleanups.push(() => {
      s.destroy();
    });
    await waitFor('the exchange to start', () => proxy.state().inflight.a === 1);
    await waitFor('the stalled exchange to be cut', () => proxy.state().inflight.a === 0, { timeout: 5000 });
    await waitFor(
      'the upstream connection to close',
      () => new Promise<boolean>((r) => app.server.getConnections((_e, n) => r(n === 0))),
    );
  });

  it('relays 103 Early Hints before the answer', async () => {
    const up = await rawUpstream(() => ({
      now: 'HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n',
      later: { after: 30, bytes: ok('page') },
    }));
    cleanups.push(up.close);
    const { server } = await front(up.url);
    const answer = await raw(server.port, 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    assert.match(
      answer,
      /^HTTP\/1\.1 103 Early Hints\r\n[Ll]ink: <\/style\.css>; rel=preload; as=style\r\n\r\nHTTP\/1\.1 200 OK\r\n/,
    );
    assert.ok(answer.endsWith('page'));
  });

  it('relays only Link-bearing 103s, through the header policy, and a hint never changes the final answer', async () => {
    const up = await rawUpstream(() => ({
      now:
        'HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nConnection: X-Private\r\nX-Private: secret\r\n' +
        'Keep-Alive: timeout=9\r\nContent-Length: 5\r\nSet-Cookie: session=stolen\r\nX-Kept: yes\r\n\r\n' +
        'HTTP/1.1 103 Early Hints\r\nX-No-Link: 1\r\n\r\n',
      later: { after: 30, bytes: ok('page') },
    }));
    cleanups.push(up.close);
    const { server } = await front(up.url);
    const answer = await raw(server.port, 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    const hints = answer.split('\r\n\r\n').filter((part) => part.startsWith('HTTP/1.1 103'));
    assert.equal(hints.length, 1, `hints relayed: ${JSON.stringify(answer)}`);
    const hint = hints[0] as string;
    assert.match(hint, /\r\nlink: <\/a\.css>; rel=preload/i);
    assert.match(hint, /\r\nx-kept: yes/i);
    for (const dropped of ['x-private', 'keep-alive', 'content-length', 'set-cookie', 'connection'])
      assert.doesNotMatch(hint, new RegExp(`\r\n${dropped}:`, 'i'), `${dropped} in a hint: ${JSON.stringify(hint)}`);
    assert.match(answer, /\r\n\r\nHTTP\/1\.1 200 OK\r\n/);
    assert.ok(answer.endsWith('page'));
  });

  it('relays a 204 that claims a length as a 204 without one, its stray body dropped', async () => {
    const up = await rawUpstream((req) =>
      req.target === '/204' ? { now: 'HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello' } : {},
    );
    cleanups.push(up.close);
    const { proxy, server } = await front(up.url);
    const answer = await raw(server.port, 'GET /204 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    assert.match(answer, /^HTTP\/1\.1 204 No Content\r\n/);
    assert.match(answer, /\r\nX-A: 1\r\n/i);
    assert.doesNotMatch(answer, /content-length/i);
    assert.ok(answer.endsWith('\r\n\r\n'), JSON.stringify(answer));
    await released(proxy);
  });

  it('pipelined requests on one connection go upstream one at a time, answered in order', async () => {
    let open = 0;
    let most = 0;
    const up = await rawUpstream((req) => {
      open++;
      most = Math.max(most, open);
      const body = `page ${req.target}`;
      setTimeout(() => open--, 2);
      return { later: { after: 2, bytes: ok(body) } };
    });
    cleanups.push(up.close);
    const { proxy, server } = await front(up.url, { idleTimeout: 10_000 });
    const n = 300;
    let pipeline = '';
    for (let i = 0; i < n; i++) pipeline += `GET /p${i} HTTP/1.1\r\nHost: x\r\n\r\n`;
    const s = connect(server.port, '127.0.0.1');
    s.on('error', () => {});
    cleanups.push(() => {
      s.destroy();
    });
    let got = '';
    s.on('data', (d: Buffer) => (got += d.toString('latin1')));
    s.write(pipeline);
    await waitFor('every answer', () => (got.match(/HTTP\/1\.1 200 OK/g)?.length ?? 0) === n, { timeout: 20_000 });
    const order = [...got.matchAll(/page \/p(\d+)/g)].map((m) => Number(m[1]));
    assert.deepEqual(
      order,
      Array.from({ length: n }, (_, i) => i),
    );
    const conns = new Set(up.seen.map((r) => r.conn));
    assert.ok(conns.size <= 2, `${conns.size} upstream connections for one client connection`);
    assert.ok(most <= 1, `${most} upstream requests at once for one client connection`);
    await released(proxy);
  });

  it('an upgrade pipelined behind a request waits for its answer, then is forwarded: nothing throws', async () => {
    const up = await rawUpstream((req) =>
      req.target === '/ws'
        ? {
            now: 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n',
            afterwards: 'stall',
          }
        : { later: { after: 200, bytes: ok('slow') } },
    );
    cleanups.push(up.close);
    const { proxy, server } = await front(up.url);
    const answer = await raw(
      server.port,
      'GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n',
      800,
      (got) => /HTTP\/1\.1 101 [\s\S]*?\r\n\r\n/.test(got), // the upgrade's head: the tunnel then stalls
    );
    assert.match(answer, /^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nslowHTTP\/1\.1 101 Switching Protocols\r\n/);
    // the upgrade went upstream only after the answer before it was out, on a connection of its own
    const ws = up.seen.find((r) => r.target === '/ws');
    const slow = up.seen.find((r) => r.target === '/slow');
    assert.ok(ws && slow && ws.conn !== slow.conn);
    await released(proxy);
    // and a client that leaves while its upgrade waits is released too
    const s = connect(server.port, '127.0.0.1');
    s.on('error', () => {});
    s.write(
      'GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n',
    );
    await delay(50);
    s.destroy();
    await released(proxy);
  });

  it('a declined upgrade to a client that never reads is cut after clientBodyTimeout', async () => {
    const big = 'q'.repeat(8 * 1024 * 1024);
    const up = await rawUpstream(() => ({ now: ok(big), afterwards: 'keep' }));
    cleanups.push(up.close);
    const { proxy, server } = await front(up.url, { clientBodyTimeout: 300, idleTimeout: 60_000 });
    const s = connect(server.port, '127.0.0.1');
    s.on('error', () => {});
    s.pause(); // reads nothing
    s.write('GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n');
    cleanups.push(() => {
      s.destroy();
    });
    await waitFor('the upgrade to be taken', () => proxy.state().inflight.a === 1);
    await waitFor('the stalled declined upgrade to be cut', () => proxy.state().inflight.a === 0, { timeout: 5000 });
    await waitFor('the upstream connection to close', () => up.open() === 0);
  });

  it('an upgraded connection with no byte either way for idleTimeout is closed, both sides', async () => {
    const up = await rawUpstream(() => ({
      now: 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n',
      afterwards: 'stall',
    }));
    cleanups.push(up.close);
    const { proxy, server } = await front(up.url, { idleTimeout: 400 });
    const started = Date.now();
    const answer = await raw(
      server.port,
      'GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n',
      5000,
    );
    assert.match(answer, /^HTTP\/1\.1 101 /);
    const took = Date.now() - started;
    assert.ok(took >= 350 && took < 3000, `closed after ${took} ms`);
    await released(proxy);
    await waitFor('the upstream connection to close', () => up.open() === 0);
  });

  it('forwards a Host with an unbalanced bracket as nginx does, never counted as an upstream error', async () => {
    const up = await rawUpstream((req) => ({ now: ok(`seen ${req.headers.get('host')}`) }));
    cleanups.push(up.close);
    const { proxy, server } = await front(up.url);
    const answer = await raw(server.port, 'GET /b HTTP/1.1\r\nHost: [::1\r\nConnection: close\r\n\r\n');
    assert.match(answer, /^HTTP\/1\.1 200 OK\r\n/);
    assert.ok(answer.endsWith('seen [::1'), answer);
    assert.doesNotMatch(await proxy.registry.metrics(), /^mirrorswap_proxy_upstream_errors_total\{/m);
  });
});

describe('mirrorProxy towards an https upstream', () => {
  let store: TempStore;
  let dir: string;
  let upstream: Server;
  let port: number;
  let ca: string;
  /** The TLS server name each request's connection carried (false: none). */
  const names: (string | false | null)[] = [];
  before(async () => {
    store = await tempStore();
    await store.publish(1, 'a');
    dir = await mkdtemp(join(tmpdir(), 'mirrorswap-tls-'));
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-keyout',
        'up.key',
        '-out',
        'up.crt',
        '-days',
        '2',
        '-subj',
        '/CN=localhost',
        '-addext',
        'subjectAltName=DNS:localhost,IP:127.0.0.1',
      ],
      { cwd: dir, stdio: 'ignore' },
    );
    ca = await readFile(join(dir, 'up.crt'), 'utf8');
    upstream = createHttpsServer({ key: await readFile(join(dir, 'up.key')), cert: ca }, (req, res) => {
      names.push((req.socket as TLSSocket).servername);
      res.end(`tls ${req.headers.host}`);
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()));
    port = (upstream.address() as AddressInfo).port;
  });
  after(async () => {
    upstream.closeAllConnections();
    await new Promise((r) => upstream.close(r));
    await rm(dir, { recursive: true, force: true });
    await store.dispose();
  });

  async function through(target: string, host: string) {
    const proxy = mirrorProxy({
      store: store.root,
      upstreams: { a: target, b: target },
      logger: memoryLogger(),
      upstreamTls: { ca },
    });
    await proxy.ready;
    const server = await listen((req, res) => proxy(req, res, () => res.end()));
    try {
      names.length = 0;
      return await raw(server.port, `GET /t HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
    } finally {
      await server.close();
      await proxy.close();
    }
  }

  it("checks the upstream's certificate against the upstream's name, whatever Host the client sent", async () => {
    const answer = await through(`https://localhost:${port}`, 'evil.example');
    assert.match(answer, /^HTTP\/1\.1 200 OK\r\n/);
    assert.ok(answer.endsWith('tls evil.example'), answer);
    assert.deepEqual(names, ['localhost'], 'the TLS server name sent upstream');
  });

  it('sends no server name to an upstream named by its IP address, and checks the certificate against the address', async () => {
    const answer = await through(`https://127.0.0.1:${port}`, 'localhost');
    assert.match(answer, /^HTTP\/1\.1 200 OK\r\n/);
    assert.deepEqual(names, [false], 'the TLS server name sent upstream');
  });
});

describe('mirrorProxy refuses what nginx refuses, and forwards the target it was given', () => {
  let store: TempStore;
  let up: RawUpstream;
  let proxy: MirrorProxy;
  let server: Running;
  before(async () => {
    store = await tempStore();
    await store.publish(1, 'a');
    up = await rawUpstream((req) => ({ now: ok(`seen ${req.target}`) }));
    proxy = mirrorProxy({ store: store.root, upstreams: { a: up.url, b: up.url }, logger: memoryLogger() });
    await proxy.ready;
    server = await listen((req, res) => proxy(req, res, () => res.end()));
    server.server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) =>
      proxy.upgrade(req, socket, head),
    );
  });
  after(async () => {
    await server.close();
    await proxy.close();
    await up.close();
    await store.dispose();
  });

  const refusals: [string, RegExp][] = [
    ['POST /te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n', /^HTTP\/1\.1 501 /],
    [
      'POST /te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
      /^HTTP\/1\.1 (400|501) /,
    ],
    ['POST /te10 HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', /^HTTP\/1\.1 400 /],
    ['TRACE /trace HTTP/1.1\r\nHost: x\r\n\r\n', /^HTTP\/1\.1 405 /],
    ['GET http://user:pass@host/userinfo HTTP/1.1\r\nHost: x\r\n\r\n', /^HTTP\/1\.1 400 /],
    ['GET http://ho..st/dots HTTP/1.1\r\nHost: x\r\n\r\n', /^HTTP\/1\.1 400 /],
    ['GET http://site.test:0/port HTTP/1.1\r\nHost: x\r\n\r\n', /^HTTP\/1\.1 400 /],
    ['GET http://site.test:65536/port HTTP/1.1\r\nHost: x\r\n\r\n', /^HTTP\/1\.1 400 /],
    ['GET http://site.test:99999999999/port HTTP/1.1\r\nHost: x\r\n\r\n', /^HTTP\/1\.1 400 /],
    ['GET /../x HTTP/1.1\r\nHost: x\r\n\r\n', /^HTTP\/1\.1 400 /],
    ['GET /a/%2e%2e/%2e%2e/x HTTP/1.1\r\nHost: x\r\n\r\n', /^HTTP\/1\.1 400 /],
    ['GET /a%2f..%2f..%2fb HTTP/1.1\r\nHost: x\r\n\r\n', /^HTTP\/1\.1 400 /],
    ['GET /nul%00 HTTP/1.1\r\nHost: x\r\n\r\n', /^HTTP\/1\.1 400 /],
    ['GET /bad%zz HTTP/1.1\r\nHost: x\r\n\r\n', /^HTTP\/1\.1 400 /],
    ['GET /host HTTP/1.1\r\nHost: a/b\r\n\r\n', /^HTTP\/1\.1 400 /],
    ['GET /host HTTP/1.1\r\nHost: \r\n\r\n', /^HTTP\/1\.1 400 /],
    ['GET /v2 HTTP/2.0\r\nHost: x\r\n\r\n', /^HTTP\/1\.1 (400|505) /],
  ];
  for (const [request_, status] of refusals) {
    it(`refuses ${JSON.stringify(request_.split('\r\n')[0])} (${JSON.stringify(request_.split('\r\n').slice(1, 3).join(' '))}), nothing sent upstream`, async () => {
      const before_ = up.seen.length;
      const answer = await raw(server.port, request_, 800);
      assert.match(answer, status);
      assert.equal(up.seen.length, before_, `reached the upstream: ${JSON.stringify(up.seen.at(-1))}`);
      // the same on the upgrade path
      const [line, ...rest] = request_.split('\r\n');
      const asUpgrade = [line, 'Connection: Upgrade', 'Upgrade: websocket', ...rest].join('\r\n');
      const upgradeAnswer = await raw(server.port, asUpgrade, 800);
      assert.ok(
        upgradeAnswer === '' || status.test(upgradeAnswer) || /^HTTP\/1\.1 400 /.test(upgradeAnswer),
        upgradeAnswer,
      );
      assert.equal(up.seen.length, before_);
      assert.deepEqual(proxy.state().inflight, { a: 0, b: 0 });
    });
  }

  it("forwards an absolute-form target's path unchanged, with its authority as Host (RFC 9112 3.2.2)", async () => {
    const answer = await raw(
      server.port,
      'GET http://Site.Test:8080/a/./b/../c?q=%2e HTTP/1.1\r\nHost: other\r\n\r\n',
      1500,
      wholeAnswer,
    );
    assert.match(answer, /seen \/a\/\.\/b\/\.\.\/c\?q=%2e$/);
    const got = up.seen.at(-1);
    assert.equal(got?.target, '/a/./b/../c?q=%2e');
    assert.equal(got?.headers.get('host'), 'Site.Test:8080');
    assert.equal(got?.headers.get('x-forwarded-host'), 'Site.Test:8080');
  });

  it('drops an empty port from an absolute-form authority, keeps a valid one', async () => {
    await raw(server.port, 'GET http://site.test:/e HTTP/1.1\r\nHost: other\r\n\r\n', 500, wholeAnswer);
    assert.equal(up.seen.at(-1)?.target, '/e');
    assert.equal(up.seen.at(-1)?.headers.get('host'), 'site.test');
    await raw(server.port, 'GET http://[::1]:65535/v6 HTTP/1.1\r\nHost: other\r\n\r\n', 500, wholeAnswer);
    assert.equal(up.seen.at(-1)?.target, '/v6');
    assert.equal(up.seen.at(-1)?.headers.get('host'), '[::1]:65535');
  });

  it('forwards an origin-form path byte for byte, as req.url showed it', async () => {
    for (const path of ['//a/../b', '/a/./b/../c', '/x%2Fy', '/%41%42', '/a?../../x', '/q?%zz']) {
      await raw(server.port, `GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`, 500, wholeAnswer);
      assert.equal(up.seen.at(-1)?.target, path);
    }
  });

  it("drops request headers nginx drops (underscores, other characters than letters, digits and '-')", async () => {
    await raw(
      server.port,
      'GET /names HTTP/1.1\r\nHost: x\r\nX_Forwarded_For: 6.6.6.6\r\nX.Real.Ip: 6.6.6.6\r\nX-Kept: 1\r\n\r\n',
      500,
      wholeAnswer,
    );
    const got = up.seen.at(-1);
    assert.equal(got?.target, '/names');
    assert.equal(got?.headers.get('x_forwarded_for'), undefined);
    assert.equal(got?.headers.get('x.real.ip'), undefined);
    assert.equal(got?.headers.get('x-kept'), '1');
    assert.equal(got?.headers.get('x-forwarded-for'), '127.0.0.1');
  });
});
