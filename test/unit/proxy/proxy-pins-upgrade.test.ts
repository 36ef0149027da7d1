import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { type MirrorProxy, mirrorProxy } from '../../../middleware/proxy/mirror-proxy.js';
import { publishEpoch } from '../../../src/store/publish.js';
import { memoryLogger } from '../../../testkit/logger.js';
import { type Running, listen } from '../../../testkit/server.js';
import { type TempStore, tempStore } from '../../../testkit/store.js';

/** An upstream that answers with its name, cacheable by anyone, and declines every upgrade (a static server). */
const named = (name: string) =>
  listen((_req, res) => {
    res.setHeader('Cache-Control', 'public, max-age=600');
    res.setHeader('Surrogate-Control', 'max-age=600');
    res.end(name);
  });

/** The head and body of the answer to `request`, sent as is on a connection of its own. */
function exchange(port: number, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.write(request));
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
    socket.on('error', reject);
    socket.setTimeout(5000, () => socket.destroy(new Error('no answer')));
  });
}

/**
 * A request asking for an upgrade goes the proxy's `upgrade` way; an
 * upstream that declines it answers as to any request, and the proxy
 * relays that answer. Pinned by the header or the cookie, it is the
 * retained release's answer under a URL that names none: it must be
 * private as every other pinned answer is, or a shared cache keeps it for
 * everyone.
 */
describe('mirrorProxy: a declined upgrade pinned outside the URL', () => {
  let store: TempStore;
  let upstreams: Running[];
  let proxy: MirrorProxy;
  let front: Running;

  before(async () => {
    store = await tempStore();
    upstreams = [await named('a'), await named('b')];
    await mkdir(store.slots.c, { recursive: true });
    const replacedAt = new Date().toISOString();
    await publishEpoch(store, 3, 'a', {
      keep: 3,
      release: 'v2',
      retained: [
        { slot: 'b', epoch: 2, release: 'v1', replacedAt },
        { slot: 'c', epoch: 1, release: 'v0', replacedAt },
      ],
    });
    proxy = mirrorProxy({
      store: store.root,
      upstreams: { a: upstreams[0]?.url as string, b: upstreams[1]?.url as string },
      serverId: 'proxy-pins-upgrade',
      heartbeatInterval: 100,
      logger: memoryLogger(),
    });
    await proxy.ready;
    front = await listen((req, res) => proxy(req, res, () => res.end('no mount')));
    front.server.on('upgrade', (req, socket, head) => proxy.upgrade(req, socket, head));
  });
  after(async () => {
    await front.close();
    await proxy.close();
    for (const u of upstreams) await u.close();
    await store.dispose();
  });

  for (const [how, field] of [
    ['header', 'X-Deployment-Id: v1'],
    ['cookie', 'Cookie: __dpl=v1'],
  ] as const) {
    it(`is private, pinned by the ${how}`, async () => {
      const text = await exchange(
        front.port,
        `GET /x HTTP/1.1\r\nHost: example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n${field}\r\n\r\n`,
      );
      assert.match(text, /^HTTP\/1\.1 200 /, text);
      assert.ok(text.endsWith('b'), text);
      const head = text.slice(0, text.indexOf('\r\n\r\n')).toLowerCase();
      assert.match(head, /\r\ncache-control: private, no-cache\r\n/, text);
      assert.doesNotMatch(head, /surrogate-control/, text);
      assert.doesNotMatch(head, /public, max-age/, text);
    });
  }

  it('is the upstream’s word, not pinned', async () => {
    const text = await exchange(
      front.port,
      'GET /x HTTP/1.1\r\nHost: example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n',
    );
    assert.ok(text.endsWith('a'), text);
    assert.match(text.toLowerCase(), /\r\ncache-control: public, max-age=600\r\n/, text);
  });
});
