import { contentHash, strongEtag } from '../../src/store/content-index.js';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, rm, stat, symlink, truncate, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import express, { type NextFunction, type Request, type Response } from 'express';
import { Agent, type SwapRecord } from '../../src/agent/agent.js';
import { mirrorStatic, type MirrorStatic } from '../../middleware/static/mirror-static.js';
import { readEpochFile } from '../../src/store/epoch-file.js';
import { startTestAgent } from '../../testkit/agent.js';
import { memoryLogger } from '../../testkit/app.js';
import { HOLD_BYTES, heldDownload, startAgentProc, startWebProc, writeTokenFile } from '../../testkit/cluster.js';
import { type Running, listen, rawGet } from '../../testkit/server.js';
import { type TempStore, tempStore } from '../../testkit/store.js';
import { waitFor } from '../../testkit/wait.js';

/** The ETag a copy of a master file is served with: copies keep master's mtime to the millisecond. */
const tagOf = (st: { size: number; mtimeMs: number }) =>
  `W/"${st.size.toString(16)}-${Math.floor(st.mtimeMs).toString(16)}"`;

const openDescriptors = async () => (await readdir('/proc/self/fd')).length;

/**
 * A slot may be written only when no one can still read it. These break the
 * ways the count of readers could be wrong: requests that leave by every
 * path, shared state that is not what it claims, servers that stall, closes
 * that do not wait, a second agent, rollbacks and publishes that half fail.
 */
describe('every path out of a request releases its copy exactly once', () => {
  let store: TempStore;
  let files: MirrorStatic;
  let web: Running;
  /** Requests wait here (an auth or session step) until the test lets them go. */
  let gate: { entered: (res: Response) => void; open: Promise<void> } | null = null;

  before(async () => {
    store = await tempStore();
    await store.fill('a', { 'big.bin': randomBytes(HOLD_BYTES), 'small.txt': 'small' });
    await store.publish(1, 'a');
    files = mirrorStatic({ store: store.root, logger: memoryLogger(), heartbeatInterval: 100 });
    const app = express();
    app.use(async (_req: Request, res: Response, next: NextFunction) => {
      const g = gate;
      if (g) {
        g.entered(res);
        await g.open;
      }
      next();
    });
    app.use(files);
    await files.ready;
    web = await listen(app);
  });
  after(async () => {
    await web.close();
    await files.close();
    await store.dispose();
  });
  const idle = () =>
    waitFor('the in-flight counts to come back to 0', () => {
      const { a, b } = files.state().inflight;
      return a === 0 && b === 0;
    });

  /** Send a raw request and hang up when `when` says. */
  const hangUp = async (path: string, headers: string, when: 'after-send' | 'first-byte') => {
    const socket = connect(web.port, '127.0.0.1');
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    socket.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n${headers}\r\n`);
    if (when === 'first-byte') await new Promise<void>((resolve) => socket.once('data', () => resolve()));
    socket.destroy();
  };

  for (const [name, path, headers] of [
    ['a streamed download', '/big.bin', ''],
    ['a Range response', '/big.bin', 'Range: bytes=100-20000000\r\n'],
    ['a 304', '/big.bin', 'If-None-Match: *\r\n'],
    ['a body from memory', '/small.txt', ''],
    ['a miss', '/nothing-here', ''],
  ] as const) {
    it(`${name}: a client gone during an asynchronous step before the middleware`, async () => {
      const fds = await openDescriptors();
      let entered: (res: Response) => void = () => {};
      let letGo: () => void = () => {};
      const inside = new Promise<Response>((resolve) => (entered = resolve));
      gate = { entered, open: new Promise<void>((resolve) => (letGo = resolve)) };
      await hangUp(path, headers, 'after-send');
      const res = await inside;
      // the middleware must run only once the server has seen the client go
      await waitFor('the server to see the client gone', () => res.destroyed);
      gate = null;
      letGo();
      await idle();
      await waitFor('no descriptor left open', async () => (await openDescriptors()) <= fds);
    });

    it(`${name}: a client gone right after sending, during the lookup`, async () => {
      const fds = await openDescriptors();
      for (let i = 0; i < 20; i++) await hangUp(`${path}?${i}`, headers, 'after-send');
      await idle();
      await waitFor('no descriptor left open', async () => (await openDescriptors()) <= fds);
    });
  }

  it('a streamed download: a client gone mid-stream, 20 times', async () => {
    const fds = await openDescriptors();
    for (let i = 0; i < 20; i++) await hangUp('/big.bin', '', 'first-byte');
    await idle();
    await waitFor('no descriptor left open', async () => (await openDescriptors()) <= fds);
  });

  it('a Range response: a client gone mid-stream', async () => {
    for (let i = 0; i < 10; i++) await hangUp('/big.bin', 'Range: bytes=0-30000000\r\n', 'first-byte');
    await idle();
  });
});

describe('readers of shared state never block', () => {
  let store: TempStore;

  beforeEach(async () => {
    store = await tempStore();
    await store.fill('master', { 'index.html': 'v1' });
  });
  afterEach(async () => {
    await store.dispose();
  });

  it('a FIFO, a link to a device and a huge file among the heartbeats hold no sync, status, metric or write', async () => {
    const agent = await startTestAgent(store, { drainTimeoutMs: 2000 });
    try {
      execFileSync('mkfifo', [join(store.serversDir, 'fifo.json')]);
      await symlink('/dev/zero', join(store.serversDir, 'zero.json'));
      await writeFile(join(store.serversDir, 'huge.json'), '');
      await truncate(join(store.serversDir, 'huge.json'), 4 * 1024 ** 3);
      for (let i = 0; i < 3; i++) {
        const started = Date.now();
        const record = (await (await agent.call('POST', '/v1/sync?wait=1')).json()) as SwapRecord;
        assert.equal(record.result, 'ok');
        assert.ok(Date.now() - started < 2000, 'the sync waited on something that is not a heartbeat');
        assert.equal((await agent.call('GET', '/v1/status')).status, 200);
        assert.equal((await agent.call('GET', '/metrics')).status, 200);
        assert.ok((await agent.call('PUT', `/v1/files/w${i}.txt`, { body: 'x' })).ok);
      }
      assert.equal((await agent.call('GET', '/healthz')).status, 200);
    } finally {
      await agent.close();
    }
  });

  it('a FIFO in place of the epoch file is an error, not a hang', async () => {
    await store.publish(1, 'a');
    const files = mirrorStatic({ store: store.root, logger: memoryLogger(), watch: 'poll', pollInterval: 20 });
    try {
      await files.ready;
      await rm(store.epochFile);
      execFileSync('mkfifo', [store.epochFile]);
      const checked = await Promise.race([
        files.refresh().then(
          () => 'settled',
          () => 'settled',
        ),
        new Promise((r) => setTimeout(() => r('hung'), 2000)),
      ]);
      assert.equal(checked, 'settled');
      assert.equal(files.state().epoch, 1, 'the last good epoch is kept');
    } finally {
      await files.close();
    }
  });

  it('/healthz says the agent is unhealthy when its file system calls do not complete', async () => {
    const agent = await startTestAgent(store);
    try {
      assert.equal((await agent.call('GET', '/healthz')).status, 200);
      await rm(store.stateDir, { recursive: true });
      const res = await agent.call('GET', '/healthz');
      assert.equal(res.status, 503);
    } finally {
      await agent.close();
    }
  });
});

describe('a server that stalls past its lease never serves a rewritten copy', () => {
  let store: TempStore;
  after(async () => {
    await store?.dispose();
  });

  it('SIGSTOP past the TTL, two syncs rewrite its copy, SIGCONT: every answer is one version, headers and body', async () => {
    store = await tempStore();
    const { file: tokenFile, token } = await writeTokenFile(store);
    const size = 4 * 1024 * 1024; // above the cache's file size: streamed from disk
    const version = (v: number) => Buffer.alloc(size, 48 + v);
    await store.fill('master', { 'big.bin': version(1) });
    const agent = await startAgentProc(store, tokenFile, token);
    const web = await startWebProc(store, 'stalling');
    try {
      const put = async (v: number) => {
        const res = await fetch(`${agent.url}/v1/files/big.bin`, {
          method: 'PUT',
          headers: { authorization: `Bearer ${token}` },
          body: version(v),
        });
        assert.ok(res.ok);
        return tagOf(await stat(join(store.master, 'big.bin')));
      };
      const tags = new Map<string, number>([[tagOf(await stat(join(store.master, 'big.bin'))), 1]]);
      // the copy's content index gives each version a strong tag of its bytes too: either must match the body
      for (const v of [1, 2, 3]) tags.set(strongEtag(contentHash(version(v))), v);
      const sync = async () => (await agent.api<SwapRecord>('POST', '/v1/sync?wait=1')).body;
      // the server caches the entry of version 1 (its stat, hence its headers)
      assert.equal((await rawGet(web.port, '/big.bin')).status, 200);
      process.kill(web.proc.child.pid as number, 'SIGSTOP');
      try {
        tags.set(await put(2), 2);
        assert.notEqual((await sync()).result, 'failed'); // drops the stopped server as dead
        tags.set(await put(3), 3);
        const rewrote = await sync(); // copies into the slot the stopped server still mounts
        assert.equal(rewrote.result, 'ok', JSON.stringify(rewrote.error));
      } finally {
        process.kill(web.proc.child.pid as number, 'SIGCONT');
      }
      for (let i = 0; i < 5; i++) {
        const res = await rawGet(web.port, '/big.bin');
        assert.equal(res.status, 200);
        const bodyVersion = (res.body[0] as number) - 48;
        assert.ok(
          res.body.every((b) => b === res.body[0]),
          'a body mixes versions',
        );
        assert.equal(res.body.length, Number(res.headers['content-length']));
        assert.equal(
          tags.get(String(res.headers.etag)),
          bodyVersion,
          `ETag ${res.headers.etag} sent with version ${bodyVersion}; versions: ${JSON.stringify([...tags])}`,
        );
      }
    } finally {
      await web.proc.kill();
      await agent.proc.kill();
    }
  });
});

describe('close() drains before it lets the copy go', () => {
  let store: TempStore;
  before(async () => {
    store = await tempStore();
    await store.fill('a', { 'big.bin': randomBytes(HOLD_BYTES) });
    await store.publish(1, 'a');
  });
  after(async () => {
    await store.dispose();
  });

  const serve = async (closeTimeout?: number) => {
    const files = mirrorStatic({
      store: store.root,
      serverId: `closing-${closeTimeout ?? 'default'}`,
      logger: memoryLogger(),
      ...(closeTimeout !== undefined ? { closeTimeout } : {}),
    });
    await files.ready;
    const web = await listen((req, res) =>
      files(req, res, () => {
        res.statusCode = 404;
        res.end('fallthrough');
      }),
    );
    return { files, web, heartbeat: join(store.serversDir, `closing-${closeTimeout ?? 'default'}.json`) };
  };

  it('keeps reporting a request in flight until it ends, then removes its heartbeat', async () => {
    const { files, web, heartbeat } = await serve();
    const download = heldDownload(web.port, '/big.bin');
    try {
      await download.started;
      let closed = false;
      const closing = files.close().then(() => (closed = true));
      // a new request is no longer taken
      const late = await rawGet(web.port, '/big.bin');
      assert.equal(late.status, 404, 'a closing server still took a new request');
      await waitFor('the heartbeat to report the request in flight', async () => {
        const hb = JSON.parse(await readFile(heartbeat, 'utf8'));
        return hb.inflight.a === 1;
      });
      assert.equal(closed, false);
      download.resume();
      assert.equal((await download.done).length, HOLD_BYTES);
      await closing;
      await assert.rejects(stat(heartbeat), { code: 'ENOENT' });
    } finally {
      download.abort();
      await web.close();
    }
  });

  it('gives up after closeTimeout', async () => {
    const { files, web } = await serve(200);
    const download = heldDownload(web.port, '/big.bin');
    await download.started;
    const started = Date.now();
    await files.close();
    assert.ok(Date.now() - started >= 150, 'close() did not wait');
    download.abort();
    await web.close();
  });
});

describe('one agent per store, whatever the namespaces', () => {
  let store: TempStore;
  after(async () => {
    await store?.dispose();
  });

  it('a second agent in another PID namespace with the same hostname refuses to start, naming the first', async () => {
    store = await tempStore();
    const { file: tokenFile, token } = await writeTokenFile(store);
    // each agent is pid 1 of its own PID namespace, on the same host (same hostname)
    // unshare ignores SIGTERM while its child runs: it is killed, and passes a SIGTERM on to the agent
    const inOwnPidNamespace = { through: 'exec unshare --pid --fork --mount-proc --kill-child=SIGTERM "$@"' };
    const first = await startAgentProc(store, tokenFile, token, [], inOwnPidNamespace);
    try {
      const second = await startAgentProc(store, tokenFile, token, [], inOwnPidNamespace).then(
        (a) => a,
        (err: Error) => err,
      );
      assert.ok(second instanceof Error, 'the second agent started');
      assert.match(second.message, /another mirrorswap agent \(pid 1 on .*PID namespace pid:\[\d+\]/);
    } finally {
      await first.proc.kill('SIGKILL');
    }
  });
});

describe('rollback has one meaning', () => {
  let store: TempStore;
  before(async () => {
    store = await tempStore();
    await store.fill('master', { 'v.txt': '1' });
  });
  after(async () => {
    await store.dispose();
  });

  it('a second rollback in a row is refused, and pauses nothing', async () => {
    const agent = await startTestAgent(store);
    try {
      assert.ok((await agent.call('PUT', '/v1/files/v.txt', { body: '2' })).ok);
      await agent.call('POST', '/v1/sync?wait=1');
      const first = (await (await agent.call('POST', '/v1/rollback')).json()) as SwapRecord;
      assert.equal(first.result, 'ok');
      await agent.call('POST', '/v1/sync?wait=1'); // lifts the pause
      assert.ok((await agent.call('PUT', '/v1/files/v.txt', { body: '3' })).ok);
      await agent.call('POST', '/v1/sync?wait=1');
      const [one, two] = await Promise.all([agent.call('POST', '/v1/rollback'), agent.call('POST', '/v1/rollback')]);
      const records = [(await one.json()) as SwapRecord, (await two.json()) as SwapRecord];
      assert.deepEqual(records.map((r) => r.result).sort(), ['failed', 'ok']);
      const refused = records.find((r) => r.result === 'failed') as SwapRecord;
      assert.equal(refused.error?.code, 'NO_ROLLBACK');
      const epoch = await readEpochFile(store.epochFile);
      assert.equal(await readFile(join(store.slots[epoch?.mounted ?? 'a'], 'v.txt'), 'utf8'), '2');
      // a refused rollback on a store that is not paused leaves it unpaused
      await agent.call('POST', '/v1/sync?wait=1');
      const again = (await (await agent.call('POST', '/v1/rollback')).json()) as SwapRecord;
      assert.equal(again.result, 'ok');
      const refusedAgain = (await (await agent.call('POST', '/v1/rollback')).json()) as SwapRecord;
      assert.equal(refusedAgain.error?.code, 'NO_ROLLBACK');
      await agent.call('POST', '/v1/sync?wait=1');
      const status = (await (await agent.call('GET', '/v1/status')).json()) as { paused: boolean };
      assert.equal(status.paused, false);
      const refusedNow = (await (await agent.call('POST', '/v1/sync?wait=1')).json()) as SwapRecord;
      assert.equal(refusedNow.result, 'ok');
      const noRollback = (await (await agent.call('POST', '/v1/rollback')).json()) as SwapRecord;
      if (noRollback.result === 'failed') {
        const paused = (await (await agent.call('GET', '/v1/status')).json()) as { paused: boolean };
        assert.equal(paused.paused, false, 'a refused rollback paused automatic syncs');
      }
    } finally {
      await agent.close();
    }
  });
});

describe('the agent takes the epoch file as the truth before each swap', () => {
  let store: TempStore;
  after(async () => {
    await store?.dispose();
  });

  it('an epoch published on disk but not recorded (a failed fsync after the rename) does not send the copy into a served slot', async () => {
    store = await tempStore();
    await store.fill('master', { 'f.txt': 'one' });
    const logger = memoryLogger();
    const agent = await Agent.start({ layout: store, logger, durable: false, drainTimeoutMs: 1500, serverTtlMs: 5000 });
    try {
      // the agent believes epoch 1 mounts a; the file already says epoch 2 mounts b, as a publish
      // whose rename landed would leave it
      const believed = agent.epoch;
      await store.publish(believed.epoch + 1, 'b');
      // a server follows the file: it mounts b
      const files = mirrorStatic({ store: store.root, logger: memoryLogger(), serverId: 'follower' });
      await files.ready;
      try {
        assert.equal(files.state().slot, 'b');
        await writeFile(join(store.master, 'f.txt'), 'two');
        const record = await agent.requestSync({ reason: 'test' });
        assert.equal(record.result, 'ok', JSON.stringify(record.error));
        assert.equal(record.to, 'a', 'the copy went into the slot the server mounts');
        assert.equal(record.epoch, believed.epoch + 2);
        await files.refresh();
        assert.equal(files.state().slot, 'a');
      } finally {
        await files.close();
      }
    } finally {
      await agent.close();
    }
  });
});

describe('bad luck in shared state, and processes that die beside the agent', () => {
  let store: TempStore;
  beforeEach(async () => {
    store = await tempStore();
  });
  afterEach(async () => {
    await store.dispose();
  });

  it('killing every child of the agent never drops its hold on the store', async () => {
    const { file: tokenFile, token } = await writeTokenFile(store);
    const first = await startAgentProc(store, tokenFile, token);
    try {
      // whatever helper the agent may run (a lock holder, a hook), killed with -9
      execFileSync('sh', ['-c', `pkill -KILL -P ${first.proc.child.pid} || true`]);
      const second = await startAgentProc(store, tokenFile, token).then(
        (a) => a,
        (err: Error) => err,
      );
      if (!(second instanceof Error)) await second.proc.kill();
      assert.ok(second instanceof Error, 'a second agent took the store');
      assert.match(second.message, /another mirrorswap agent/);
    } finally {
      await first.proc.kill();
    }
  });

  for (const name of ['agent.lock', 'journal.jsonl']) {
    it(`a FIFO in place of state/${name} stops the agent's start at once, naming it`, async () => {
      const { file: tokenFile, token } = await writeTokenFile(store);
      await mkdir(store.stateDir, { recursive: true });
      execFileSync('mkfifo', [join(store.stateDir, name)]);
      const started = Date.now();
      const outcome = await startAgentProc(store, tokenFile, token).then(
        async (a) => {
          await a.proc.kill();
          return null;
        },
        (err: Error) => err,
      );
      assert.ok(outcome instanceof Error, 'the agent started on a FIFO');
      assert.match(
        outcome.message,
        new RegExp(`${name.replace('.', '\\.')}.*not a regular file|not a regular file.*${name.replace('.', '\\.')}`),
      );
      assert.ok(Date.now() - started < 10_000, 'the start waited on the FIFO');
    });
  }

  it('a FIFO swapped in for a file whose headers are cached is answered, never waited on', async () => {
    await store.fill('a', { 'big.bin': randomBytes(1024 * 1024) });
    await store.publish(1, 'a');
    const files = mirrorStatic({
      store: store.root,
      logger: memoryLogger(),
      serverId: 'fifo-swap',
      cacheMaxFileSize: 1024,
    });
    await files.ready;
    const web = await listen((req, res) =>
      files(req, res, () => {
        res.statusCode = 404;
        res.end();
      }),
    );
    try {
      assert.equal((await rawGet(web.port, '/big.bin')).status, 200); // the entry, headers and all, is cached
      await rm(join(store.slots.a, 'big.bin'));
      execFileSync('mkfifo', [join(store.slots.a, 'big.bin')]);
      const answer = await Promise.race([
        rawGet(web.port, '/big.bin').then((r) => r.status),
        new Promise((r) => setTimeout(() => r('hung'), 3000)),
      ]);
      assert.ok([404, 503].includes(answer as number), `answered ${answer}`);
      assert.equal((await rawGet(web.port, '/nothing')).status, 404, 'the server still answers');
    } finally {
      await web.close();
      await files.close();
    }
  });
});

describe('a server the agent cannot know about does not serve', () => {
  let store: TempStore;
  before(async () => {
    store = await tempStore();
    await store.fill('a', { 'page.html': 'page' });
    await store.publish(1, 'a');
  });
  after(async () => {
    await store.dispose();
  });

  it('whose first heartbeat could not be written answers 503 instead of serving unseen', async () => {
    // heartbeats cannot be written: where their directory goes, a file stands
    const epochDir = join(store.root, 'elsewhere');
    await mkdir(epochDir);
    await writeFile(join(epochDir, 'epoch.json'), await readFile(store.epochFile));
    await writeFile(join(epochDir, 'servers'), 'not a directory');
    const files = mirrorStatic({
      epochFile: join(epochDir, 'epoch.json'),
      roots: { a: store.slots.a, b: store.slots.b },
      logger: memoryLogger(),
      serverId: 'unseen',
      fallthrough: false,
    });
    await files.ready.catch(() => {});
    const web = await listen((req, res) =>
      files(req, res, (err?: unknown) => {
        res.statusCode = (err as { status?: number } | undefined)?.status ?? 404;
        res.end();
      }),
    );
    try {
      assert.equal((await rawGet(web.port, '/page.html')).status, 503);
    } finally {
      await web.close();
      await files.close();
    }
  });
});
