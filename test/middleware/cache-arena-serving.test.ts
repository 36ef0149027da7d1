import assert from 'node:assert/strict';
import { Agent, get } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { publishEpoch } from '../../src/store/publish.js';
import { type TestApp, startApp } from '../../testkit/app.js';
import { seeded } from '../../testkit/seeded.js';
import { type TempStore, tempStore } from '../../testkit/store.js';
import { waitFor } from '../../testkit/wait.js';

const MIB = 1024 * 1024;
const FILES = 1500;

const made = new Map<string, Buffer>();

/** File i's content: its own name over and over, 1 to 16 KB, so a byte from another file shows. */
function contentOf(i: number, version: string): Buffer {
  const key = `${version}:${i}`;
  const known = made.get(key);
  if (known) return known;
  const size = 1024 + ((i * 7919) % (15 * 1024));
  const unit = Buffer.from(`<${version}:${i}>`);
  const out = Buffer.alloc(size);
  for (let at = 0; at < size; at += unit.length) unit.copy(out, at);
  made.set(key, out);
  return out;
}

function fetchBody(port: number, path: string, agent: Agent): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    get({ host: '127.0.0.1', port, path, agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
    }).on('error', reject);
  });
}

function sample(text: string, name: string, labels: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}} `));
  return Number(line?.split(' ').at(-1));
}

describe('serving from a small cache whose arena is reused all the time', () => {
  let store: TempStore;
  let app: TestApp;
  const agent = new Agent({ keepAlive: true, maxSockets: 48 });
  const budget = 2 * MIB;

  before(async () => {
    store = await tempStore();
    const a: Record<string, Buffer> = {};
    const b: Record<string, Buffer> = {};
    for (let i = 0; i < FILES; i++) {
      a[`f${i}.bin`] = contentOf(i, 'a');
      b[`f${i}.bin`] = contentOf(i, 'b');
    }
    await store.fill('a', a);
    await store.fill('b', b);
    await publishEpoch(store, 1, 'a');
    app = await startApp({ store: store.root, cacheMaxBytes: budget, heartbeatInterval: 100 });
  });
  after(async () => {
    agent.destroy();
    await app.close();
    await store.dispose();
  });

  it('answers every request with its own file, byte for byte, across constant reuse and a swap, within the budget', async (t) => {
    const random = seeded();
    t.diagnostic(random.describe());
    let version = 'a';
    const check = async (requests: number) => {
      let next = 0;
      await Promise.all(
        Array.from({ length: 48 }, async () => {
          while (next++ < requests) {
            const i = random.int(FILES);
            const { status, body } = await fetchBody(app.port, `/f${i}.bin`, agent);
            assert.equal(status, 200);
            assert.ok(body.equals(contentOf(i, version)), `f${i}.bin came back wrong; ${random.describe()}`);
          }
        }),
      );
    };
    await check(1500);
    let metrics = await (await fetch(`${app.url}/metrics`)).text();
    const bodies = sample(metrics, 'mirrorswap_server_cache_bytes', 'kind="bodies"');
    const entries = sample(metrics, 'mirrorswap_server_cache_bytes', 'kind="entries"');
    assert.ok(bodies > 0 && bodies + entries <= budget + MIB, `bodies ${bodies} + entries ${entries} over ${budget}`);
    await publishEpoch(store, 2, 'b');
    await waitFor('the switch to b', async () => app.mw.state().epoch === 2);
    version = 'b';
    await check(1500);
    metrics = await (await fetch(`${app.url}/metrics`)).text();
    assert.equal(sample(metrics, 'mirrorswap_server_cache_bytes', 'kind="bodies"'), bodies, 'the arena grew on a swap');
  });
});
