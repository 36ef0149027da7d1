import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { cp, mkdir, readdir, symlink, utimes, writeFile } from 'node:fs/promises';
import { type IncomingMessage, createServer, request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import express from 'express';
import { pickSeeds } from '../../src/fleet/coordinator/coordinator.js';
import { fleetRouter } from '../../src/fleet/coordinator/fleet-api.js';
import type { MemberRecord } from '../../src/fleet/fleet-keys.js';
import { Snapshots } from '../../src/fleet/coordinator/snapshots.js';
import { PeerServer } from '../../src/fleet/host/peer-serve.js';
import { PullProgress } from '../../src/fleet/host/pull-progress.js';
import { type PeerPull, type PullStats, pullSnapshot } from '../../src/fleet/host/pull.js';
import { memoryLogger } from '../../testkit/logger.js';
import { HOSTILE_MODES, type HostilePeer, startHostilePeer } from '../../testkit/hostile-peer.js';
import { refuseStray } from '../../testkit/stub-coordinator.js';
import { tempDirs } from '../../testkit/store.js';
import { waitFor } from '../../testkit/wait.js';
import { listenUrl } from '../../testkit/server.js';
import { treeOf } from '../../testkit/trees.js';

// Peers share the bytes: a host serves the snapshots it holds to other hosts, and a host pulling
// from a peer checks every file against the coordinator's manifest. A slow or lying peer costs a
// retry, never a wrong byte, never a write outside the slot, never a hung pull.
const temp = tempDirs();
after(() => temp.removeAll());
const TOKEN = `fleet-token-${randomBytes(16).toString('hex')}`;

async function write(root: string, files: Record<string, string | Buffer>) {
  const mtime = new Date('2026-01-02T03:04:05Z');
  for (const [path, content] of Object.entries(files)) {
    await mkdir(join(root, path, '..'), { recursive: true });
    await writeFile(join(root, path), content);
    await utimes(join(root, path), mtime, mtime);
  }
}

/**
 * A coordinator over two slots, counting what it sends, with a snapshot of a
 * small tree and a large file; or, given `files`, of that many files of 10 KB
 * (`f00.html`…, `paths` in order).
 */
async function coordinator(files?: number) {
  const root = await temp.make('mirrorswap-peers-coord-');
  const slots = { a: join(root, 'a'), b: join(root, 'b') };
  await mkdir(slots.a);
  await mkdir(slots.b);
  const paths = Array.from({ length: files ?? 0 }, (_, i) => `f${String(i).padStart(2, '0')}.html`);
  if (files === undefined) {
    await write(slots.a, {
      'index.html': 'home',
      'css/site.css': 'body{}',
      'deep/er/page.html': 'p'.repeat(50_000),
      'big.bin': randomBytes(3 * 1024 * 1024),
      empty: '',
    });
    await symlink('index.html', join(slots.a, 'home.html'));
  } else for (const p of paths) await writeFile(join(slots.a, p), 'x'.repeat(10_000));
  const snapshots = new Snapshots(slots, join(root, 'manifests'));
  const snapshot = await snapshots.take('a');
  const app = express();
  app.use('/v1/fleet', fleetRouter(snapshots, TOKEN, memoryLogger()));
  const server = createServer(app);
  const url = await listenUrl(server);
  return {
    slots,
    snapshots,
    snapshot,
    url,
    paths,
    close: () => {
      server.closeAllConnections();
      return new Promise((r) => server.close(r));
    },
  };
}

/** A host serving peers: a PeerServer on its own listener over two slot roots. */
async function peerHost(roots: { a: string; b: string }, limit = 4, requestTimeoutMs?: number) {
  const log = memoryLogger();
  const peers = new PeerServer({
    token: TOKEN,
    roots,
    limit,
    graceMs: 100,
    log,
    ...(requestTimeoutMs ? { requestTimeoutMs } : {}),
  });
  const server = createServer((req, res) => {
    if (!peers.handle(req, res)) {
      res.statusCode = 404;
      res.end();
    }
  });
  const url = await listenUrl(server);
  return {
    peers,
    url,
    log,
    close: () => {
      server.closeAllConnections();
      return new Promise((r) => server.close(r));
    },
  };
}

/** Peers picked in order, each at most as `avoid` allows; null once none is left. */
function peersIn(urls: string[], over: Partial<PeerPull> = {}): PeerPull & { failures: string[] } {
  const failures: string[] = [];
  return {
    pick: async (avoid) => urls.find((u) => !avoid(u)) ?? null,
    timeoutMs: 400,
    minBytesPerSecond: 64 * 1024,
    maxFailures: 20,
    onFailure: (peer, err) => failures.push(`${peer}: ${err.message}`),
    failures,
    ...over,
  };
}

/**
 * A peer still pulling (`sharing`), picked as the host's finder would: waited
 * out while passed over, never again once failed, and no more once the waits
 * (its own sleeps, and what the pull reports) reach `boundMs`.
 */
function sharingPeer(url: string, boundMs: number, over: Partial<PeerPull> = {}) {
  const state = { waited: 0, reported: 0 };
  const peers = peersIn([url], {
    sharing: () => true,
    waited: (ms) => {
      state.waited += ms;
      state.reported++;
    },
    pick: async (avoid) => {
      for (;;) {
        const why = avoid(url);
        if (state.waited >= boundMs || why === 'failed') return null;
        if (why === null) return url;
        await new Promise((r) => setTimeout(r, 20));
        state.waited += 20;
      }
    },
    ...over,
  });
  return { peers, state };
}

/** Pull the coordinator's snapshot into `into`, whole (no base), taking files from `peers`. */
function pullInto(c: { url: string; snapshot: string }, into: string, peers: PeerPull): Promise<PullStats> {
  return pullSnapshot({
    from: c.url,
    token: TOKEN,
    snapshot: c.snapshot,
    base: null,
    into,
    durable: false,
    timeoutMs: 5000,
    peers,
  });
}

function post(url: string, body: unknown, token: string | null = TOKEN) {
  return new Promise<{ status: number; body: Buffer }>((resolve, reject) => {
    const payload = JSON.stringify(body);
    const req = httpRequest(
      url,
      {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          ...(token ? { authorization: `Bearer ${token}` } : {}),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

describe('a host serving its peers', () => {
  it('serves the files of a snapshot its slot holds, with the fleet token only; 410 for one it does not hold', async () => {
    const c = await coordinator();
    const host = await peerHost(c.slots);
    try {
      host.peers.hold('a', c.snapshot);
      const files = `${host.url}/v1/fleet/files?snapshot=${c.snapshot}`;
      assert.equal((await post(files, { paths: ['index.html'] }, null)).status, 401);
      assert.equal((await post(files, { paths: ['index.html'] }, 'not-the-fleet-token-at-all')).status, 401);
      assert.equal((await post(`${host.url}/v1/fleet/files?snapshot=other`, { paths: ['index.html'] })).status, 410);
      assert.equal((await post(files, { paths: ['../outside'] })).status, 400);
      const ok = await post(files, { paths: ['index.html', 'css/site.css'] });
      assert.equal(ok.status, 200);
      assert.ok(ok.body.includes(Buffer.from('body{}')));
      // a path through a link of the slot reads nothing the link points to: the answer is cut
      const outside = await temp.make('mirrorswap-peers-outside-');
      await writeFile(join(outside, 'secret.txt'), 'not for peers');
      await symlink(outside, join(c.slots.a, 'out'));
      const through = await post(files, { paths: ['out/secret.txt'] }).catch(() => ({
        status: -1,
        body: Buffer.alloc(0),
      }));
      assert.ok(!through.body.includes(Buffer.from('not for peers')), 'nothing outside the slot was sent');
      const link = await post(files, { paths: ['home.html'] }).catch(() => ({ status: -1, body: Buffer.alloc(0) }));
      assert.ok(!link.body.includes(Buffer.from('home')), 'a link itself is never followed');
      assert.equal(host.peers.stats().active, 0);
    } finally {
      await host.close();
      await c.close();
    }
  });

  it('beyond --peer-serve pulls at once answers 503; with 0 it serves none', async () => {
    const c = await coordinator();
    const none = await peerHost(c.slots, 0);
    const one = await peerHost(c.slots, 1);
    try {
      none.peers.hold('a', c.snapshot);
      one.peers.hold('a', c.snapshot);
      const res = await post(`${none.url}/v1/fleet/files?snapshot=${c.snapshot}`, { paths: ['index.html'] });
      assert.equal(res.status, 503);
      assert.match(res.body.toString(), /PEER_BUSY/);
      // one pull held open (its reader does not read), the next is refused
      const held = httpRequest(`${one.url}/v1/fleet/files?snapshot=${c.snapshot}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      });
      held.on('error', () => {});
      held.on('response', (r) => r.pause());
      held.end(JSON.stringify({ paths: Array(40).fill('big.bin') }));
      await waitFor('the first pull to be served', async () => one.peers.stats().active === 1, { timeout: 5000 });
      const busy = await post(`${one.url}/v1/fleet/files?snapshot=${c.snapshot}`, { paths: ['index.html'] });
      assert.equal(busy.status, 503);
      assert.equal(one.peers.stats().busy, 1);
      held.destroy();
    } finally {
      await none.close();
      await one.close();
      await c.close();
    }
  });

  it('a request sent a byte now and then loses its place at the request deadline, to the next peer', async () => {
    const c = await coordinator();
    const one = await peerHost(c.slots, 1, 500);
    const slow = connect(Number(new URL(one.url).port), '127.0.0.1');
    try {
      one.peers.hold('a', c.snapshot);
      slow.on('error', () => {});
      slow.write(
        `POST /v1/fleet/files?snapshot=${c.snapshot} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\n` +
          'Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"paths":[',
      );
      await waitFor('the slow request to hold the one place', () => one.peers.stats().active === 1);
      const drip = setInterval(() => slow.write(' '), 100); // never idle, never done
      try {
        const busy = await post(`${one.url}/v1/fleet/files?snapshot=${c.snapshot}`, { paths: ['index.html'] });
        assert.equal(busy.status, 503, 'the place is held while the deadline runs');
        await waitFor('the slow request to be cut', () => one.peers.stats().active === 0, { timeout: 3000 });
        const served = await post(`${one.url}/v1/fleet/files?snapshot=${c.snapshot}`, { paths: ['index.html'] });
        assert.equal(served.status, 200);
      } finally {
        clearInterval(drip);
      }
    } finally {
      slow.destroy();
      await one.close();
      await c.close();
    }
  });

  it('before its slot is rewritten: new pulls are refused (410) and those under way are cut', async () => {
    const c = await coordinator();
    const host = await peerHost(c.slots);
    try {
      host.peers.hold('a', c.snapshot);
      let response: IncomingMessage | null = null;
      const held = httpRequest(`${host.url}/v1/fleet/files?snapshot=${c.snapshot}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      });
      held.on('error', () => {});
      held.on('response', (r) => {
        r.pause(); // a reader that stopped: the answer waits on it
        r.on('error', () => {});
        response = r;
      });
      held.end(JSON.stringify({ paths: Array(40).fill('big.bin') }));
      await waitFor('the pull to be served', async () => host.peers.stats().active === 1, { timeout: 5000 });
      const started = Date.now();
      await host.peers.release('a');
      assert.ok(Date.now() - started < 5000, 'the release waited no longer than its grace and the cut');
      assert.equal(host.peers.stats().active, 0, 'no pull reads the slot any more');
      assert.equal(host.peers.stats().cut, 1);
      // read on: the answer ends cut, far short of the 40 files asked for
      const r = response as IncomingMessage | null;
      assert.ok(r);
      let got = 0;
      r.on('data', (chunk: Buffer) => {
        got += chunk.length;
      });
      r.resume();
      await new Promise((resolve) => r.once('close', resolve));
      assert.equal(r.complete, false, 'the answer was cut');
      assert.ok(got < 40 * 3 * 1024 * 1024, `${got} bytes`);
      const after = await post(`${host.url}/v1/fleet/files?snapshot=${c.snapshot}`, { paths: ['index.html'] });
      assert.equal(after.status, 410, 'a slot being rewritten serves nobody');
    } finally {
      await host.close();
      await c.close();
    }
  });
});

describe('a pull from peers', () => {
  it('takes the files from a peer that holds the snapshot: the coordinator sends the manifest only', async () => {
    const c = await coordinator();
    const host = await peerHost(c.slots);
    const into = await temp.make('mirrorswap-peers-into-');
    try {
      host.peers.hold('a', c.snapshot);
      const before = c.snapshots.sent();
      const stats = await pullInto(c, into, peersIn([host.url]));
      assert.deepEqual(await treeOf(into), await treeOf(c.slots.a));
      const sent = c.snapshots.sent();
      assert.equal(sent.files - before.files, 0, 'no file came from the coordinator');
      assert.equal(stats.fromCoordinator, sent.manifests - before.manifests, 'the manifest only');
      assert.ok(stats.fromPeers > 3 * 1024 * 1024, `from peers: ${stats.fromPeers}`);
      assert.equal(stats.fromPeers, host.peers.stats().bytes, 'what the peer sent is what was received');
      assert.equal(stats.peerFailures, 0);
    } finally {
      await host.close();
      await c.close();
    }
  });

  for (const mode of HOSTILE_MODES) {
    it(`a peer answering ${mode}: the pull asks another, and every file is the coordinator's`, async () => {
      const c = await coordinator();
      const good = await peerHost(c.slots);
      const bad: HostilePeer = await startHostilePeer(mode, c.slots.a, { token: TOKEN });
      const into = await temp.make('mirrorswap-peers-into-');
      try {
        good.peers.hold('a', c.snapshot);
        const peers = peersIn([bad.url, good.url]);
        const started = Date.now();
        const stats: PullStats = await pullInto(c, into, peers);
        assert.deepEqual(await treeOf(into), await treeOf(c.slots.a), 'the tree is the coordinator snapshot');
        assert.ok(bad.requests >= 1, 'the hostile peer was asked');
        if (mode === 'busy') assert.ok(stats.peerBusy >= 1);
        else assert.equal(stats.peerFailures, 1, peers.failures.join('; '));
        assert.equal(c.snapshots.sent().files, 0, 'the good peer, not the coordinator, sent the files');
        assert.ok(Date.now() - started < 8000, `took ${Date.now() - started} ms`);
        assert.deepEqual(await readdir(join(into, '.mirrorswap-tmp')).catch(() => []), [], 'no temp file left');
      } finally {
        await bad.close();
        await good.close();
        await c.close();
      }
    });
  }

  it('a peer answering none of the files again and again costs the pull its wait for peers, then the coordinator', async () => {
    const c = await coordinator();
    const bad: HostilePeer = await startHostilePeer('empty', c.slots.a, { token: TOKEN });
    const into = await temp.make('mirrorswap-peers-into-');
    try {
      // a pick keeping a bound over the whole pull, as the host's finder does: its own sleeps and
      // the answers that held none of the files both count
      const BOUND_MS = 1500;
      const { peers, state } = sharingPeer(bad.url, BOUND_MS);
      const started = Date.now();
      const stats = await pullInto(c, into, peers);
      assert.deepEqual(await treeOf(into), await treeOf(c.slots.a));
      assert.ok(bad.requests >= 3, `asked ${bad.requests} times`);
      assert.equal(state.reported, bad.requests, 'every empty answer was counted as waiting');
      assert.equal(stats.peerBusy, bad.requests);
      assert.equal(stats.peerFailures, 0);
      assert.ok(c.snapshots.sent().files > 0, 'the coordinator sent the files');
      assert.ok(Date.now() - started < BOUND_MS + 3000, `took ${Date.now() - started} ms`);
    } finally {
      await bad.close();
      await c.close();
    }
  });

  it('a peer still pulling that sends a file an answer, each as late as it may: bounded by the wait for peers', async () => {
    const c = await coordinator(20);
    // 250 ms late for its head, and as late again for its one frame, inside a 400 ms silence bound:
    // 20 files would take 10 s, one an answer
    const bad: HostilePeer = await startHostilePeer('one-by-one', c.slots.a, { token: TOKEN, delayMs: 250 });
    const into = await temp.make('mirrorswap-peers-into-');
    try {
      const BOUND_MS = 1000;
      const { peers } = sharingPeer(bad.url, BOUND_MS, { timeoutMs: 400, minBytesPerSecond: 1024 * 1024 });
      const started = Date.now();
      await pullInto(c, into, peers);
      assert.deepEqual(await treeOf(into), await treeOf(c.slots.a));
      // each answer costs about 500 ms beyond its bytes' pace: the 1 s bound is spent in two or three
      assert.ok(bad.requests <= 4, `asked ${bad.requests} times`);
      assert.ok(c.snapshots.sent().files > 0, 'the coordinator sent the rest');
      assert.ok(Date.now() - started < BOUND_MS + 2000, `took ${Date.now() - started} ms`);
    } finally {
      await bad.close();
      await c.close();
    }
  });

  it('a peer still pulling that answers 410 slowly is charged its time: bounded by the wait for peers', async () => {
    const c = await coordinator(20);
    // 410 at once, then its error body a byte every 100 ms: each answer takes the whole timeout
    let requests = 0;
    const drips = new Set<NodeJS.Timeout>();
    const gone = createServer((req, res) => {
      req.resume();
      // only the host's files requests: a stray client of another test on this port counts for nothing
      if (req.method !== 'POST' || !req.url?.startsWith(`/v1/fleet/files?snapshot=${c.snapshot}`)) {
        refuseStray(req, res);
        return;
      }
      requests++;
      res.writeHead(410, { 'content-type': 'application/json' });
      const drip = setInterval(() => res.write('x'), 100);
      drips.add(drip);
      res.on('close', () => clearInterval(drip));
    });
    const url = await listenUrl(gone);
    const into = await temp.make('mirrorswap-peers-into-');
    try {
      const BOUND_MS = 1000;
      const { peers } = sharingPeer(url, BOUND_MS, { timeoutMs: 1000 });
      const started = Date.now();
      await pullInto(c, into, peers);
      assert.deepEqual(await treeOf(into), await treeOf(c.slots.a));
      // one answer spends the bound; uncharged, each 1 s answer would add only the picker's sleeps
      assert.ok(Date.now() - started < BOUND_MS + 2000, `took ${Date.now() - started} ms, ${requests} answers`);
      assert.ok(requests <= 2, `asked ${requests} times`);
    } finally {
      for (const d of drips) clearInterval(d);
      gone.closeAllConnections();
      await new Promise((r) => gone.close(r));
      await c.close();
    }
  });

  it('every peer lying or failing: after the bound of failures the coordinator sends the rest', async () => {
    const c = await coordinator();
    const bad = await Promise.all(
      (['damaged', 'other-path', 'hang'] as const).map((mode) => startHostilePeer(mode, c.slots.a, { token: TOKEN })),
    );
    const into = await temp.make('mirrorswap-peers-into-');
    try {
      const peers = peersIn(
        bad.map((b) => b.url),
        { maxFailures: 3 },
      );
      const stats = await pullInto(c, into, peers);
      assert.deepEqual(await treeOf(into), await treeOf(c.slots.a));
      assert.equal(stats.peerFailures, 3, peers.failures.join('; '));
      assert.ok(c.snapshots.sent().files > 3 * 1024 * 1024, 'the coordinator sent the files');
    } finally {
      for (const b of bad) await b.close();
      await c.close();
    }
  });

  it('no peer ever holds it: the wait ends and the coordinator sends the files', async () => {
    const c = await coordinator();
    const into = await temp.make('mirrorswap-peers-into-');
    try {
      const stats = await pullInto(c, into, peersIn([]));
      assert.deepEqual(await treeOf(into), await treeOf(c.slots.a));
      assert.equal(stats.fromPeers, 0);
    } finally {
      await c.close();
    }
  });

  it('a peer holding another tree under the same snapshot id lands nothing of it', async () => {
    const c = await coordinator();
    const otherRoot = await temp.make('mirrorswap-peers-other-');
    // the same paths and sizes, other bytes
    await write(otherRoot, {
      'index.html': 'evil',
      'css/site.css': 'evil{}',
      'deep/er/page.html': 'e'.repeat(50_000),
      'big.bin': randomBytes(3 * 1024 * 1024),
      empty: '',
    });
    const liar = await peerHost({ a: otherRoot, b: otherRoot });
    const into = await temp.make('mirrorswap-peers-into-');
    try {
      liar.peers.hold('a', c.snapshot);
      const peers = peersIn([liar.url]);
      const started = Date.now();
      await pullInto(c, into, peers);
      assert.deepEqual(await treeOf(into), await treeOf(c.slots.a));
      assert.match(peers.failures.join('; '), /sent big\.bin with other content than the coordinator's manifest names/);
      // one failed answer, then the coordinator: no wait on the way (the bound is loose: a loaded machine)
      assert.ok(Date.now() - started < 8000, `took ${Date.now() - started} ms`);
    } finally {
      await liar.close();
      await c.close();
    }
  });
});

describe('a host serving a snapshot it is still pulling', () => {
  /** A peer host whose slot a holds the coordinator's tree but is "being pulled": every file pending in `progress`. */
  async function sharingHost(c: Awaited<ReturnType<typeof coordinator>>) {
    const roots = {
      a: await temp.make('mirrorswap-peers-sharing-a-'),
      b: await temp.make('mirrorswap-peers-sharing-b-'),
    };
    await cp(c.slots.a, roots.a, { recursive: true, preserveTimestamps: true, verbatimSymlinks: true });
    const host = await peerHost(roots);
    const progress = new PullProgress();
    const files = ['big.bin', 'css/site.css', 'deep/er/page.html', 'empty', 'index.html'];
    progress.begin(files);
    host.peers.share('a', c.snapshot, progress);
    return { host, roots, progress, files };
  }

  it('serves each file once placed, never before: a file not yet placed is waited for, not read', async () => {
    const c = await coordinator();
    const { host, roots, progress, files } = await sharingHost(c);
    const into = await temp.make('mirrorswap-peers-into-');
    try {
      // a pending file holds what the slot had before: whatever is there must not be sent yet
      await writeFile(join(roots.a, 'index.html'), 'an older release');
      let done = false;
      const pulled = pullInto(c, into, peersIn([host.url], { timeoutMs: 3000, sharing: () => true })).finally(() => {
        done = true;
      });
      await waitFor('the peer pull to be served', () => host.peers.stats().active === 1, { timeout: 5000 });
      for (const path of files.filter((p) => p !== 'index.html')) {
        await new Promise((r) => setTimeout(r, 50));
        progress.placed(path);
      }
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(done, false, 'the pull waits for the file not yet placed');
      // the pull places the right bytes, then says so
      await write(roots.a, { 'index.html': 'home' });
      progress.placed('index.html');
      const stats = await pulled;
      assert.deepEqual(await treeOf(into), await treeOf(c.slots.a));
      assert.equal(stats.peerFailures, 0, 'nothing the peer sent was refused');
      assert.ok(stats.fromPeers > 3 * 1024 * 1024, `from peers: ${stats.fromPeers}`);
      assert.equal(c.snapshots.sent().files, 0, 'no file came from the coordinator');
    } finally {
      await host.close();
      await c.close();
    }
  });

  it("a file not placed within the peer's wait ends the answer after whole frames: the peer asks again for the rest", async () => {
    const c = await coordinator();
    const { host, roots, progress, files } = await sharingHost(c);
    const into = await temp.make('mirrorswap-peers-into-');
    try {
      await writeFile(join(roots.a, 'index.html'), 'an older release');
      for (const path of files.filter((p) => p !== 'index.html')) progress.placed(path);
      // its silence bound 600 ms: a file is waited for 300 ms, then the answer ends there
      const { peers } = sharingPeer(host.url, Number.POSITIVE_INFINITY, { timeoutMs: 600 });
      const pulled = pullInto(c, into, peers);
      // the first answer ends after the four files placed, the second holds none: a third is asked for
      await waitFor('a third answer to be asked for', () => host.peers.stats().pulls >= 3, { timeout: 5000 });
      await write(roots.a, { 'index.html': 'home' });
      progress.placed('index.html');
      const stats = await pulled;
      assert.deepEqual(await treeOf(into), await treeOf(c.slots.a));
      assert.equal(stats.peerFailures, 0, peers.failures.join('; '));
      assert.ok(stats.peerBusy >= 1, 'an answer held none of the files yet');
      assert.equal(c.snapshots.sent().files, 0, 'no file came from the coordinator');
    } finally {
      await host.close();
      await c.close();
    }
  });

  it('an honest upstream placing files slower than the pace bound fails nobody: its waits count apart', async () => {
    // 20 files of 10 KB placed one every 150 ms: 65 KB/s, far under the 1 MiB/s a peer must keep up
    const c = await coordinator(20);
    const { slots, snapshots, snapshot, url, paths } = c;
    const upstream = await peerHost(slots);
    const progress = new PullProgress();
    progress.begin(paths);
    upstream.peers.share('a', snapshot, progress);
    let k = 0;
    const tick = setInterval(() => {
      if (k < paths.length) progress.placed(paths[k++] as string);
    }, 150);
    const into = await temp.make('mirrorswap-peers-into-');
    try {
      const { peers, state } = sharingPeer(upstream.url, Number.POSITIVE_INFINITY, {
        timeoutMs: 400,
        minBytesPerSecond: 1024 * 1024,
      });
      const stats = await pullSnapshot({
        from: url,
        token: TOKEN,
        snapshot,
        base: null,
        into,
        durable: false,
        timeoutMs: 5000,
        peers,
      });
      assert.deepEqual(await treeOf(into), await treeOf(slots.a));
      assert.equal(stats.peerFailures, 0, peers.failures.join('; '));
      assert.equal(snapshots.sent().files, 0, 'every file came from the upstream');
      assert.ok(state.waited > 1000, `the waits for its files were counted: ${state.waited} ms`);
    } finally {
      clearInterval(tick);
      await upstream.close();
      await c.close();
    }
  });

  it('a pull that fails cuts the answers waiting on it: the peer fetches the rest elsewhere, every file right', async () => {
    const c = await coordinator();
    const { host, roots, progress } = await sharingHost(c);
    const into = await temp.make('mirrorswap-peers-into-');
    try {
      await writeFile(join(roots.a, 'index.html'), 'an older release');
      const peers = peersIn([host.url], { timeoutMs: 3000, sharing: () => true });
      const pulled = pullInto(c, into, peers);
      await waitFor('the peer pull to be served', () => host.peers.stats().active === 1, { timeout: 5000 });
      progress.placed('big.bin');
      await new Promise((r) => setTimeout(r, 100));
      progress.fail(new Error('the coordinator went away'));
      host.peers.unshare('a');
      const stats = await pulled;
      assert.deepEqual(await treeOf(into), await treeOf(c.slots.a));
      assert.equal(stats.peerFailures, 1, peers.failures.join('; '));
      assert.ok(c.snapshots.sent().files > 0, 'the rest came from the coordinator');
      // no longer shared: a new pull of it is told the host does not hold it
      assert.equal((await post(`${host.url}/v1/fleet/files?snapshot=${c.snapshot}`, { paths: ['empty'] })).status, 410);
    } finally {
      await host.close();
      await c.close();
    }
  });

  it('a peer that hangs up while its answer waits leaves no wait behind; the place is freed', async () => {
    const c = await coordinator();
    const { host, progress } = await sharingHost(c);
    try {
      const req = httpRequest(`${host.url}/v1/fleet/files?snapshot=${c.snapshot}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      });
      req.on('error', () => {});
      const head = new Promise<IncomingMessage>((resolve) => req.on('response', resolve));
      req.end(JSON.stringify({ paths: ['index.html'] }));
      const res = await head;
      assert.equal(res.statusCode, 200, 'the head comes at once, before the file is there');
      assert.equal(host.peers.stats().active, 1);
      req.destroy();
      await waitFor('the place to be freed', () => host.peers.stats().active === 0, { timeout: 5000 });
      // the file placed later wakes nobody, and a new request is served at once
      progress.placed('index.html');
      const again = await post(`${host.url}/v1/fleet/files?snapshot=${c.snapshot}`, { paths: ['index.html'] });
      assert.equal(again.status, 200);
      assert.ok(again.body.includes(Buffer.from('home')));
    } finally {
      await host.close();
      await c.close();
    }
  });

  it('a real pull shares as it goes: a second host pulls every file from the first while it pulls', async () => {
    const c = await coordinator();
    const roots = { a: await temp.make('mirrorswap-peers-first-a-'), b: await temp.make('mirrorswap-peers-first-b-') };
    const first = await peerHost(roots);
    const into = await temp.make('mirrorswap-peers-into-');
    try {
      const progress = new PullProgress();
      let sharing!: () => void;
      const shared = new Promise<void>((r) => {
        sharing = r;
      });
      const firstPull = pullSnapshot({
        from: c.url,
        token: TOKEN,
        snapshot: c.snapshot,
        base: null,
        into: roots.a,
        durable: false,
        timeoutMs: 5000,
        progress,
        onSource: async () => {
          first.peers.share('a', c.snapshot, progress);
          sharing();
        },
      }).then((stats) => {
        progress.finish();
        first.peers.hold('a', c.snapshot);
        return stats;
      });
      await shared;
      const second = await pullInto(c, into, peersIn([first.url], { timeoutMs: 3000, sharing: () => true }));
      await firstPull;
      assert.deepEqual(await treeOf(roots.a), await treeOf(c.slots.a));
      assert.deepEqual(await treeOf(into), await treeOf(c.slots.a));
      assert.equal(second.peerFailures, 0);
      assert.ok(second.fromPeers > 3 * 1024 * 1024, `from peers: ${second.fromPeers}`);
    } finally {
      await first.close();
      await c.close();
    }
  });
});

describe('the seeds of a swap', () => {
  const member = (host: string, peer: string | null): MemberRecord => ({
    host,
    url: null,
    peer,
    epoch: 1,
    mounted: 'a',
    slots: { a: null, b: null },
    ready: true,
    lastError: null,
    at: '',
  });
  const live = Array.from({ length: 10 }, (_, i) => member(`h${i}`, i % 3 === 0 ? null : `http://10.0.0.${i}:7071`));

  it('are the first members that serve peers in an order of the snapshot id: others each swap', () => {
    const one = pickSeeds(live, 'snapshot-1', 2);
    assert.equal(one?.length, 2);
    for (const h of one ?? []) assert.ok(live.find((m) => m.host === h)?.peer, `${h} serves peers`);
    assert.deepEqual(pickSeeds([...live].reverse(), 'snapshot-1', 2), one, 'whatever the order members are read in');
    const seen = new Set<string>();
    for (let i = 0; i < 40; i++) for (const h of pickSeeds(live, `snapshot-${i}`, 2) ?? []) seen.add(h);
    assert.ok(seen.size >= 5, `the seeds move from swap to swap: ${[...seen].join(', ')}`);
  });

  it('are none when peers would not help: 0 asked, no member serves, or every member would be one', () => {
    assert.equal(pickSeeds(live, 's', 0), undefined);
    assert.equal(
      pickSeeds(
        live.map((m) => ({ ...m, peer: null })),
        's',
        2,
      ),
      undefined,
    );
    assert.equal(pickSeeds(live.slice(1, 3), 's', 2), undefined);
    assert.deepEqual(pickSeeds(live.slice(0, 3), 's', 2)?.length, 2);
  });
});
