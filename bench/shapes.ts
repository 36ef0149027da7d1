/**
 * Every full operation of the agent against the best standard tool, on trees
 * of different shapes, side by side in one run per shape:
 *
 * - full durable copy: `mirrorswap init` (both slots) against two `cp -a`,
 *   each followed by one syncfs (`sync -f`);
 * - full compare with nothing changed: `sync?full=1` (a whole swap) against
 *   `rsync -a --delete` (its quick check: size and mtime);
 * - journal-driven sync of 10 changed files against `rsync -a --delete`;
 * - agent start to ready (master walked and watched), and to master compared;
 * - agent resident memory when ready, after `--syncs` swaps of 10 changes and
 *   as many more, and the highest reading (after each swap).
 *
 *   node dist/bench/shapes.js [--shapes 100k,60k,300k,1m,2g] [--rounds 3] [--syncs 100] [--copy-rounds 3]
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import { mkdtemp, open, rename, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { SwapRecord } from '../src/agent/agent.js';
import { storeLayout } from '../src/store/store-layout.js';
import { freePort, machine, requireCommand, rss, THIS_CLI, timed } from './lib.js';

interface Shape {
  name: string;
  what: string;
  /**
   * Rounds of the full durable copy (each deletes the last round's copies
   * first): one at a million files, whose delete takes minutes and slows the
   * disk for minutes after.
   */
  copyRounds?: number;
  /** Relative paths of the files, and each one's size. */
  files: () => Iterable<[string, number]>;
}

function* grid(top: number, sub: number, perDir: number, size: number): Iterable<[string, number]> {
  for (let t = 0; t < top; t++)
    for (let s = 0; s < sub; s++)
      for (let f = 0; f < perDir; f++) yield [sub > 1 ? `d${t}/s${s}/f${f}.dat` : `d${t}/f${f}.dat`, size];
}

const SHAPES: Shape[] = [
  { name: '100k', what: '100,000 files of 4 KiB in 100 dirs', files: () => grid(100, 1, 1000, 4096) },
  { name: '60k', what: '60,000 files of 4 KiB in 3,000 dirs of 20', files: () => grid(3000, 1, 20, 4096) },
  { name: '300k', what: '300,000 files of 2 KiB in 3,000 dirs', files: () => grid(3000, 1, 100, 2048) },
  {
    name: '1m',
    what: '1,000,000 files of 512 B in 50,000 dirs, 2 levels deep',
    copyRounds: 1,
    files: () => grid(250, 200, 20, 512),
  },
  {
    name: '2g',
    what: 'one 2 GiB file beside 10,000 files of 4 KiB',
    files: function* () {
      yield ['big/video.bin', 2 * 2 ** 30];
      yield* grid(100, 1, 100, 4096);
    },
  },
];

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? dflt : (process.argv[i + 1] as string);
};
const chosen = arg('shapes', '100k,60k,300k,1m,2g').split(',');
const rounds = Number(arg('rounds', '3'));
const syncs = Number(arg('syncs', '100'));
const copyRounds = Number(arg('copy-rounds', '3'));
const CHANGED = 10;

function run(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'ignore', 'inherit'] });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}`);
}

/**
 * The least a durable swap of CHANGED files must wait for on this disk, done
 * by hand in the rsync copy (same file system, same tree), each step as
 * parallel as it can be: the files written to temp files and fsynced, all at
 * once, each renamed over the old one; their directories fsynced, all at
 * once; then one small file written, fsynced, renamed and its directory
 * fsynced (the epoch file). Nothing else: no journal, no positions, no check,
 * no request. The median of 7 rounds.
 */
async function durableFloorMs(root: string, paths: readonly string[]): Promise<number> {
  const fsyncPath = async (p: string) => {
    const handle = await open(p, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  };
  const writeDurably = async (file: string, data: Uint8Array | string) => {
    const handle = await open(file, 'w');
    try {
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
  };
  const small = paths.filter((p) => !p.startsWith('big/'));
  const runs: number[] = [];
  for (let r = 0; r < 7; r++) {
    const chosen = small.slice(r * CHANGED, (r + 1) * CHANGED);
    const t = performance.now();
    await Promise.all(
      chosen.map(async (rel, i) => {
        const tmp = join(root, `.floor-${i}.tmp`);
        await writeDurably(tmp, randomBytes(1024));
        await rename(tmp, join(root, rel));
      }),
    );
    await Promise.all([...new Set(chosen.map((rel) => dirname(join(root, rel))))].map(fsyncPath));
    const epochTmp = join(root, '.floor-epoch.tmp');
    await writeDurably(epochTmp, '{"epoch":1}');
    await rename(epochTmp, join(root, '.floor-epoch'));
    await fsyncPath(root);
    runs.push(performance.now() - t);
  }
  await rm(join(root, '.floor-epoch'));
  return median(runs);
}

async function timedAsync(label: string, fn: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await fn();
  const ms = performance.now() - t;
  console.error(`    ${label}: ${ms.toFixed(0)} ms`);
  return ms;
}

/** Write the shape's files with blocking calls (the fastest way from Node), one random block reused. */
function build(master: string, shape: Shape): { files: number; dirs: number; bytes: number; paths: string[] } {
  const block = randomBytes(1 << 20);
  const dirs = new Set<string>();
  const paths: string[] = [];
  let bytes = 0;
  for (const [rel, size] of shape.files()) {
    const dir = join(master, rel.slice(0, rel.lastIndexOf('/')));
    if (!dirs.has(dir)) {
      mkdirSync(dir, { recursive: true });
      dirs.add(dir);
    }
    const fd = openSync(join(master, rel), 'w');
    for (let done = 0; done < size; ) {
      const n = writeSync(fd, block, (done * 7) % 4096, Math.min(size - done, block.length - 4096));
      done += n;
    }
    closeSync(fd);
    paths.push(rel);
    bytes += size;
  }
  return { files: paths.length, dirs: dirs.size, bytes, paths };
}

interface Agent {
  child: ChildProcess;
  base: string;
  token: string;
}

async function startAgent(store: string, tokenFile: string): Promise<{ agent: Agent; readyMs: number }> {
  const port = await freePort();
  const t = performance.now();
  const child = spawn(
    process.execPath,
    [THIS_CLI, 'agent', '--store', store, '--listen', `127.0.0.1:${port}`, '--token-file', tokenFile],
    { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, MIRRORSWAP_LOG_LEVEL: 'warn' } },
  );
  const base = `http://127.0.0.1:${port}`;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the agent exited with ${child.exitCode}`);
    const ok = await fetch(`${base}/readyz`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  return { agent: { child, base, token: readFileSync(tokenFile, 'utf8').trim() }, readyMs: performance.now() - t };
}

async function call<T>(agent: Agent, method: string, path: string, body?: Buffer): Promise<T> {
  const send = () =>
    fetch(`${agent.base}${path}`, {
      method,
      headers: { authorization: `Bearer ${agent.token}` },
      ...(body ? { body } : {}),
    });
  // A kept-alive connection the server closed just as it was reused: sent again (a sync asked
  // twice is one more sync with nothing to copy; a PUT writes the same bytes again).
  const res = await send().catch((err: Error & { cause?: { code?: string } }) => {
    if (err.cause?.code !== 'UND_ERR_SOCKET') throw err;
    return send();
  });
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
  return (await res.json()) as T;
}

interface Status {
  changeTracking: { complete: boolean; lastReconcile: unknown };
  swapping: unknown;
}

async function untilCompared(agent: Agent): Promise<void> {
  for (;;) {
    const s = await call<Status>(agent, 'GET', '/v1/status');
    if (s.changeTracking.lastReconcile && !s.swapping) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Trees made, removed at the very end: on a disk mounted with `discard`, a large delete slows what follows. */
const made: string[] = [];

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
const mib = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;
/** "12.3 s", or "12.3 s (11.9–13.0)" over several runs: the median, then the range. */
const seconds = (runs: number[]) => {
  const s = (ms: number) => (ms / 1000).toFixed(1);
  return runs.length > 1
    ? `${s(median(runs))} s (${s(Math.min(...runs))}–${s(Math.max(...runs))})`
    : `${s(runs[0] as number)} s`;
};

async function measure(shape: Shape): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), `mirrorswap-shapes-${shape.name}-`));
  const store = join(root, 'store');
  const master = join(store, 'master');
  const copy = join(root, 'cp');
  console.error(`${shape.name}: ${shape.what}`);
  let t = performance.now();
  const tree = build(master, shape);
  run('sync', ['-f', master]);
  console.error(
    `    built in ${((performance.now() - t) / 1000).toFixed(1)} s: ${tree.files} files, ${tree.dirs} dirs`,
  );

  // Full durable copy: each round, cp -a + syncfs once before and once after init (both
  // slots), so that neither side always runs first. A round after the first deletes the last
  // round's copies, then flushes and waits: on a disk mounted with `discard`, a large delete
  // slows every write that follows for a while. The ratio is the median of the rounds' own.
  const cpOnce = (to: string) =>
    timed('cp -a + sync -f', () => {
      run('cp', ['-a', master, to]);
      run('sync', ['-f', to]);
    });
  const layout = storeLayout(store);
  const copyRoundsHere = shape.copyRounds ?? copyRounds;
  const initRuns: number[] = [];
  const cpRuns: number[] = [];
  for (let r = 0; r < copyRoundsHere; r++) {
    if (r > 0) {
      for (const dir of [layout.slots.a, layout.slots.b, layout.stateDir, layout.serversDir, layout.epochFile])
        await rm(dir, { recursive: true, force: true });
      await rm(join(root, 'cp1'), { recursive: true });
      await rm(copy, { recursive: true });
      run('sync', ['-f', root]);
      await new Promise((resolve) => setTimeout(resolve, 5000));
    }
    const before = cpOnce(join(root, 'cp1'));
    initRuns.push(
      timed('mirrorswap init (both slots, durable)', () => run(process.execPath, [THIS_CLI, 'init', '--store', store])),
    );
    cpRuns.push(before + cpOnce(copy));
  }
  const copyRatios = initRuns.map((ms, i) => ms / (cpRuns[i] as number));

  const tokenFile = join(root, 'token');
  writeFileSync(tokenFile, randomBytes(24).toString('hex'), { mode: 0o600 });
  const { agent, readyMs } = await startAgent(store, tokenFile);
  process.once('exit', () => agent.child.kill('SIGKILL')); // never left behind by a failed run
  console.error(`    agent start to ready: ${readyMs.toFixed(0)} ms`);
  t = performance.now();
  await untilCompared(agent);
  const comparedMs = readyMs + performance.now() - t;
  const rssReady = rss(agent.child.pid);
  await call(agent, 'POST', '/v1/sync?wait=1');
  await call(agent, 'POST', '/v1/sync?wait=1');

  const rsync = () => run('rsync', ['-a', '--delete', `${master}/`, `${copy}/`]);
  rsync();
  const fullMs: number[] = [];
  /** The copy phase of each swap: the comparison (and copy) itself, without the publish and drain. */
  const fullCopyMs: number[] = [];
  /** A journal sync's time until servers are told to switch: its wait, copy and publish. */
  const incPublishMs: number[] = [];
  const rsyncFullMs: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const agentFirst = r % 2 === 0;
    if (!agentFirst) rsyncFullMs.push(timed('rsync -a --delete, nothing changed', rsync));
    fullMs.push(
      await timedAsync('sync?full=1, nothing changed', async () => {
        const record = await call<SwapRecord>(agent, 'POST', '/v1/sync?wait=1&full=1');
        fullCopyMs.push((record.phases.copy ?? 0) * 1000);
      }),
    );
    if (agentFirst) rsyncFullMs.push(timed('rsync -a --delete, nothing changed', rsync));
  }

  let round = 0;
  const change = async () => {
    round++;
    for (let k = 0; k < CHANGED; k++) {
      const rel = tree.paths[(round * 7919 + k * 104729) % tree.paths.length] as string;
      if (rel.startsWith('big/')) continue;
      await call(agent, 'PUT', `/v1/files/${rel}`, randomBytes(1024));
    }
  };
  const incMs: number[] = [];
  const rsyncIncMs: number[] = [];
  for (let r = 0; r < rounds; r++) {
    await change();
    incMs.push(
      await timedAsync(`sync, ${CHANGED} changed`, async () => {
        const record = await call<SwapRecord>(agent, 'POST', '/v1/sync?wait=1');
        const p = record.phases;
        incPublishMs.push(((p.wait ?? 0) + (p.copy ?? 0) + (p.publish ?? 0)) * 1000);
      }),
    );
    rsyncIncMs.push(timed(`rsync -a --delete, ${CHANGED} changed`, rsync));
  }
  const floorMs = await durableFloorMs(copy, tree.paths);

  // memory: `syncs` swaps to reach a steady state, then as many again, which must not grow it;
  // read after every swap, so a peak between the two readings is seen too
  let rssMax = rssReady;
  const swaps = async () => {
    for (let i = 0; i < syncs; i++) {
      await change();
      await call(agent, 'POST', '/v1/sync?wait=1');
      rssMax = Math.max(rssMax, rss(agent.child.pid));
    }
  };
  await swaps();
  const rssBefore = rss(agent.child.pid);
  await swaps();
  const rssAfter = rss(agent.child.pid);
  console.error(
    `    agent RSS: ready ${mib(rssReady)}, after ${syncs} syncs ${mib(rssBefore)}, after ${syncs} more ${mib(rssAfter)}, highest ${mib(rssMax)}`,
  );
  const exited = new Promise((r) => agent.child.once('exit', r));
  agent.child.kill('SIGTERM');
  await exited;
  made.push(root);

  const ratio = (x: number, y: number) => `**${(x / y).toFixed(2)}x**`;
  const inc = median(incMs);
  const rsInc = median(rsyncIncMs);
  const full = median(fullMs);
  const rsFull = median(rsyncFullMs);
  return [
    `| ${shape.name} | ${tree.files} / ${tree.dirs} / ${mib(tree.bytes)}`,
    `${seconds(initRuns)} / ${seconds(cpRuns)} = **${median(copyRatios).toFixed(2)}x**${copyRoundsHere > 1 ? ` (${copyRatios.map((x) => x.toFixed(2)).join(', ')})` : ''}`,
    `${full.toFixed(0)} (copy phase ${median(fullCopyMs).toFixed(0)}) / ${rsFull.toFixed(0)} ms = ${ratio(full, rsFull)} (${ratio(median(fullCopyMs), rsFull)})`,
    `${inc.toFixed(0)} (to publish ${median(incPublishMs).toFixed(1)}) / ${rsInc.toFixed(0)} ms = **1/${(rsInc / inc).toFixed(0)}** (1/${(rsInc / median(incPublishMs)).toFixed(0)}); durable floor ${floorMs.toFixed(1)} ms`,
    `${(readyMs / 1000).toFixed(2)} s / ${(comparedMs / 1000).toFixed(1)} s`,
    `${mib(rssReady)} / ${mib(rssBefore)} → ${mib(rssAfter)} / ${mib(rssMax)} |`,
  ].join(' | ');
}

async function main(): Promise<void> {
  requireCommand('rsync');
  process.umask(0o022);
  const rows: string[] = [];
  for (const name of chosen) {
    const shape = SHAPES.find((s) => s.name === name);
    if (!shape) throw new Error(`unknown shape ${name}: one of ${SHAPES.map((s) => s.name).join(', ')}`);
    rows.push(await measure(shape));
  }
  console.log(
    `machine: ${machine()}; full copies: ${copyRounds} rounds (1 at 1m), median of the rounds' ratios; compares and syncs: ${rounds} rounds (medians); ${syncs} syncs of ${CHANGED} changes for memory\n`,
  );
  console.log(
    '| shape | files / dirs / bytes | full durable copy: init (2 slots) / 2 × (cp -a + syncfs) | full compare, nothing changed: whole swap (copy phase) / rsync | sync of 10 changes: whole swap (to publish) / rsync; durable floor | start: ready / master compared | agent RSS: ready / after N syncs → after N more / highest |',
  );
  console.log('|---|---|---|---|---|---|---|');
  for (const row of rows) console.log(row);
  for (const root of made) await rm(root, { recursive: true });
}

await main();
