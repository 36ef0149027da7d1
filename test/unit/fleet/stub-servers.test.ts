import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { startHostilePeer } from '../../../testkit/hostile-peer.js';
import { tempDirs } from '../../../testkit/store.js';
import { stubCoordinator } from '../../../testkit/stub-coordinator.js';
import { after } from 'node:test';

// Test files run side by side, and a port one closes is soon another's: a client of another test
// still calling it (a scrape, a poll, a pull retried) must not reach this test's handler.
const temp = tempDirs();
after(() => temp.removeAll());

const strays = (token: string) =>
  [
    ['a scrape', 'GET', '/metrics', {}],
    ['a poll', 'GET', '/status', {}],
    ['a files request of another coordinator', 'POST', '/v1/fleet/files?snapshot=s', { authorization: 'Bearer other' }],
    ['a manifest request of another', 'GET', '/v1/fleet/manifest?snapshot=s', { authorization: 'Bearer other' }],
    ['its route with another method', 'POST', '/v1/fleet/manifest', { authorization: `Bearer ${token}` }],
    ['a path that only starts as a route', 'POST', '/v1/fleet/filesx', { authorization: `Bearer ${token}` }],
  ] as const;

describe("a test's stub servers and another test's stray client", () => {
  it('a stub coordinator answers a stray 404 or 401, its handlers never called', async () => {
    let called = 0;
    const c = await stubCoordinator(
      (_req, res) => {
        called++;
        res.end('{}');
      },
      (_req, res) => {
        called++;
        res.end();
      },
    );
    try {
      for (const [what, method, path, headers] of strays(c.token)) {
        const res = await fetch(c.url + path, { method, headers, ...(method === 'POST' ? { body: '' } : {}) });
        assert.ok([401, 404].includes(res.status), `${what}: ${res.status}`);
        assert.equal(called, 0, what);
      }
      const auth = { authorization: `Bearer ${c.token}` };
      assert.equal((await fetch(`${c.url}/v1/fleet/manifest?snapshot=s`, { headers: auth })).status, 200);
      const files = await fetch(`${c.url}/v1/fleet/files?snapshot=s`, { method: 'POST', headers: auth, body: '{}' });
      assert.equal(files.status, 200);
      assert.equal(called, 2, 'its own requests reach the handlers');
    } finally {
      await c.close();
    }
  });

  it('a hostile peer neither counts nor answers a stray', async () => {
    const peer = await startHostilePeer('good', await temp.make('mirrorswap-stub-'), { token: 'this-test-token' });
    try {
      for (const [what, method, path] of strays('x').filter(([, , p]) => !p.startsWith('/v1/fleet/files?')))
        assert.equal((await fetch(peer.url + path, { method })).status, 404, what);
      assert.equal(peer.requests, 0);
    } finally {
      await peer.close();
    }
  });

  it("a hostile peer neither counts nor answers another fleet's files request (another token)", async () => {
    // a host of another test pulling from a peer whose port this one now holds sends the very route,
    // with a bearer token of its own fleet: counted, it breaks the exact counts tests assert
    // (peer-transfer: peerBusy === requests), and it meets the hostile answer meant for this test
    const peer = await startHostilePeer('busy', await temp.make('mirrorswap-stub-'), { token: 'this-test-token' });
    try {
      const res = await fetch(`${peer.url}/v1/fleet/files?snapshot=s`, {
        method: 'POST',
        headers: { authorization: 'Bearer fleet-token-of-another-test', 'content-type': 'application/json' },
        body: JSON.stringify({ paths: ['a.txt'] }),
      });
      await res.arrayBuffer();
      assert.ok([401, 404].includes(res.status), `answered ${res.status}`);
      assert.equal(peer.requests, 0, 'a stray of another fleet was counted');
    } finally {
      await peer.close();
    }
  });
});
