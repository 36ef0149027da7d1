import assert from 'node:assert/strict';
import { META_DIR_NAME } from '../../src/store/store-layout.js';
import { readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { AgentStatus, SwapRecord } from '../../src/agent/agent.js';
import { readEpochFile, slotRoot } from '../../src/store/epoch-file.js';
import { type AgentProc, heldDownload, startAgentProc, startWebProc, writeTokenFile } from '../../testkit/cluster.js';
import { CLI, type CliProcess, cli, runCli } from '../../testkit/proc.js';
import { rawGet } from '../../testkit/server.js';
import { type TempStore, tempStore } from '../../testkit/store.js';
import { waitFor } from '../../testkit/wait.js';

const MB = 1024 * 1024;

async function status(agent: AgentProc): Promise<AgentStatus> {
  return (await agent.api<AgentStatus>('GET', '/v1/status')).body;
}

describe('swaps with real agent and web-server processes', () => {
  let store: TempStore;
  let agent: AgentProc;
  let web1: Awaited<ReturnType<typeof startWebProc>>;
  let web2: Awaited<ReturnType<typeof startWebProc>>;
  const procs: CliProcess[] = [];

  before(async () => {
    store = await tempStore();
    await store.fill('master', { 'big.bin': Buffer.alloc(24 * MB, 'A'), 'page.txt': 'A' });
    const { file, token } = await writeTokenFile(store);
    agent = await startAgentProc(store, file, token);
    web1 = await startWebProc(store, 'web-1');
    web2 = await startWebProc(store, 'web-2');
    procs.push(agent.proc, web1.proc, web2.proc);
  });
  after(async () => {
    for (const p of procs) await p.kill('SIGKILL');
    await store.dispose();
  });

  const publish = async (letter: string) => {
    const res = await fetch(`${agent.url}/v1/files/big.bin`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${agent.token}` },
      body: Buffer.alloc(24 * MB, letter),
    });
    assert.equal(res.status, 201);
    await agent.api('PUT', '/v1/files/page.txt', letter);
  };

  it('holds the swap until two servers drain their long downloads, each served whole from the old copy', async () => {
    await publish('B');
    const d1 = heldDownload(web1.port, '/big.bin');
    const d2 = heldDownload(web2.port, '/big.bin');
    await Promise.all([d1.started, d2.started]);
    const sync = agent.api<SwapRecord>('POST', '/v1/sync?wait=1');
    let syncAnswered = false;
    void sync.then(() => {
      syncAnswered = true;
    });
    await waitFor('the drain phase', async () => (await status(agent)).swapping?.phase === 'drain');
    // new requests already see the new copy on both servers while the old downloads continue
    await waitFor('web-1 on the new copy', async () => (await rawGet(web1.port, '/page.txt')).body.toString() === 'B');
    await waitFor('web-2 on the new copy', async () => (await rawGet(web2.port, '/page.txt')).body.toString() === 'B');
    const held = Date.now();
    // Both servers report the new epoch with their download still on the old copy: a drain that
    // followed its rule could not have ended, so the swap must still be draining.
    const before = (await status(agent)).swapping;
    await waitFor('both servers to report their download on the old copy', async () => {
      const servers = (await status(agent)).servers.filter((s) => s.id === 'web-1' || s.id === 'web-2');
      return (
        servers.length === 2 &&
        servers.every((s) => s.mounted !== null && s.inflight[s.mounted === 'a' ? 'b' : 'a'] === 1)
      );
    });
    assert.equal(before?.phase, 'drain');
    assert.equal(
      (await status(agent)).swapping?.phase,
      'drain',
      'the swap finished while downloads were still running',
    );
    assert.equal(syncAnswered, false, 'sync?wait=1 answered while downloads held the old copy');
    d1.resume();
    d2.resume();
    const [b1, b2] = await Promise.all([d1.done, d2.done]);
    for (const body of [b1, b2]) {
      assert.equal(body.length, 24 * MB);
      assert.equal(body.indexOf('B'), -1, 'a download mixed two copies');
    }
    const { status: code, body: record } = await sync;
    assert.equal(code, 200);
    assert.equal(record.result, 'ok');
    assert.ok((record.phases.drain ?? 0) * 1000 >= Date.now() - held - 2000);
  });

  it('drops a server killed mid-drain once its heartbeat goes stale', async () => {
    await publish('C');
    const d2 = heldDownload(web2.port, '/big.bin');
    await d2.started;
    const sync = agent.api<SwapRecord>('POST', '/v1/sync?wait=1');
    await waitFor('the drain phase', async () => (await status(agent)).swapping?.phase === 'drain');
    await web2.proc.kill('SIGKILL');
    d2.abort();
    const { body: record } = await sync;
    assert.equal(record.result, 'ok');
    assert.deepEqual(record.dropped, ['web-2']);
    await agent.proc.waitForLine(/server died during the drain/, 5000);
  });

  it('fails cleanly on a stuck server: the drain times out naming it, the next copy refuses the busy slot', async () => {
    await publish('D');
    const stuck = heldDownload(web1.port, '/big.bin');
    await stuck.started;
    const before = await status(agent);
    const first = await agent.api<SwapRecord>('POST', '/v1/sync?wait=1');
    assert.equal(first.status, 504);
    assert.equal(first.body.result, 'drain_timeout');
    assert.match(first.body.error?.message ?? '', /server web-1 .* still has 1 requests in flight on slot/);
    // the new epoch is published; the old slot is still held, so the next sync must not copy into it
    const second = await agent.api<SwapRecord>('POST', '/v1/sync?wait=1');
    assert.equal(second.status, 503);
    assert.equal(second.body.result, 'failed');
    assert.match(second.body.error?.message ?? '', /web-1 .* 1 requests in flight on slot/);
    const after = await status(agent);
    assert.equal(after.epoch, before.epoch + 1, 'the failed sync changed the mounted copy');
    stuck.resume();
    const body = await stuck.done;
    assert.equal(body.indexOf('D'), -1);
    const third = await agent.api<SwapRecord>('POST', '/v1/sync?wait=1');
    assert.equal(third.body.result, 'ok');
  });
});

describe('the agent process', () => {
  let store: TempStore;
  let token: { file: string; token: string };
  const procs: CliProcess[] = [];
  before(async () => {
    store = await tempStore();
    await store.fill('master', { 'a.txt': 'a' });
    token = await writeTokenFile(store);
  });
  after(async () => {
    for (const p of procs) await p.kill('SIGKILL');
    await store.dispose();
  });

  it('refuses to run a second agent on the same store, naming the first', async () => {
    const first = await startAgentProc(store, token.file, token.token);
    procs.push(first.proc);
    const second = await cli(['agent', '--store', store.root, '--listen', '127.0.0.1:0', '--token-file', token.file]);
    assert.equal(second.code, 1);
    assert.match(second.output, new RegExp(`another mirrorswap agent \\(pid ${first.proc.child.pid}`));
  });

  it('syncs on SIGHUP', async () => {
    const running = procs[0] as CliProcess;
    const epoch = (await readEpochFile(store.epochFile))?.epoch ?? 0;
    running.child.kill('SIGHUP');
    await waitFor('the epoch to advance', async () => ((await readEpochFile(store.epochFile))?.epoch ?? 0) > epoch);
  });

  it('shuts down on SIGTERM, releasing the store for the next agent', async () => {
    const running = procs[0] as CliProcess;
    await running.kill('SIGTERM');
    assert.equal(running.child.exitCode, 0);
    // the kernel's lock went with it: the next agent takes the store at once
    await assert.rejects(stat(`${store.lockFile}.owner`), { code: 'ENOENT' });
    const next = await startAgentProc(store, token.file, token.token);
    procs.push(next.proc);
    assert.equal((await next.api<{ ready: boolean }>('GET', '/v1/status')).status, 200);
  });
});

describe('the CLI', () => {
  let store: TempStore;
  let token: { file: string; token: string };
  let agent: AgentProc;
  before(async () => {
    store = await tempStore();
    await store.fill('master', { 'index.html': 'one' });
    token = await writeTokenFile(store);
  });
  after(async () => {
    await agent?.proc.kill('SIGKILL');
    await store.dispose();
  });

  it('init mirrors master into both slots, publishes epoch 1, and is idempotent', async () => {
    const first = await cli(['init', '--store', store.root]);
    assert.equal(first.code, 0, first.output);
    assert.match(first.output, /epoch 1 mounts slot a/);
    assert.equal(await readFile(join(store.slots.b, 'index.html'), 'utf8'), 'one');
    const again = await cli(['init', '--store', store.root]);
    assert.match(again.output, /already initialised \(epoch 1/);
  });

  it('names the flag in every usage error and exits 2', async () => {
    const cases: [string[], Record<string, string>, RegExp][] = [
      [
        ['agent', '--store', store.root, '--token-file', token.file, '--drain-timeout', 'soon'],
        {},
        /--drain-timeout soon: must be a duration/,
      ],
      [
        ['agent', '--store', store.root, '--token-file', token.file],
        { MIRRORSWAP_SERVER_TTL: 'never' },
        /--server-ttl never/,
      ],
      [['agent', '--store', store.root], {}, /--token-file is required/],
      [
        ['agent', '--store', store.root, '--token-file', '/nonexistent/token'],
        {},
        /--token-file \/nonexistent\/token: cannot read it/,
      ],
      [
        ['agent', '--store', store.root, '--token-file', token.file, '--listen', 'nowhere'],
        {},
        /--listen nowhere: must be HOST:PORT/,
      ],
      [['serve', '--store', store.root, '--watch', 'inotify'], {}, /--watch inotify: must be auto, native or poll/],
      [['sync', '--bogus'], {}, /Unknown option '--bogus'/],
      [
        ['agent', '--store', store.root, '--token-file', token.file, '--max-body', 'lots'],
        {},
        /--max-body lots: must be a size/,
      ],
    ];
    for (const [args, env, message] of cases) {
      const { code, output } = await cli(args, env);
      assert.equal(code, 2, `${args.join(' ')}: ${output}`);
      assert.match(output, message);
    }
  });

  it('prints help for each command with environment twins, and exits 0', async () => {
    const { code, output } = await cli(['agent', '--help']);
    assert.equal(code, 0);
    assert.match(output, /--drain-timeout DURATION .*env MIRRORSWAP_DRAIN_TIMEOUT; default 30s/);
  });

  it('takes flags from the environment, flags winning', async () => {
    agent = await startAgentProc(store, token.file, token.token);
    const env = { MIRRORSWAP_STORE: store.root, MIRRORSWAP_AGENT: agent.url, MIRRORSWAP_TOKEN_FILE: token.file };
    const viaEnv = await cli(['status'], env);
    assert.equal(viaEnv.code, 0, viaEnv.output);
    assert.match(viaEnv.output, /^epoch 1, slot a mounted/m);
    const flagWins = await cli(['status', '--agent', 'http://127.0.0.1:9'], env);
    assert.equal(flagWins.code, 2);
    assert.match(flagWins.output, /cannot reach the agent at http:\/\/127\.0\.0\.1:9/);
  });

  it('sync --wait, status, verify and rollback work end to end', async () => {
    const env = { MIRRORSWAP_STORE: store.root, MIRRORSWAP_AGENT: agent.url, MIRRORSWAP_TOKEN_FILE: token.file };
    await agent.api('PUT', '/v1/files/index.html', 'two');
    const sync = await cli(['sync', '--wait'], env);
    assert.equal(sync.code, 0, sync.output);
    assert.match(sync.output, /sync to epoch 2 \(slot a -> b\): ok/);
    assert.match(sync.output, /incremental copy: 1 files, 3 bytes/);
    const verify = await cli(['verify'], env);
    assert.equal(verify.code, 0, verify.output);
    assert.match(verify.output, /slot b \(epoch 2\) mirrors master/);
    const json = JSON.parse((await cli(['status', '--json'], env)).output) as AgentStatus;
    assert.equal(json.epoch, 2);
    assert.equal(json.mounted, 'b');
    const rollback = await cli(['rollback'], env);
    assert.equal(rollback.code, 0, rollback.output);
    const root = slotRoot(
      (await readEpochFile(store.epochFile)) as NonNullable<Awaited<ReturnType<typeof readEpochFile>>>,
      store.epochFile,
    );
    assert.equal(await readFile(join(root, 'index.html'), 'utf8'), 'one');
    assert.match((await cli(['status'], env)).output, /automatic syncs paused by rollback/);
    // nothing hidden left behind but the copy's content index
    assert.deepEqual(
      await readdir(store.slots.a).then((l) => l.filter((n) => n.startsWith('.') && n !== META_DIR_NAME)),
      [],
    );
  });

  it('sync --wait and verify end, with an error, when the agent is killed under them (with and without a terminal)', async () => {
    const other = await tempStore();
    try {
      await other.fill('master', { 'index.html': 'one' });
      const otherToken = await writeTokenFile(other);
      // `script` gives the command a terminal, where it also polls status for its progress line
      const onTerminal = (args: string[]) =>
        `exec script -qec '${[process.execPath, CLI, ...args].join(' ')}' /dev/null`;
      for (const args of [['sync', '--wait'], ['sync', '--wait', '--full'], ['verify']])
        for (const terminal of [false, true]) {
          const victim = await startAgentProc(other, otherToken.file, otherToken.token);
          const env = {
            MIRRORSWAP_STORE: other.root,
            MIRRORSWAP_AGENT: victim.url,
            MIRRORSWAP_TOKEN_FILE: otherToken.file,
          };
          // stopped first: the request is accepted by the kernel and never answered
          victim.proc.child.kill('SIGSTOP');
          const command = runCli(args, env, terminal ? { through: onTerminal(args) } : {});
          await new Promise((r) => setTimeout(r, 700));
          victim.proc.child.kill('SIGKILL');
          await victim.proc.exited();
          const code = await Promise.race([
            command.exited(),
            new Promise<'hung'>((r) => setTimeout(() => r('hung'), 8000)),
          ]);
          if (code === 'hung') await command.kill('SIGKILL');
          const what = `${args.join(' ')}${terminal ? ' on a terminal' : ''}`;
          assert.notEqual(code, 'hung', `${what} still runs after its agent was killed:\n${command.output()}`);
          assert.notEqual(code, 0, what);
          assert.match(command.output(), /cannot reach the agent/, what);
        }
    } finally {
      await other.dispose();
    }
  });
});
