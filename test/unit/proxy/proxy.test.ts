import assert from 'node:assert/strict';
import { type IncomingMessage, type Server, type ServerResponse, createServer, request } from 'node:http';
import { spawn } from 'node:child_process';
import { type Socket, createConnection, createServer as createNetServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { after, afterEach, before, describe, it } from 'node:test';
import { type MirrorProxy, mirrorProxy } from '../../../middleware/proxy/mirror-proxy.js';
import type { Heartbeat } from '../../../src/store/heartbeat.js';
import { readHeartbeats } from '../../../src/store/heartbeat.js';
import { startStaticServer } from '../../../src/server/static-server.js';
import { memoryLogger } from '../../../testkit/logger.js';
import {
  type Running,
  acceptQueueLength,
  hangUpAtFirstByte,
  listen,
  rawGet,
  refusedUrl,
} from '../../../testkit/server.js';
import { type TempStore, tempStore } from '../../../testkit/store.js';
import { waitFor } from '../../../testkit/wait.js';

/** An upstream pool: answers with its name, echoes what it received, streams slowly on /slow, upgrades on /ws. */
async function pool(name: string): Promise<Running & { seen: IncomingMessage[]; aborted: () => number }> {
  const seen: IncomingMessage[] = [];
  const state = { aborted: 0 };
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    seen.push(req);
    if (req.url === '/slow') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      let n = 0;
      const timer = setInterval(() => {
        res.write(`${name}-${n}\n`);
        if (++n === 20) {
          clearInterval(timer);
          res.end();
        }
      }, 25);
      req.on('close', () => {
        if (!res.writableFinished) {
          state.aborted++;
          clearInterval(timer);
        }
      });
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json', 'keep-alive': 'timeout=77', 'x-pool': name });
    res.end(JSON.stringify({ pool: name, url: req.url, headers: req.headers }));
  };
  const running = await listen(handler);
  running.server.on('upgrade', (req: IncomingMessage, socket: Socket) => {
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
    socket.on('data', (d) => socket.write(`${name}:${d.toString()}`));
    socket.on('end', () => socket.end()); // the server socket is half-open by default: close with the client
    void req;
  });
  return Object.assign(running, { seen, aborted: () => state.aborted });
}

/** Open an upgraded connection through the proxy and return a function that sends and reads one echo. */
function openUpgrade(port: number): Promise<{ socket: Socket; echo: (text: string) => Promise<string> }> {
  return new Promise((resolve, reject) => {
    const req = request({
      host: '127.0.0.1',
      port,
      path: '/ws',
      headers: { Connection: 'Upgrade', Upgrade: 'websocket' },
    });
    req.on('upgrade', (_res, socket: Socket) => {
      const echo = (text: string) =>
        new Promise<string>((res) => {
          socket.once('data', (d) => res(d.toString()));
          socket.write(text);
        });
      resolve({ socket, echo });
    });
    req.on('response', (res) => reject(new Error(`no upgrade: ${res.statusCode}`)));
    req.on('error', reject);
    req.end();
  });
}

describe('mirrorProxy: slot-routed upstreams', () => {
  let store: TempStore;
  let poolA: Awaited<ReturnType<typeof pool>>;
  let poolB: Awaited<ReturnType<typeof pool>>;
  let proxy: MirrorProxy;
  let front: Running;

  before(async () => {
    store = await tempStore();
    await store.publish(1, 'a');
    poolA = await pool('a');
    poolB = await pool('b');
    proxy = mirrorProxy({
      store: store.root,
      upstreams: { a: poolA.url, b: poolB.url },
      serverId: 'proxy-1',
      pollInterval: 20,
      heartbeatInterval: 100,
      upgradeDrainTimeout: 400,
      logger: memoryLogger(),
    });
    await proxy.ready;
    front = await listen((req, res) => {
      if (req.url === '/metrics') proxy.metrics(req, res);
      else proxy(req, res, () => res.end('no mount'));
    });
    front.server.on('upgrade', (req, socket, head) => proxy.upgrade(req, socket, head));
  });
  after(async () => {
    await front.close();
    await proxy.close();
    await poolA.close();
    await poolB.close();
    await store.dispose();
  });

  const get = async (path: string, headers: Record<string, string> = {}) => {
    const res = await rawGet(front.port, path, headers);
    return { ...res, json: JSON.parse(res.body.toString()) as { pool: string; headers: Record<string, string> } };
  };

  it('forwards to the upstream of the mounted slot, with X-Forwarded-* and the client Host', async () => {
    const res = await get('/page?q=1', { host: 'www.example.test' });
    assert.equal(res.json.pool, 'a');
    assert.equal(res.json.headers['x-forwarded-for'], '127.0.0.1');
    assert.equal(res.json.headers['x-forwarded-proto'], 'http');
    assert.equal(res.json.headers['x-forwarded-host'], 'www.example.test');
    assert.equal(res.json.headers.host, 'www.example.test');
  });

  it('removes hop-by-hop headers both ways, including those the Connection header names', async () => {
    const res = await get('/hop', {
      connection: 'keep-alive, x-secret-hop',
      'x-secret-hop': '1',
      te: 'trailers',
      'proxy-authorization': 'Basic x',
      'x-end-to-end': 'kept',
    });
    for (const h of ['x-secret-hop', 'te', 'proxy-authorization']) assert.equal(res.json.headers[h], undefined, h);
    assert.equal(res.json.headers['x-end-to-end'], 'kept');
    // the upstream's Keep-Alive describes its connection to the proxy, never the client's
    assert.notEqual(res.headers['keep-alive'], 'timeout=77');
    assert.equal(res.headers['x-pool'], 'a');
  });

  it('follows a swap, while a long proxied download keeps its slot and holds the drain', async () => {
    const chunks: string[] = [];
    const download = new Promise<void>((resolve, reject) => {
      request({ host: '127.0.0.1', port: front.port, path: '/slow' }, (res) => {
        res.on('data', (c) => chunks.push(c.toString()));
        res.on('end', resolve);
      })
        .on('error', reject)
        .end();
    });
    await waitFor('the download to start', () => chunks.length > 0);
    await store.publish(2, 'b');
    await waitFor('the switch', () => proxy.state().epoch === 2);
    assert.equal((await get('/after')).json.pool, 'b');
    const hb = (await readHeartbeats(store.serversDir)).find((h) => h.id === 'proxy-1') as Heartbeat;
    assert.equal(hb.kind, 'proxy');
    await waitFor('the heartbeat holding slot a', async () => {
      const h = (await readHeartbeats(store.serversDir)).find((x) => x.id === 'proxy-1');
      return h?.epoch === 2 && h.inflight.a === 1;
    });
    await download;
    assert.ok(
      chunks
        .join('')
        .split('\n')
        .filter(Boolean)
        .every((l) => l.startsWith('a-')),
      'the download switched pools',
    );
    await waitFor('the drain', async () => {
      const h = (await readHeartbeats(store.serversDir)).find((x) => x.id === 'proxy-1');
      return h?.inflight.a === 0;
    });
  });

  it('keeps a WebSocket on its slot across a swap, counted in flight, closed after upgradeDrainTimeout', async () => {
    const ws = await openUpgrade(front.port);
    assert.equal(await ws.echo('hi'), 'b:hi');
    assert.equal(proxy.state().inflight.b, 1);
    await store.publish(3, 'a');
    await waitFor('the switch', () => proxy.state().epoch === 3);
    assert.equal(await ws.echo('still'), 'b:still', 'an open WebSocket moved to the new slot');
    assert.equal(proxy.state().inflight.b, 1);
    await new Promise<void>((resolve) => ws.socket.once('close', () => resolve()));
    await waitFor('the release', () => proxy.state().inflight.b === 0);
    const fresh = await openUpgrade(front.port);
    assert.equal(await fresh.echo('new'), 'a:new');
    fresh.socket.destroy();
  });

  it('aborts the upstream request when the client goes away', async () => {
    const before = poolA.aborted();
    await hangUpAtFirstByte(front.port, '/slow');
    await waitFor('the upstream abort', () => poolA.aborted() > before);
    await waitFor('the release', () => proxy.state().inflight.a === 0);
  });

  it('counts proxied requests by slot, upstream and status class', async () => {
    const text = (await rawGet(front.port, '/metrics')).body.toString();
    assert.match(
      text,
      new RegExp(
        `mirrorswap_proxy_requests_total\\{slot="a",upstream="${new URL(poolA.url).host}",status_class="2xx"\\} \\d+`,
      ),
    );
    assert.match(text, /mirrorswap_server_inflight_requests\{slot="b"\} 0/);
  });
});

describe('mirrorProxy: upstream failures', () => {
  let store: TempStore;
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });
  before(async () => {
    store = await tempStore();
    await store.publish(1, 'a');
  });
  after(() => store.dispose());

  /** A raw TCP upstream that misbehaves as told. */
  async function badUpstream(
    onConnection: (socket: Socket) => void,
  ): Promise<{ url: string; open: () => Promise<number> }> {
    const server = createNetServer(onConnection);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
    const sockets = new Set<Socket>();
    server.on('connection', (s) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    });
    cleanups.push(() => {
      for (const s of sockets) s.destroy();
    });
    return {
      url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      open: () => new Promise((r) => server.getConnections((_e, n) => r(n))),
    };
  }

  async function front(upstream: string, opts: { idleTimeout?: number; connectTimeout?: number } = {}) {
    const proxy = mirrorProxy({
      store: store.root,
      upstreams: { a: upstream, b: upstream },
      logger: memoryLogger(),
      ...opts,
    });
    await proxy.ready;
    const server = await listen((req, res) => proxy(req, res, () => res.end()));
    cleanups.push(
      () => proxy.close(),
      () => server.close(),
    );
    return { proxy, server };
  }

  const errorsOf = async (proxy: MirrorProxy, kind: string) => {
    const m = new RegExp(`mirrorswap_proxy_upstream_errors_total\\{slot="a",kind="${kind}"\\} (\\d+)`).exec(
      await proxy.registry.metrics(),
    );
    return Number(m?.[1] ?? 0);
  };

  it('answers 502 with a fixed body when the upstream refuses connections', async () => {
    const { proxy, server } = await front(await refusedUrl());
    const res = await rawGet(server.port, '/x');
    assert.equal(res.status, 502);
    assert.equal(res.body.toString(), 'Bad Gateway\n');
    assert.equal(await errorsOf(proxy, 'refused'), 1);
    assert.equal(proxy.state().inflight.a, 0);
  });

  it('answers 504 when the upstream accepts but never answers, and closes the upstream socket', async () => {
    const up = await badUpstream((s) => s.resume()); // reads, never answers
    const { proxy, server } = await front(up.url, { idleTimeout: 200 });
    const res = await rawGet(server.port, '/hang');
    assert.equal(res.status, 504);
    assert.equal(res.body.toString(), 'Gateway Timeout\n');
    assert.equal(await errorsOf(proxy, 'idle_timeout'), 1);
    await waitFor('the upstream socket to close', async () => (await up.open()) === 0);
  });

  it('answers 504 when the connection to the upstream cannot be made in time', async () => {
    // a listener that never accepts (its process is stopped) with a full accept queue: SYNs go unanswered
    const child = spawn(
      process.execPath,
      [
        '-e',
        "const s=require('net').createServer().listen({port:0,host:'127.0.0.1',backlog:1},()=>{console.log(s.address().port)})",
      ],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    cleanups.push(() => {
      child.kill('SIGKILL');
    });
    const port = Number(
      await new Promise<string>((resolve) => child.stdout?.once('data', (d: Buffer) => resolve(d.toString()))),
    );
    child.kill('SIGSTOP');
    const fillers: Socket[] = [];
    cleanups.push(() => {
      for (const f of fillers) f.destroy();
    });
    // Fill the stopped listener's accept queue (full past its backlog of 1), checked in the
    // kernel's own count: from then on a new connection's SYN is dropped and its connect times out.
    await waitFor(
      'the upstream accept queue to be full',
      async () => {
        if (((await acceptQueueLength(port)) ?? 0) >= 2) return true;
        fillers.push(createConnection({ host: '127.0.0.1', port }).on('error', () => {}));
        return false;
      },
      { step: 20 },
    );
    const { proxy, server } = await front(`http://127.0.0.1:${port}`, { connectTimeout: 300, idleTimeout: 10_000 });
    const started = Date.now();
    const res = await rawGet(server.port, '/never');
    assert.equal(res.status, 504);
    assert.ok(Date.now() - started < 5000);
    assert.equal(await errorsOf(proxy, 'connect_timeout'), 1);
  });

  it('answers 502 when the upstream resets the connection', async () => {
    const up = await badUpstream((s) => s.once('data', () => s.resetAndDestroy()));
    const { proxy, server } = await front(up.url);
    const res = await rawGet(server.port, '/reset');
    assert.equal(res.status, 502);
    assert.equal(await errorsOf(proxy, 'reset'), 1);
  });

  it('answers 502 when the upstream answers garbage', async () => {
    const up = await badUpstream((s) => s.once('data', () => s.end('THIS IS NOT HTTP\r\n\r\n')));
    const { proxy, server } = await front(up.url);
    const res = await rawGet(server.port, '/garbage');
    assert.equal(res.status, 502);
    assert.ok(!res.body.toString().includes('HPE_'), 'an internal message reached the client');
    assert.equal(await errorsOf(proxy, 'bad_response'), 1);
  });

  it('cuts the client connection when the upstream dies mid-body', async () => {
    const up = await badUpstream((s) =>
      s.once('data', () => {
        s.write('HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial');
        setTimeout(() => s.destroy(), 50);
      }),
    );
    const { proxy, server } = await front(up.url);
    await assert.rejects(rawGet(server.port, '/partial'));
    await waitFor('the release', () => proxy.state().inflight.a === 0);
  });

  it('validates its options', () => {
    assert.throws(
      () => mirrorProxy({ store: store.root, upstreams: { a: 'ftp://x', b: 'http://y' } }),
      /upstreams\.a option must be an http/,
    );
    assert.throws(() => mirrorProxy({ store: store.root } as never), /upstreams option must be an object/);
    assert.throws(
      () => mirrorProxy({ store: store.root, upstreams: { a: 'http://x', b: 'http://y' }, idleTimeout: 0 }),
      /idleTimeout option/,
    );
  });
});

describe('mirrorswap serve with an application upstream', () => {
  let store: TempStore;
  let app: Server;
  let appUrl: string;
  before(async () => {
    store = await tempStore();
    await store.fill('a', { 'static.txt': 'from the mounted copy' });
    await store.publish(1, 'a');
    app = createServer((req, res) => res.end(`app saw ${req.method} ${req.url}`));
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', () => r()));
    appUrl = `http://127.0.0.1:${(app.address() as AddressInfo).port}`;
  });
  after(async () => {
    await new Promise<void>((r) => app.close(() => r()));
    await store.dispose();
  });

  it('serves the mounted copy first and forwards misses and other methods to the app', async () => {
    const web = await startStaticServer(
      '127.0.0.1',
      0,
      { store: store.root, logger: memoryLogger() },
      { upstream: appUrl },
    );
    try {
      const port = Number(new URL(web.url).port);
      assert.equal((await rawGet(port, '/static.txt')).body.toString(), 'from the mounted copy');
      assert.equal((await rawGet(port, '/api/users?id=1')).body.toString(), 'app saw GET /api/users?id=1');
      assert.equal((await rawGet(port, '/static.txt', {}, 'POST', 'x')).body.toString(), 'app saw POST /static.txt');
      assert.equal((await rawGet(port, '/healthz')).status, 200);
    } finally {
      await web.close();
    }
  });
});
