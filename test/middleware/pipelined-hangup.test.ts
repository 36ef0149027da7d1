import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { createConnection } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { type MirrorProxy, mirrorProxy } from '../../middleware/proxy/mirror-proxy.js';
import { type TestApp, memoryLogger, startApp } from '../../testkit/app.js';
import { type Running, listen } from '../../testkit/server.js';
import { type TempStore, tempStore } from '../../testkit/store.js';
import { waitFor } from '../../testkit/wait.js';

const SMALL = Buffer.alloc(2048, 's'); // cached in the arena
const BIG = Buffer.alloc(300 * 1024, 'b'); // over cacheMaxFileSize: streamed from a descriptor

/** Open descriptors of this process: a stream left open shows here. */
const openFds = () => readdirSync('/proc/self/fd').length;

/**
 * One connection that pipelines `count` requests and never reads: the server
 * answers the first until the socket backs up, and queues the rest, which
 * have no socket of their own yet. Returns a function that hangs it up.
 */
async function pipelineAndStall(port: number, paths: string[], count: number): Promise<() => void> {
  const socket = createConnection({ host: '127.0.0.1', port });
  socket.on('error', () => {});
  await new Promise((resolve) => socket.once('connect', resolve));
  socket.pause();
  let text = '';
  for (let i = 0; i < count; i++) text += `GET ${paths[i % paths.length]} HTTP/1.1\r\nHost: x\r\n\r\n`;
  socket.write(text);
  return () => socket.destroy();
}

function sample(text: string, name: string, labels = ''): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels ? `{${labels}}` : ''} `));
  return Number(line?.split(' ').at(-1) ?? Number.NaN);
}

describe('a client that pipelines requests, reads nothing, and hangs up', () => {
  let store: TempStore;
  let app: TestApp;

  before(async () => {
    store = await tempStore();
    const files: Record<string, Buffer> = {};
    for (let i = 0; i < 10; i++) {
      files[`small${i}.bin`] = SMALL;
      files[`big${i}.bin`] = BIG;
    }
    await store.fill('a', files);
    await store.publish(1, 'a');
    app = await startApp({ store: store.root, heartbeatInterval: 100 });
  });
  after(async () => {
    await app.close();
    await store.dispose();
  });

  for (const kind of ['small', 'big'] as const) {
    it(`leaves no request counted in flight, no body pinned and no descriptor open (${kind} files)`, async () => {
      const paths = Array.from({ length: 10 }, (_, i) => `/${kind}${i}.bin`);
      for (const p of paths) await fetch(`${app.url}${p}`).then((r) => r.arrayBuffer()); // warm the cache
      const fdsBefore = openFds();
      const metrics = async () => (await fetch(`${app.url}/metrics`)).text();
      const served = async () =>
        sample(await metrics(), 'mirrorswap_server_requests_total', 'slot="a",status_class="2xx"');
      const before = await served();
      const hangUp = await pipelineAndStall(app.port, paths, 2000);
      // a positive sign the server took the pipelined requests in (the first ones answered, the rest queued)
      await waitFor('the pipelined requests to be taken in', async () => (await served()) - before >= 100, {
        timeout: 15_000, // 2,000 requests on a loaded machine; a metrics fetch may fail meanwhile, and is tried again
      });
      hangUp();
      await waitFor(
        'every pipelined request to be let go',
        async () => {
          const text = await metrics();
          return (
            sample(text, 'mirrorswap_server_inflight_requests', 'slot="a"') === 0 &&
            sample(text, 'mirrorswap_server_cache_pinned_bytes') === 0
          );
        },
        { timeout: 5000 },
      );
      assert.equal(
        app.mw.state().inflight.a,
        0,
        'requests of a gone client still count as in flight: a drain would wait for them',
      );
      await waitFor('the descriptors of the streams to close', () => openFds() <= fdsBefore + 2, { timeout: 5000 });
    });
  }
});

describe('the proxy, with a client that pipelines requests, reads nothing, and hangs up', () => {
  let store: TempStore;
  let upstream: Running;
  let proxy: MirrorProxy;
  let front: Running;

  before(async () => {
    store = await tempStore();
    await store.publish(1, 'a');
    upstream = await listen((_req, res) => res.end(BIG));
    proxy = mirrorProxy({
      store: store.root,
      upstreams: { a: upstream.url, b: upstream.url },
      heartbeatInterval: 100,
      logger: memoryLogger(),
    });
    await proxy.ready;
    front = await listen((req, res) => proxy(req, res, () => res.end()));
  });
  after(async () => {
    await front.close();
    await proxy.close();
    await upstream.close();
    await store.dispose();
  });

  it('leaves no request counted in flight and no upstream exchange open', async () => {
    const hangUp = await pipelineAndStall(front.port, ['/x'], 500);
    await waitFor('the pipelined requests to be taken in', () => proxy.state().inflight.a >= 10);
    hangUp();
    await waitFor('every pipelined request to be let go', () => proxy.state().inflight.a === 0, { timeout: 5000 });
    await waitFor(
      'the upstream connections to close',
      async () => {
        const n = await new Promise<number>((resolve) => upstream.server.getConnections((_e, c) => resolve(c)));
        return n <= 1;
      },
      { timeout: 5000 },
    );
  });
});
