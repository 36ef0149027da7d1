/**
 * What keeping more releases costs (`--keep`): the same tree and the same
 * changes in a store keeping 2 releases (today's two copies, full copies)
 * and one keeping 5 (copies sharing unchanged files by hard link), side by
 * side in one run. A tree of `--files` files of 2 KiB (not compressible:
 * no variants) in directories of 100; `--releases` releases, each rewriting
 * `--changed` percent of the files in master, then one sync each (the agent
 * in this process, durable as by default). Reports:
 *
 * - init: mirroring master into the store's first two copies, `--init-rounds`
 *   times per side, the sides in turns (the disk's writeback of one must not
 *   fall on the other), the tree copied anew and synced before each;
 * - sync: the median of the last releases' syncs (copy to publish and the
 *   drain, no web server), once every copy holds a release; the two stores
 *   take each release in turns, so the pairs compare like with like;
 * - disk: every copy of the store counted once per inode (`du -s -B1` of all
 *   of them in one call), against one tree plus what the retained releases
 *   changed.
 *
 *   node dist/bench/keep-releases.js [--files 100000] [--changed 1] [--releases 12] [--init-rounds 3]
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent } from '../src/agent/agent.js';
import { type StoreLayout, keptSlots, storeLayout } from '../src/store/store-layout.js';
import { startApp } from '../testkit/app.js';
import { memoryLogger } from '../testkit/logger.js';
import { rawGet } from '../testkit/server.js';
import { flag, machine, percentile } from './lib.js';

const FILES = flag('files', 100_000);
const CHANGED_PCT = flag('changed', 1);
const RELEASES = Math.max(8, flag('releases', 12));
const ROLLBACKS = flag('rollbacks', 30);
const INIT_ROUNDS = flag('init-rounds', 3);
const PER_DIR = 100;
const FILE_BYTES = 2048;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

/** Bytes on disk of every path given, each inode counted once. */
function diskBytes(paths: string[]): number {
  const r = spawnSync('du', ['-s', '-c', '-B1', ...paths], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`du: ${r.stderr}`);
  const total = r.stdout.trim().split('\n').at(-1) as string;
  return Number(total.split(/\s+/)[0]);
}

function writeTree(master: string): void {
  for (let i = 0; i < FILES; i++) {
    const dir = join(master, `d${Math.floor(i / PER_DIR)}`);
    if (i % PER_DIR === 0) mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, `f${i % PER_DIR}.dat`), randomBytes(FILE_BYTES));
  }
}

/** Rewrite a different `CHANGED_PCT` percent of the files each release (so changes of releases add up). */
function change(master: string, release: number): number {
  const n = Math.round((FILES * CHANGED_PCT) / 100);
  for (let k = 0; k < n; k++) {
    const i = (release * n + k) % FILES;
    writeFileSync(join(master, `d${Math.floor(i / PER_DIR)}`, `f${i % PER_DIR}.dat`), randomBytes(FILE_BYTES));
  }
  return n;
}

/**
 * Roll back and forth between the two newest releases, `ROLLBACKS` times:
 * from the request to the first answer a web server (mirrorStatic, polling
 * as fast as it answers) gives from the release rolled back to.
 */
async function rollbacks(agent: Agent, layout: StoreLayout): Promise<number[]> {
  const web = await startApp({
    store: layout.root,
    serverId: 'bench-web',
    heartbeatInterval: 100,
    releaseHeader: 'X-Release',
  });
  const out: number[] = [];
  try {
    for (let i = 0; i < ROLLBACKS; i++) {
      const to = `r${i % 2 === 0 ? RELEASES - 1 : RELEASES}`;
      const t = performance.now();
      const done = agent.rollback(to);
      for (;;) {
        const res = await rawGet(web.port, '/d0/f0.dat');
        if (res.headers['x-release'] === to) break;
      }
      out.push(performance.now() - t);
      const record = await done;
      if (record.result !== 'ok') throw new Error(`rollback to ${to}: ${JSON.stringify(record.error)}`);
    }
  } finally {
    await web.close();
  }
  return out;
}

interface Result {
  keep: number;
  initMs: number;
  syncMs: number[];
  /** Each phase's median over the same syncs, ms. */
  phases: Record<string, number>;
  /** Rollback to a retained release: the request to the first response from it, ms. */
  rollbackMs: number[];
  disk: number;
  oneTree: number;
  changedBytes: number;
}

/** Time `Agent.start` of a new store of `keep` over a copy of `tree` (its init), the tree's writeback done first. */
async function initTime(keep: number, tree: string): Promise<number> {
  const root = await mkdtemp(join(tmpdir(), `mirrorswap-init${keep}-`));
  try {
    const layout = storeLayout(join(root, 'store'));
    mkdirSync(layout.root, { recursive: true });
    spawnSync('cp', ['-a', tree, layout.master]);
    spawnSync('sync');
    const started = performance.now();
    const agent = await Agent.start({ layout, logger: memoryLogger(), keep, verifyIntervalMs: 0 });
    const ms = performance.now() - started;
    await agent.close();
    return ms;
  } finally {
    await rm(root, { recursive: true, force: true });
    spawnSync('sync');
  }
}

/** One store under test: its agent, and what its syncs took. */
interface Side {
  keep: number;
  root: string;
  layout: StoreLayout;
  agent: Agent;
  syncMs: number[];
  phases: Record<string, number>[];
  changedFiles: number;
}

async function openSide(keep: number): Promise<Side> {
  const root = await mkdtemp(join(tmpdir(), `mirrorswap-keep${keep}-`));
  const layout: StoreLayout = storeLayout(join(root, 'store'));
  writeTree(layout.master);
  // the tree's writeback is not the init's to pay, nor the other side's
  spawnSync('sync');
  const agent = await Agent.start({ layout, logger: memoryLogger(), keep, verifyIntervalMs: 0 });
  return { keep, root, layout, agent, syncMs: [], phases: [], changedFiles: 0 };
}

/** Release `r` on `side`: the same files rewritten as on the other side, then one sync. */
async function releaseOn(side: Side, r: number): Promise<void> {
  const n = change(side.layout.master, r);
  const t = performance.now();
  const record = await side.agent.requestSync({ reason: 'bench', release: `r${r}` });
  if (record.result !== 'ok') throw new Error(`keep ${side.keep}: sync ${r}: ${JSON.stringify(record.error)}`);
  side.syncMs.push(performance.now() - t);
  side.phases.push(Object.fromEntries(Object.entries(record.phases).map(([k, v]) => [k, (v as number) * 1000])));
  // the releases the copies hold: the mounted one and keep-1 before it
  if (r > RELEASES - side.keep) side.changedFiles += n;
}

async function closeSide(side: Side): Promise<Result> {
  const { keep, layout } = side;
  const rollbackMs = keep > 2 ? await rollbacks(side.agent, layout) : [];
  await side.agent.close();
  const slots = keptSlots(keep).map((s) => layout.slots[s]);
  // syncs once every copy of the keep-5 side holds a release (the same ones on both sides)
  const steady = (xs: number[]) => xs.slice(6);
  const result: Result = {
    keep,
    initMs: 0,
    syncMs: steady(side.syncMs),
    phases: Object.fromEntries(
      Object.keys(side.phases.at(-1) ?? {}).map((k) => [k, median(steady(side.phases.map((p) => p[k] ?? 0)))]),
    ),
    rollbackMs,
    disk: diskBytes(slots),
    oneTree: diskBytes([layout.master]),
    changedBytes: side.changedFiles * 4096, // each 2 KiB file takes a 4 KiB block
  };
  await rm(side.root, { recursive: true, force: true });
  return result;
}

console.log(`# keep-releases: ${FILES} files of 2 KiB, ${CHANGED_PCT}% changed per release, ${RELEASES} releases`);
console.log(`# ${machine()}`);
const tree = await mkdtemp(join(tmpdir(), 'mirrorswap-keep-tree-'));
writeTree(tree);
const inits: Record<number, number[]> = { 2: [], 5: [] };
for (let round = 0; round < INIT_ROUNDS; round++) {
  for (const keep of round % 2 === 0 ? [2, 5] : [5, 2]) inits[keep]?.push(await initTime(keep, tree));
}
await rm(tree, { recursive: true, force: true });
// both stores take the same releases in turns (who goes first alternating): one's writeback and the
// machine's drift fall on both alike
const sides = [await openSide(2), await openSide(5)];
for (let r = 1; r <= RELEASES; r++) {
  for (const side of r % 2 === 0 ? sides : [...sides].reverse()) await releaseOn(side, r);
}
const two = await closeSide(sides[0] as Side);
const five = await closeSide(sides[1] as Side);
two.initMs = median(inits[2] ?? []);
five.initMs = median(inits[5] ?? []);
const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
for (const r of [two, five]) {
  console.log(
    `keep ${r.keep}: init ${(r.initMs / 1000).toFixed(1)} s, sync median ${median(r.syncMs).toFixed(0)} ms (of ${r.syncMs.length}: ${Object.entries(
      r.phases,
    )
      .map(([k, v]) => `${k} ${v.toFixed(0)}`)
      .join(
        ', ',
      )}), disk ${mib(r.disk)} for ${r.keep} copies (one tree ${mib(r.oneTree)}, changed in the releases kept ${mib(r.changedBytes)})`,
  );
}
const rb = [...five.rollbackMs].sort((x, y) => x - y);
console.log(
  `rollback to a retained release (keep 5), request to the first answer from it: p50 ${percentile(rb, 50).toFixed(1)} ms, p99 ${percentile(rb, 99).toFixed(1)} ms, max ${(rb.at(-1) ?? 0).toFixed(1)} ms (${rb.length})`,
);
console.log(
  `init (median of ${INIT_ROUNDS}, in turns) keep 2: ${(inits[2] ?? []).map((x) => (x / 1000).toFixed(1)).join(', ')} s; keep 5: ${(inits[5] ?? []).map((x) => (x / 1000).toFixed(1)).join(', ')} s`,
);
console.log(`init keep 5 / keep 2: ${(five.initMs / two.initMs).toFixed(2)}x`);
const pairs = five.syncMs.map((x, i) => x / (two.syncMs[i] ?? Number.NaN));
console.log(
  `sync keep 5 / keep 2: ${(median(five.syncMs) / median(two.syncMs)).toFixed(2)}x (medians); the same release's syncs paired: ${pairs.map((x) => x.toFixed(2)).join(', ')}`,
);
console.log(
  `disk keep 5 / (one tree + changed bytes kept): ${(five.disk / (five.oneTree + five.changedBytes)).toFixed(3)}x; keep 2 / one tree: ${(two.disk / two.oneTree).toFixed(2)}x`,
);
