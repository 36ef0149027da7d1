import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Agent, type Agent as HttpAgent, request } from 'node:http';
import { createServer } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { SwapRecord } from '../../src/agent/agent.js';
import { readEpochFile } from '../../src/store/epoch-file.js';
import { heartbeatFile, readHeartbeats } from '../../src/store/heartbeat.js';
import type { SlotName } from '../../src/store/store-layout.js';
import { writeMembership } from '../../src/store/membership.js';
import { NginxCompanion } from '../../src/nginx/companion.js';
import { workersOf } from '../../src/nginx/nginx-processes.js';
import { memoryLogger } from '../../testkit/app.js';
import { type TestAgent, startTestAgent } from '../../testkit/agent.js';
import { heldDownload } from '../../testkit/cluster.js';
import { type TestNginx, childrenOf, nginxBinary, startNginx } from '../../testkit/nginx.js';
import { type CliProcess, runCli } from '../../testkit/proc.js';
import { freePort } from '../../testkit/server.js';
import { type TempStore, tempStore } from '../../testkit/store.js';
import { waitFor } from '../../testkit/wait.js';

const MB = 1024 * 1024;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** GET through `agent` (keep-alive when given): status, body, the epoch nginx says it served from. */
function get(port: number, path: string, agent?: HttpAgent): Promise<{ status: number; body: string; epoch: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, agent: agent ?? false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          body: Buffer.concat(chunks).toString(),
          epoch: String(res.headers['x-epoch'] ?? ''),
        }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

interface Setup {
  store: TempStore;
  agent: TestAgent;
  nginx: TestNginx;
  companion: NginxCompanion;
  logs: ReturnType<typeof memoryLogger>;
}

/** The companion the tests run in-process: quick heartbeats and retries. */
function companionOptions(
  store: TempStore,
  nginx: TestNginx,
  logs: ReturnType<typeof memoryLogger>,
  pidFile = nginx.pidFile,
): Parameters<typeof NginxCompanion.start>[0] {
  return {
    layout: store,
    includeFile: nginx.includeFile,
    pidFile,
    reloadTimeout: 1500,
    retryInterval: 200,
    serverId: 'nginx-test',
    heartbeatInterval: 200,
    watch: 'native',
    pollInterval: 1000,
    logger: logs,
  };
}

async function setUp(
  agentOptions: { drainTimeoutMs?: number } = {},
  nginxOptions: Parameters<typeof startNginx>[0] = {},
  /** The pid file the companion reads, when not nginx's own: the test names the master in it (setUp does first). */
  pidFileOf?: (nginx: TestNginx) => string,
): Promise<Setup> {
  const store = await tempStore();
  await store.fill('master', { 'index.html': 'v1', 'big.bin': Buffer.alloc(64 * MB, 'A') });
  const agent = await startTestAgent(store, { serverTtlMs: 5000, ...agentOptions }, 128 * MB);
  const nginx = await startNginx(nginxOptions);
  const logs = memoryLogger();
  // the companion first: it writes the include nginx's configuration needs
  const companion = await NginxCompanion.start(companionOptions(store, nginx, logs, pidFileOf?.(nginx)));
  await nginx.start();
  if (pidFileOf) await writeFile(pidFileOf(nginx), `${nginx.master()}\n`);
  await waitFor('the companion to see nginx', () => companion.status().master === nginx.master());
  // an nginx found running is reloaded onto the include on disk (nothing tells when it read it): tests start once
  // it serves, with the reload's workers listed (the second a moment after the first)
  await waitFor(
    'the companion to reload the nginx it found',
    () => companion.status().served !== null && companion.status().workers.length >= 2,
    { timeout: 10_000 },
  );
  return { store, agent, nginx, companion, logs };
}

/**
 * Sync 'read-by-nginx', then start nginx again on that include unseen by the
 * companion (which reads the pid file `named`, written only when the test
 * chooses): the copy it reads, and its master.
 */
async function startUnseen(s: Setup, named: string): Promise<{ first: SwapRecord; read: SlotName; master: number }> {
  await put(s, 'index.html', 'read-by-nginx');
  const first = await sync(s);
  assert.equal(first.result, 'ok', JSON.stringify(first));
  await s.nginx.stop('SIGKILL');
  await rm(named, { force: true });
  await waitFor('the companion to see nginx gone', () => s.companion.status().master === null);
  await s.nginx.start();
  return { first, read: first.to, master: s.nginx.master() as number };
}

async function tearDown(s: Setup | undefined): Promise<void> {
  if (!s) return;
  await s.companion.close();
  await s.nginx.dispose();
  await s.agent.close();
  await s.store.dispose();
}

async function put(s: Setup, path: string, body: string | Buffer): Promise<void> {
  const res = await s.agent.call('PUT', `/v1/files/${path}`, { body });
  assert.equal(res.status, 201, await res.text());
}

async function sync(s: Setup): Promise<SwapRecord> {
  const res = await s.agent.call('POST', '/v1/sync?wait=1');
  return (await res.json()) as SwapRecord;
}

describe('mirrorswap nginx: a real nginx as a web server of the store', () => {
  let s: Setup;
  before(async () => {
    s = await setUp({ drainTimeoutMs: 20_000 });
  });
  after(() => tearDown(s));

  it('serves the new copy on the next request after a sync, and sync?wait=1 returns only once the old workers have exited', async () => {
    const first = await sync(s);
    assert.equal(first.result, 'ok', JSON.stringify(first));
    const keepAlive = new Agent({ keepAlive: true, maxSockets: 1 });
    const v1 = await get(s.nginx.port, '/index.html', keepAlive);
    assert.equal(v1.body, 'v1');
    assert.equal(v1.epoch, String(first.epoch));
    const oldWorkers = s.companion.status().workers;
    assert.ok(oldWorkers.length > 0);

    // a large download on the old copy, held by a client that stops reading
    const download = heldDownload(s.nginx.port, '/big.bin');
    await download.started;
    await put(s, 'index.html', 'v2');
    await put(s, 'big.bin', Buffer.alloc(64 * MB, 'B'));
    let answered = false;
    const swap = sync(s).finally(() => {
      answered = true;
    });
    // new requests get the new copy as soon as nginx has switched, while the download holds the old one
    const v2 = await waitFor('nginx to serve v2', async () => {
      const r = await get(s.nginx.port, '/index.html');
      return r.body === 'v2' ? r : null;
    });
    const seen = Date.now();
    assert.equal(v2.epoch, String(first.epoch + 1));
    const hb = await waitFor('the heartbeat to report the retired workers', async () => {
      const hb = (await readHeartbeats(s.store.serversDir)).find((h) => h.id === 'nginx-test');
      return hb && hb.epoch === first.epoch + 1 && (hb.inflight[first.to] ?? 0) > 0 ? hb : null;
    });
    // when nginx began serving the epoch, as the companion saw its new workers: after the publish, and
    // about when a request saw it (the companion may see the workers a little after they answer)
    const published = Date.parse((await readEpochFile(s.store.epochFile))?.publishedAt ?? '');
    const switchedAt = Date.parse(hb.switchedAt ?? '');
    assert.ok(switchedAt >= published && switchedAt <= seen + 5000, `switchedAt ${hb.switchedAt}`);
    assert.equal(answered, false, 'sync?wait=1 answered while an old worker still served the old copy');
    assert.ok(oldWorkers.some((pid) => Object.keys(s.companion.status().retired).includes(String(pid))));

    download.resume();
    const body = await download.done;
    assert.equal(body.length, 64 * MB);
    assert.equal(sha(body), sha(Buffer.alloc(64 * MB, 'A')), 'the download came whole from the old copy');
    const record = await swap;
    assert.equal(record.result, 'ok', JSON.stringify(record));
    for (const pid of oldWorkers) assert.throws(() => process.kill(pid, 0), 'an old worker outlived the drain');

    // the keep-alive connection of before, and open_file_cache, carry nothing of the old copy over
    const again = await get(s.nginx.port, '/index.html', keepAlive);
    assert.equal(again.body, 'v2');
    assert.equal(again.epoch, String(record.epoch));
    keepAlive.destroy();
  });

  it('never reports a switch nginx refused: a broken configuration keeps the old epoch, and the drain names nginx', async () => {
    const served = (await get(s.nginx.port, '/index.html')).body;
    const before = s.companion.status().served?.epoch;
    await s.nginx.breakConfig(true);
    await put(s, 'index.html', 'v-broken');
    const pending = sync(s);
    await waitFor('the companion to say why', () => s.companion.status().lastError, { timeout: 10_000 });
    assert.match(
      s.companion.status().lastError ?? '',
      /refused the new configuration.*this is not a directive|unknown directive/,
    );
    assert.equal(s.companion.status().served?.epoch, before);
    const hb = (await readHeartbeats(s.store.serversDir)).find((h) => h.id === 'nginx-test');
    assert.equal(hb?.epoch, before, 'the heartbeat kept the epoch nginx really serves');
    // nginx serves on, whole, from the copy it had
    assert.equal((await get(s.nginx.port, '/index.html')).body, served);
    assert.ok(s.logs.lines.some((e) => e.level === 'error' && /did not switch/.test(e.msg)));
    // fixed: the companion's retry switches it, and the swap's drain completes
    await s.nginx.breakConfig(false);
    const record = await pending;
    assert.equal(
      record.result,
      'ok',
      `${JSON.stringify(record)} ${JSON.stringify(s.companion.status())} ${JSON.stringify(s.logs.lines.slice(-5))}`,
    );
    assert.equal((await get(s.nginx.port, '/index.html')).body, 'v-broken');
    assert.equal(s.companion.status().lastError, null);
  });

  it('swaps back to back under load: no torn body, one ETag per version, never backwards on a connection', async () => {
    const SIZE = 256 * 1024;
    const version = (n: number) => Buffer.alloc(SIZE, String.fromCharCode(97 + (n % 26)));
    const start = Number((await get(s.nginx.port, '/index.html')).epoch);
    await put(s, 'load.bin', version(0));
    await put(s, 'load-version.txt', '0');
    assert.equal((await sync(s)).result, 'ok');
    let stop = false;
    const etags = new Map<number, string>();
    const problems: string[] = [];
    let requests = 0;
    let retried = 0;
    const client = async (id: number) => {
      const agent = new Agent({ keepAlive: true, maxSockets: 1 });
      let highest = -1;
      while (!stop) {
        const res = await new Promise<{ body: Buffer; etag: string; status: number }>((resolve, reject) => {
          const req = request({ host: '127.0.0.1', port: s.nginx.port, path: '/load.bin', agent }, (r) => {
            const chunks: Buffer[] = [];
            r.on('data', (c: Buffer) => chunks.push(c));
            r.on('end', () =>
              resolve({ body: Buffer.concat(chunks), etag: String(r.headers.etag), status: r.statusCode ?? 0 }),
            );
            r.on('error', reject);
          });
          req.on('error', (err) => {
            // A worker retired by a reload closes its idle keep-alive connections: a request
            // sent on one as it closes gets a reset, which clients retry (browsers do, for a
            // GET on a reused connection). Only such a reset is tolerated.
            if (req.reusedSocket && /socket hang up|ECONNRESET/.test(err.message)) {
              retried++;
              resolve({ body: Buffer.alloc(0), etag: '', status: -1 });
            } else reject(err);
          });
          req.end();
        }).catch((err: Error) => {
          problems.push(`client ${id}: ${err.message}`);
          return null;
        });
        if (res?.status === -1) continue;
        if (!res) continue;
        requests++;
        if (res.status !== 200 || res.body.length !== SIZE) {
          problems.push(`client ${id}: status ${res.status}, ${res.body.length} bytes`);
          continue;
        }
        const letter = res.body[0] as number;
        if (res.body.some((b) => b !== letter)) problems.push(`client ${id}: a torn body`);
        const v = letter - 97;
        const known = etags.get(v);
        if (known === undefined) etags.set(v, res.etag);
        else if (known !== res.etag) problems.push(`client ${id}: version ${v} with ETags ${known} and ${res.etag}`);
        if (v < highest) problems.push(`client ${id}: version ${v} after ${highest}`);
        highest = Math.max(highest, v);
      }
      agent.destroy();
    };
    const clients = [0, 1, 2, 3].map(client);
    const SWAPS = 8;
    for (let n = 1; n <= SWAPS; n++) {
      await put(s, 'load.bin', version(n));
      const record = await sync(s);
      assert.equal(record.result, 'ok', JSON.stringify(record));
    }
    stop = true;
    await Promise.all(clients);
    assert.deepEqual(problems, []);
    assert.ok(requests > SWAPS * 4, `${requests} requests (${retried} retried on a closing connection)`);
    assert.ok(etags.size >= 2, 'the load saw more than one version');
    assert.equal(Number((await get(s.nginx.port, '/index.html')).epoch), start + 1 + SWAPS);
  });

  it('follows nginx stopped and started again, and killed with its workers', async () => {
    await s.nginx.stop('SIGQUIT');
    await waitFor('the companion to see nginx gone', () => s.companion.status().master === null);
    await put(s, 'index.html', 'while-down');
    const whileDown = await sync(s);
    assert.equal(whileDown.result, 'ok', 'nginx down serves nothing: nothing to wait for');
    await s.nginx.start();
    await waitFor('the companion to see nginx again', () => s.companion.status().master === s.nginx.master());
    assert.equal((await get(s.nginx.port, '/index.html')).body, 'while-down');

    await s.nginx.stop('SIGKILL');
    await s.nginx.start();
    await waitFor('the companion to see the new master', () => s.companion.status().master === s.nginx.master());
    await put(s, 'index.html', 'after-kill');
    const record = await sync(s);
    assert.equal(record.result, 'ok', JSON.stringify(record));
    assert.equal((await get(s.nginx.port, '/index.html')).body, 'after-kill');
  });

  it('a sync published while nginx starts again, or just after the companion sees it start: ok only once nginx serves it', async () => {
    // The companion's look at a master started again and a switch ran side by side: the look took the
    // switch's include, written a moment before its reload, for what the new master had read, and the
    // heartbeat reported the new epoch with the old one's workers serving (the swap came back ok, and
    // nginx served the copy before it). Each order is tried: the sync as nginx starts, and the sync the
    // moment the companion has seen the new master.
    for (let round = 0; round < 6; round++) {
      await s.nginx.stop('SIGKILL');
      const body = `restart-${round}`;
      await put(s, 'index.html', body);
      let record: SwapRecord;
      if (round % 2 === 0) {
        [record] = await Promise.all([sync(s), s.nginx.start()]);
      } else {
        await s.nginx.start();
        await waitFor('the companion to see the new master', () => s.companion.status().master === s.nginx.master(), {
          step: 1,
        });
        record = await sync(s);
      }
      assert.equal(record.result, 'ok', JSON.stringify(record));
      // nginx may start on the include of the epoch before (read before the sync wrote it): the
      // companion's heartbeat holds the sync until nginx has been reloaded onto the new one
      const seen = await get(s.nginx.port, '/index.html');
      assert.equal(seen.body, body, `round ${round}: served epoch ${seen.epoch}, the sync published ${record.epoch}`);
    }
  });

  it('a switch while nginx is down holds the copy the include before reached a while: an nginx starting then may have read it, and shows no pid file yet', async () => {
    await s.nginx.stop('SIGQUIT');
    await waitFor('the companion to see nginx gone', () => s.companion.status().master === null);
    const before = s.companion.status().served;
    assert.ok(before);
    await put(s, 'index.html', 'held');
    const started = Date.now();
    const syncing = sync(s);
    const hb = await waitFor('the heartbeat of the switch made while nginx is down', async () => {
      const mine = (await readHeartbeats(s.store.serversDir)).find((h) => h.id === 'nginx-test');
      return mine && mine.epoch > before.epoch ? mine : null;
    });
    assert.equal(hb.mounted, before.slot === 'a' ? 'b' : 'a');
    assert.ok((hb.inflight[before.slot] ?? 0) >= 1, `the copy before held: ${JSON.stringify(hb.inflight)}`);
    const record = await syncing;
    assert.equal(record.result, 'ok', JSON.stringify(record));
    // the hold ends (3 s after the include's write): the copy before is free for the next sync
    assert.ok(Date.now() - started >= 2500, `the swap waited ${Date.now() - started} ms`);
    await waitFor('the copy before let go', async () => {
      const mine = (await readHeartbeats(s.store.serversDir)).find((h) => h.id === 'nginx-test');
      return mine !== undefined && (mine.inflight[before.slot] ?? 0) === 0;
    });
    await s.nginx.start();
    await waitFor('nginx to serve the switch made while it was down', async () => {
      return (await get(s.nginx.port, '/index.html')).body === 'held';
    });
  });

  it('reloads an nginx started again however long after the include was written: nothing tells when it read it', async () => {
    await s.nginx.stop('SIGQUIT');
    await waitFor('the companion to see nginx gone', () => s.companion.status().master === null);
    // well past any margin a start time could be trusted by (a daemon's master is forked after reading it)
    await new Promise((r) => setTimeout(r, 3500));
    await s.nginx.start();
    const master = s.nginx.master() as number;
    const first = await workersOf(master);
    assert.ok(first.length > 0);
    await waitFor(
      'the companion to reload nginx, its first workers retired',
      () => {
        const st = s.companion.status();
        return st.master === master && st.served !== null && st.workers.every((w) => !first.includes(w));
      },
      { timeout: 10_000 },
    );
    await put(s, 'index.html', 'after-start');
    assert.equal((await sync(s)).result, 'ok');
    assert.equal((await get(s.nginx.port, '/index.html')).body, 'after-start');
  });
});

describe('mirrorswap nginx: a master named in its pid file only after a switch replaced the include it read', () => {
  // The companion reads a pid file the test writes when it chooses: an nginx that read the include, then
  // named itself only after a switch made while it seemed down had replaced that include.
  let s: Setup;
  const named = (n: TestNginx) => join(n.dir, 'named.pid');
  before(async () => {
    s = await setUp({ drainTimeoutMs: 2500 }, {}, named);
  });
  after(async () => {
    await s?.nginx.breakConfig(false);
    await tearDown(s);
  });

  it('holds the copy its workers may serve while it is reloaded, and while the reload is refused', async () => {
    // nginx starts on the include of the first sync, unseen by the companion; its reloads are refused
    const { first, read, master } = await startUnseen(s, named(s.nginx));
    await s.nginx.breakConfig(true);
    await put(s, 'index.html', 'second');
    const second = sync(s);
    await waitFor('the switch made while nginx seems down', async () => {
      const hb = (await readHeartbeats(s.store.serversDir)).find((h) => h.id === 'nginx-test');
      return hb !== undefined && hb.epoch > first.epoch;
    });
    await writeFile(named(s.nginx), `${master}\n`);
    await waitFor('the companion to take the master on', () => s.companion.status().master === master);
    assert.equal((await get(s.nginx.port, '/index.html')).body, 'read-by-nginx');
    // its workers serve the copy of the first sync, and are never reported gone from it
    const until = Date.now() + 2000;
    while (Date.now() < until) {
      const hb = (await readHeartbeats(s.store.serversDir)).find((h) => h.id === 'nginx-test');
      assert.ok(hb);
      assert.ok(
        hb.mounted === read || (hb.inflight[read] ?? 0) > 0,
        `slot ${read}, which nginx serves, reported free: epoch ${hb.epoch}, mounted ${hb.mounted}, inflight ${JSON.stringify(hb.inflight)}`,
      );
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal((await second).result, 'drain_timeout');
    // the next sync would copy into that slot: it waits for it, and gives up without touching it
    await put(s, 'index.html', 'third');
    const third = await sync(s);
    assert.equal(third.to, read);
    assert.equal(third.result, 'failed', JSON.stringify(third));
    assert.equal((await get(s.nginx.port, '/index.html')).body, 'read-by-nginx');
    await s.nginx.breakConfig(false);
    await waitFor('nginx to serve the second sync once its reload is taken', async () => {
      return (await get(s.nginx.port, '/index.html')).body === 'second';
    });
  });
});

describe('mirrorswap nginx: a master named in its pid file before its workers are listed', () => {
  // nginx writes its pid file before it forks its workers, and a worker is listed only once it has set
  // its title: a master the companion finds then has none listed, and forks them on the configuration it
  // read. Here the master, named after it started unseen on the include of the first sync, is stopped with
  // its workers gone until the test lets it go on: the window lasts.
  let s: Setup;
  let stopped: number | undefined;
  const named = (n: TestNginx) => join(n.dir, 'named.pid');
  before(async () => {
    s = await setUp({ drainTimeoutMs: 2500 }, {}, named);
  });
  after(async () => {
    if (stopped !== undefined) process.kill(stopped, 'SIGCONT');
    await tearDown(s);
  });

  it('holds every copy while the master it took on has no worker listed yet', async () => {
    const { read, master } = await startUnseen(s, named(s.nginx));
    process.kill(master, 'SIGSTOP');
    stopped = master;
    // every child, titled as a worker yet or not (one forked a moment before the stop may not be): stopped,
    // the master forks no other, and those killed stay as zombies it has not reaped, never workers
    for (const w of childrenOf(master)) process.kill(w, 'SIGKILL');
    await waitFor('its workers gone', async () => (await workersOf(master)).length === 0);
    await writeFile(named(s.nginx), `${master}\n`);
    await waitFor('the companion to take the master on', () => s.companion.status().master === master);
    // it forks its workers on the include of the first sync once it goes on: that copy is never free
    const until = Date.now() + 4000;
    while (Date.now() < until) {
      const hb = (await readHeartbeats(s.store.serversDir)).find((h) => h.id === 'nginx-test');
      assert.ok(hb);
      assert.ok(
        hb.mounted === read || (hb.inflight[read] ?? 0) > 0,
        `slot ${read}, which nginx will serve, reported free: epoch ${hb.epoch}, mounted ${hb.mounted}, inflight ${JSON.stringify(hb.inflight)}`,
      );
      await new Promise((r) => setTimeout(r, 20));
    }
    process.kill(master, 'SIGCONT');
    stopped = undefined;
    await waitFor('nginx reloaded onto the include on disk', () => s.companion.status().served !== null, {
      timeout: 10_000,
    });
  });
});

describe('mirrorswap nginx: nginx as a daemon (daemon on, its default)', () => {
  let s: Setup;
  before(async () => {
    s = await setUp({ drainTimeoutMs: 20_000 }, { daemon: true });
  });
  after(() => tearDown(s));

  it('a master forked after a switch replaced the include nginx had read is reloaded, not taken as serving it', async () => {
    // A daemon's master is forked once the configuration is read and the sockets open: its start time
    // says nothing of when it read the include. Here its port is taken, and nginx tries it again every
    // 500 ms: it reads the include of the first sync, a sync is made meanwhile, and the master forked
    // after names itself.
    await put(s, 'index.html', 'read-by-nginx');
    const first = await sync(s);
    assert.equal(first.result, 'ok', JSON.stringify(first));
    await s.nginx.stop('SIGQUIT');
    await waitFor('the companion to see nginx gone', () => s.companion.status().master === null);
    const taken = createServer((c) => c.destroy());
    await new Promise<void>((r) => taken.listen(s.nginx.port, '127.0.0.1', r));
    const starting = s.nginx.start();
    await waitFor('nginx to have read its configuration', async () => {
      return /Address already in use/.test(await readFile(join(s.nginx.dir, 'error.log'), 'utf8').catch(() => ''));
    });
    await put(s, 'index.html', 'second');
    const second = sync(s);
    await waitFor(
      'the switch made while nginx seems down',
      () => (s.companion.status().served?.epoch ?? 0) > first.epoch,
    );
    // its master is forked well after the include was replaced (as a slow start would: DNS, certificates)
    await new Promise((r) => setTimeout(r, 300));
    await new Promise((r) => taken.close(r));
    await starting;
    const record = await second;
    assert.equal(record.result, 'ok', JSON.stringify(record));
    assert.equal(
      (await get(s.nginx.port, '/index.html')).body,
      'second',
      `the sync to epoch ${record.epoch} came back ok`,
    );
  });
});

describe('mirrorswap nginx as a process', () => {
  let s: Setup;
  let proc: CliProcess | undefined;
  before(async () => {
    s = await setUp({ drainTimeoutMs: 1500 });
    // this suite runs the CLI in its own process: the in-process companion steps aside
    await s.companion.close();
  });
  after(async () => {
    await proc?.kill('SIGKILL');
    await tearDown(s);
  });

  let metricsPort = 0;
  const startCli = async (extra: string[] = []) => {
    metricsPort = await freePort();
    const p = runCli([
      'nginx',
      '--store',
      s.store.root,
      '--include',
      s.nginx.includeFile,
      '--nginx-pid',
      s.nginx.pidFile,
      '--server-id',
      'nginx-test', // the id of the companion it replaces: it takes its heartbeat over
      '--heartbeat-interval',
      '200ms',
      '--metrics',
      `127.0.0.1:${metricsPort}`,
      ...extra,
    ]);
    await p.waitForLine(/nginx companion running/);
    return p;
  };

  it('is killed with -9 and started again: it takes nginx over, and a drain that outlasts --drain-timeout fails cleanly', async () => {
    proc = await startCli();
    await put(s, 'index.html', 'cli-1');
    const first = await sync(s);
    assert.equal(first.result, 'ok', JSON.stringify(first));
    assert.equal((await get(s.nginx.port, '/index.html')).body, 'cli-1');
    await proc.kill('SIGKILL');
    proc = await startCli();
    await put(s, 'index.html', 'cli-2');
    assert.equal((await sync(s)).result, 'ok');
    assert.equal((await get(s.nginx.port, '/index.html')).body, 'cli-2');
    const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    const epoch = Number((await get(s.nginx.port, '/index.html')).epoch);
    assert.match(metrics, new RegExp(`^mirrorswap_nginx_epoch ${epoch}$`, 'm'));
    assert.match(metrics, /^mirrorswap_nginx_reloads_total [1-9]/m);
    assert.match(metrics, /^mirrorswap_nginx_reload_failures_total 0$/m);
    assert.match(metrics, /^mirrorswap_nginx_up 1$/m);
    assert.match(metrics, /^mirrorswap_nginx_switch_seconds_count [1-9]/m);
    const status = (await (await fetch(`http://127.0.0.1:${metricsPort}/status`)).json()) as {
      served: { epoch: number };
    };
    assert.equal(status.served.epoch, epoch);

    // a download held past the agent's drain timeout: the swap fails, naming nginx's heartbeat
    const download = heldDownload(s.nginx.port, '/big.bin');
    await download.started;
    await put(s, 'index.html', 'cli-3');
    const record = await sync(s);
    assert.equal(record.result, 'drain_timeout', JSON.stringify(record));
    assert.match(record.error?.message ?? '', /nginx-test/);
    download.abort();
    const include = await readFile(s.nginx.includeFile, 'utf8');
    assert.match(include, new RegExp(`root (${s.store.slots.a}|${s.store.slots.b});`));
  });

  it('reloads through --reload-cmd (finding nginx by the configuration it names), and shows why a failing one failed', async () => {
    await proc?.kill('SIGTERM');
    const reload = `${nginxBinary()} -c ${s.nginx.confFile} -p ${s.nginx.dir} -s reload`;
    // no pid file: the master is the one whose configuration the reload command names
    proc = await startCli([
      '--reload-cmd',
      reload,
      '--retry-interval',
      '200ms',
      '--nginx-pid',
      '/nonexistent/nginx.pid',
    ]);
    await put(s, 'index.html', 'cmd-1');
    const ok = await sync(s);
    assert.equal(ok.result, 'ok', JSON.stringify(ok));
    assert.equal((await get(s.nginx.port, '/index.html')).body, 'cmd-1');
    const found = (await (await fetch(`http://127.0.0.1:${metricsPort}/status`)).json()) as { master: number };
    assert.equal(found.master, s.nginx.master());
    // nginx -s reload checks the configuration itself and exits 1 with nginx's words
    await s.nginx.breakConfig(true);
    await put(s, 'index.html', 'cmd-2');
    const pending = sync(s);
    const status = await waitFor(
      'the failed reload in /status',
      async () => {
        const st = (await (await fetch(`http://127.0.0.1:${metricsPort}/status`)).json()) as {
          lastError: string | null;
        };
        return st.lastError ? st : null;
      },
      { timeout: 10_000 },
    );
    assert.match(status.lastError ?? '', /reload command .* failed: .*unknown directive/);
    assert.equal((await get(s.nginx.port, '/index.html')).body, 'cmd-1');
    assert.equal((await pending).result, 'drain_timeout');
    await s.nginx.breakConfig(false);
    await waitFor('nginx to serve cmd-2', async () => (await get(s.nginx.port, '/index.html')).body === 'cmd-2', {
      timeout: 10_000,
    });
  });
});

describe('mirrorswap nginx: nginx started with flags besides -c, -p and -g', () => {
  let s: Setup;
  before(async () => {
    // -e (common in containers), and -g directives whose value holds spaces
    s = await setUp({ drainTimeoutMs: 20_000 }, { args: ['-e', 'stderr', '-g', 'worker_rlimit_nofile 1024;'] });
  });
  after(() => tearDown(s));

  it("started before nginx, as the guide says: no warning; a refused reload gives nginx's own reason; the log says the real retry interval", async () => {
    assert.deepEqual(
      s.logs.lines.filter((l) => l.level === 'warn' || l.level === 'error'),
      [],
      'nothing to warn about on the normal path',
    );
    assert.equal((await sync(s)).result, 'ok');
    await s.nginx.breakConfig(true);
    await put(s, 'index.html', 'v-broken');
    const pending = sync(s);
    await waitFor('the companion to say why', () => s.companion.status().lastError, { timeout: 10_000 });
    const reason = s.companion.status().lastError ?? '';
    assert.match(reason, /nginx refused the new configuration: .*unknown directive "this"/);
    assert.doesNotMatch(reason, /open\(\)/, 'the check ran with the flags nginx was started with, not a mangled -c');
    const failed = s.logs.lines.find((l) => l.level === 'error' && /did not switch/.test(l.msg));
    // setUp's companion: --reload-timeout 1500 ms, --retry-interval 200 ms
    assert.match(failed?.msg ?? '', /tried again in 200 ms .* up to 1500 ms .* a try every 1700 ms/);
    await s.nginx.breakConfig(false);
    const record = await pending;
    assert.equal(record.result, 'ok', JSON.stringify(record));
    assert.equal((await get(s.nginx.port, '/index.html')).body, 'v-broken');
  });

  it('a restarted companion reports the workers it found running as of unknown root, held on both slots', async () => {
    // both of nginx's workers (worker_processes 2), and none of a reload before still exiting: the restarted
    // companion finds every child of the master, and those would be among them
    const workers = await waitFor(
      'both workers of the last reload listed, and no earlier one left',
      () => {
        const { workers: listed, retired } = s.companion.status();
        return listed.length >= 2 && Object.keys(retired).length === 0 ? listed : null;
      },
      { timeout: 10_000 },
    );
    // a download held on one of them keeps it alive past the reload the restarted companion makes
    const download = heldDownload(s.nginx.port, '/big.bin');
    await download.started;
    await s.companion.close();
    s.companion = await NginxCompanion.start(companionOptions(s.store, s.nginx, s.logs));
    const retired = s.companion.status().retired;
    assert.ok(Object.keys(retired).length > 0, 'the worker holding the download is retired');
    for (const [pid, on] of Object.entries(retired)) {
      assert.ok(workers.includes(Number(pid)), `${pid} was one of the workers running before`);
      assert.equal(on, 'unknown', `worker ${pid}: ${JSON.stringify(retired)}`);
    }
    // until it exits, neither slot is reported free: its root is not known
    await waitFor('the heartbeat to hold both slots', async () => {
      const hb = (await readHeartbeats(s.store.serversDir)).find((h) => h.id === 'nginx-test');
      return hb && hb.inflight.a > 0 && hb.inflight.a === hb.inflight.b;
    });
    download.abort();
    await waitFor('the old workers to exit', () => Object.keys(s.companion.status().retired).length === 0, {
      timeout: 10_000,
    });
    await put(s, 'index.html', 'after-restart');
    assert.equal((await sync(s)).result, 'ok');
    assert.equal((await get(s.nginx.port, '/index.html')).body, 'after-restart');
  });

  it('a companion started beside an nginx that refuses its reload writes its heartbeat, holding both slots for the workers it found', async () => {
    await s.companion.close();
    // its predecessor's heartbeat aged out of the lease meanwhile
    await rm(heartbeatFile(s.store.serversDir, 'nginx-test'), { force: true });
    await s.nginx.breakConfig(true);
    try {
      s.companion = await NginxCompanion.start({
        ...companionOptions(s.store, s.nginx, s.logs),
        reloadTimeout: 500,
      });
      assert.match(s.companion.status().lastError ?? '', /refused|no new worker/);
      const hb = await waitFor('the heartbeat of nginx, whose reload was refused', async () =>
        (await readHeartbeats(s.store.serversDir)).find((h) => h.id === 'nginx-test'),
      );
      assert.ok(hb.inflight.a > 0 && hb.inflight.b > 0, `both slots held: ${JSON.stringify(hb.inflight)}`);
    } finally {
      await s.nginx.breakConfig(false);
    }
    await waitFor('the reload, tried again, to take', () => s.companion.status().lastError === null, {
      timeout: 10_000,
    });
    await put(s, 'index.html', 'after-refused-start');
    assert.equal((await sync(s)).result, 'ok');
    assert.equal((await get(s.nginx.port, '/index.html')).body, 'after-refused-start');
  });
});

describe('mirrorswap nginx: readiness for a load balancer in front of nginx', () => {
  let s: Setup;
  before(async () => {
    s = await setUp();
  });
  after(() => tearDown(s));

  it("ready while nginx serves an epoch; on a fleet host, not once the host's membership lapsed", async () => {
    assert.equal((await sync(s)).result, 'ok');
    await waitFor('ready', () => s.companion.readiness().ready);
    const stamp = (until: number) => ({
      format: 1 as const,
      fleet: 'www',
      host: 'web-1',
      pid: 1,
      member: true,
      until: new Date(until).toISOString(),
      fleetEpoch: null,
      reason: null,
      at: new Date().toISOString(),
    });
    await writeMembership(s.store.stateDir, stamp(Date.now() - 1));
    await waitFor('not ready', () => !s.companion.readiness().ready);
    assert.match(s.companion.readiness().reason ?? '', /fleet host web-1's fleet membership lapsed/);
    await writeMembership(s.store.stateDir, stamp(Date.now() + 60_000));
    await waitFor('ready again', () => s.companion.readiness().ready);
    await s.nginx.stop();
    await waitFor('not ready with nginx stopped', () => !s.companion.readiness().ready, { timeout: 5000 });
    assert.match(s.companion.readiness().reason ?? '', /nginx is not running/);
  });
});

describe('mirrorswap nginx against bad luck', () => {
  it('takes a FIFO where the pid file goes as no nginx, without hanging, and refuses a second companion', async () => {
    const store = await tempStore();
    try {
      await store.fill('a', { 'index.html': 'a' });
      await store.publish(1, 'a');
      const fifo = join(store.root, 'nginx.pid');
      execFileSync('mkfifo', [fifo]);
      const logs = memoryLogger();
      const options = {
        layout: store,
        includeFile: join(store.root, 'root.conf'),
        pidFile: fifo,
        reloadTimeout: 1000,
        retryInterval: 200,
        serverId: 'nginx-fifo',
        heartbeatInterval: 200,
        watch: 'native' as const,
        pollInterval: 1000,
        logger: logs,
      };
      // a read of the FIFO would block until a writer came: start must return regardless
      const companion = await NginxCompanion.start(options);
      try {
        assert.equal(companion.status().master, null);
        assert.ok(logs.lines.some((l) => l.level === 'warn' && /no running nginx master/.test(l.msg)));
        assert.match(await readFile(options.includeFile, 'utf8'), /^root .*;$/m);
        // a second companion on the same include would reload nginx and write the same heartbeat
        await assert.rejects(
          NginxCompanion.start({ ...options, logger: memoryLogger() }),
          (err: Error & { code?: string }) => {
            assert.equal(err.code, 'STORE_LOCKED');
            assert.match(err.message, /another mirrorswap nginx companion \(pid \d+/);
            return true;
          },
        );
      } finally {
        await companion.close();
      }
      // once the first has stopped, another may start
      const next = await NginxCompanion.start(options);
      await next.close();
    } finally {
      await store.dispose();
    }
  });
});
