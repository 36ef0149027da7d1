import assert from 'node:assert/strict';
import { type IncomingMessage, type ServerResponse, request } from 'node:http';
import { type Socket, connect } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import type { SwapRecord } from '../../src/agent/agent.js';
import { readHeartbeats } from '../../src/store/heartbeat.js';
import { type MirrorProxy, mirrorProxy } from '../../middleware/proxy/mirror-proxy.js';
import { type TestAgent, startTestAgent } from '../../testkit/agent.js';
import { memoryLogger } from '../../testkit/app.js';
import { seeded } from '../../testkit/seeded.js';
import { type Running, listen } from '../../testkit/server.js';
import { type TempStore, tempStore } from '../../testkit/store.js';
import { waitFor } from '../../testkit/wait.js';

const DURATION_MS = Number(process.env.MIRRORSWAP_PROXY_SOAK_MS ?? 8000);
const GRACE_MS = 400;

/** An upstream pool that signs everything it sends with its name. */
async function pool(name: string): Promise<Running> {
  const running = await listen((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.url?.startsWith('/sse')) {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        const timer = setInterval(() => res.write(`data: ${name}\n\n`), 15);
        res.on('close', () => clearInterval(timer));
        return;
      }
      const body = Buffer.concat(chunks).toString();
      // a body of many lines, each naming the pool: a response mixed across copies shows
      res.end(`${name}:${body}\n`.repeat(200));
    });
  });
  running.server.on('upgrade', (_req: IncomingMessage, socket: Socket) => {
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
    socket.on('data', (d) => socket.write(`${name}:${d.toString()}|`));
    socket.on('end', () => socket.end());
    socket.on('error', () => {});
  });
  return running;
}

/**
 * Swaps back to back through a real agent while clients run every kind of
 * exchange through mirrorProxy: plain requests, uploads with Expect:
 * 100-continue, WebSockets, server-sent events, and clients that hang up at
 * each stage. Nothing may be torn or mixed across copies, every swap must
 * succeed (long-lived exchanges are cut after their grace, well inside the
 * agent's drain timeout), and at the end no count is left.
 */
describe('proxy soak: swaps under every kind of exchange', () => {
  let store: TempStore;
  let poolA: Running;
  let poolB: Running;
  let agent: TestAgent;
  let proxy: MirrorProxy;
  let front: Running;
  const rng = seeded();

  before(async () => {
    store = await tempStore();
    await store.fill('master', { 'index.html': 'x' });
    poolA = await pool('a');
    poolB = await pool('b');
    agent = await startTestAgent(store, { drainTimeoutMs: 4000, serverTtlMs: 2000 });
    proxy = mirrorProxy({
      store: store.root,
      upstreams: { a: poolA.url, b: poolB.url },
      logger: memoryLogger(),
      serverId: 'proxy-soak',
      heartbeatInterval: 100,
      upgradeDrainTimeout: GRACE_MS,
      responseDrainTimeout: GRACE_MS,
      idleTimeout: 2000,
    });
    await proxy.ready;
    front = await listen((req, res) => proxy(req, res, () => res.end('no mount')));
    front.server.on('upgrade', (req, socket, head) => proxy.upgrade(req, socket, head));
  });
  after(async () => {
    await front.close();
    await proxy.close();
    await agent.close();
    await poolA.close();
    await poolB.close();
    await store.dispose();
  });

  it(`holds for ${DURATION_MS} ms`, async () => {
    const problems: string[] = [];
    const counts = { plain: 0, uploads: 0, websockets: 0, sse: 0, aborted: 0, swaps: 0 };
    let running = true;
    const oneCopy = (text: string, what: string) => {
      const pools = new Set([...text.matchAll(/\b([ab]):/g)].map((m) => m[1]));
      if (pools.size > 1) problems.push(`${what} mixed copies ${[...pools].join(', ')}`);
      return pools;
    };
    const exchange = (path: string, method: string, headers: Record<string, string>, body?: string) =>
      new Promise<{ status: number; text: string }>((resolve) => {
        const req = request({ host: '127.0.0.1', port: front.port, path, method, headers, agent: false }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() }));
          res.on('error', () => resolve({ status: -1, text: '' }));
        });
        req.on('error', (err) => resolve({ status: -1, text: err.message }));
        if (headers.expect) req.on('continue', () => req.end(body));
        else req.end(body);
      });

    const plain = async () => {
      while (running) {
        const r = await exchange('/page', 'GET', {});
        counts.plain++;
        if (r.status !== 200) problems.push(`plain: ${r.status} ${r.text.slice(0, 60)}`);
        else oneCopy(r.text, 'a plain response');
      }
    };
    const uploads = async () => {
      while (running) {
        const body = `upload-${rng.int(1e9)}`;
        const r = await exchange(
          '/upload',
          'POST',
          { expect: '100-continue', 'content-length': String(body.length) },
          body,
        );
        counts.uploads++;
        if (r.status !== 200 || !r.text.includes(body)) problems.push(`upload: ${r.status} ${r.text.slice(0, 60)}`);
        else oneCopy(r.text, 'an upload');
      }
    };
    const websockets = async () => {
      while (running) {
        const text = await new Promise<string>((resolve) => {
          const req = request({
            host: '127.0.0.1',
            port: front.port,
            path: '/ws',
            headers: { Connection: 'Upgrade', Upgrade: 'websocket' },
            agent: false,
          });
          req.on('upgrade', (_res, socket: Socket) => {
            let got = '';
            socket.on('data', (d) => (got += d.toString()));
            socket.on('error', () => {});
            let n = 0;
            const timer = setInterval(() => {
              if (n++ < 10 && !socket.destroyed) socket.write(`m${n}`);
              else {
                clearInterval(timer);
                socket.end();
              }
            }, 40);
            socket.on('close', () => {
              clearInterval(timer);
              resolve(got);
            });
          });
          req.on('response', (res) => {
            res.resume();
            resolve('');
          });
          req.on('error', () => resolve(''));
          req.end();
        });
        counts.websockets++;
        oneCopy(text, 'a WebSocket');
      }
    };
    const sse = async () => {
      while (running) {
        const text = await new Promise<string>((resolve) => {
          const req = request({ host: '127.0.0.1', port: front.port, path: '/sse', agent: false }, (res) => {
            let got = '';
            res.on('data', (d: Buffer) => (got += d.toString().replace(/data: ([ab])/g, '$1:')));
            res.on('close', () => resolve(got));
            res.on('error', () => {});
            setTimeout(() => req.destroy(), 300 + rng.int(600)); // most end by the client, some by the grace
          });
          req.on('error', () => resolve(''));
          req.end();
        });
        counts.sse++;
        oneCopy(text, 'an event stream');
      }
    };
    const aborts = async () => {
      for (let i = 0; running; i++) {
        const stage = i % 3;
        await new Promise<void>((resolve) => {
          const socket = connect(front.port, '127.0.0.1', () => {
            const path = stage === 2 ? '/sse' : '/page';
            socket.write(`GET ${path} HTTP/1.1\r\nHost: soak\r\n\r\n`);
            if (stage === 0) socket.destroy(); // before the upstream answers
          });
          socket.once('data', () => socket.destroy()); // at the first byte of the answer or the stream
          socket.on('error', () => {});
          socket.on('close', () => resolve());
        });
        counts.aborted++;
        await delay(5);
      }
    };
    const swaps = async () => {
      while (running) {
        const record = (await (await agent.call('POST', '/v1/sync?wait=1')).json()) as SwapRecord;
        counts.swaps++;
        if (record.result !== 'ok') problems.push(`swap ${record.epoch}: ${record.result} ${record.error?.message}`);
        await delay(100);
      }
    };

    const all = [plain(), plain(), uploads(), websockets(), sse(), sse(), aborts(), swaps()];
    await delay(DURATION_MS);
    running = false;
    await Promise.all(all);
    const context = `${rng.describe()}; ${JSON.stringify(counts)}`;
    assert.deepEqual(problems.slice(0, 10), [], context);
    assert.ok(counts.swaps >= 5, `only ${counts.swaps} swaps: ${context}`);
    for (const kind of ['plain', 'uploads', 'websockets', 'sse', 'aborted'] as const) {
      assert.ok(counts[kind] >= 3, `only ${counts[kind]} ${kind}: ${context}`);
    }
    await waitFor('every count to come back to 0', async () => {
      const hb = (await readHeartbeats(store.serversDir)).find((h) => h.id === 'proxy-soak');
      const { a, b } = proxy.state().inflight;
      return a === 0 && b === 0 && hb?.inflight.a === 0 && hb.inflight.b === 0;
    });
    console.log(`proxy soak: ${context}`);
  });
});
