/**
 * What precompressed variants cost, side by side in one run:
 *
 * 1. Compression alone, per coding and level, on the JS, CSS, JSON and SVG
 *    of the packages in node_modules (one thread): seconds per GiB of
 *    originals, and the size of the variants against the originals.
 * 2. A full copy (TreeCopier.mirrorAll, durable, into an empty slot) of a
 *    tree of text files without variants, with the content index alone
 *    (hashes for strong ETags, no type compressible), with variants, and
 *    with them reusing the other copy's (the second copy of `init`): times
 *    and ratios. Every round's copies stay until the last round is done
 *    (see the removal's comment). With
 *    `--a OLD/dist/src/cli/bin.js`, build A's copier in turns too, without
 *    variants and reusing this build's (each ratio to its own build's copy
 *    without variants).
 * 3. A journal sync of 10 changed text files (a whole swap over the API) by
 *    an agent without variants, one compressing at sync (--no-precompress)
 *    and one compressing as files land in master (the default), in turns:
 *    medians and ratios. With `--a OLD/dist/src/cli/bin.js`, a fourth agent
 *    in turns: that build's without variants (today's time, when OLD is the
 *    build before a change), each ratio given to it too; with
 *    `--a-variants` as well, that build's with variants compressed as files
 *    land (the two builds' own compared).
 *
 *   node dist/bench/variants.js [--files 4000] [--rounds 5] [--journal-rounds 15] [--journal-dirs 10|1] [--journal-only | --full-only] [--a OLD/dist/src/cli/bin.js [--a-variants]]
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, extname, join, resolve } from 'node:path';
import { brotliCompressSync, constants as zlib, gzipSync } from 'node:zlib';
import type { SwapRecord } from '../src/agent/agent.js';
import { TREE_DEFAULTS } from '../src/tree/tree-defaults.js';
import { TreeCopier } from '../src/tree/tree-copy.js';
import { walkPool } from '../src/tree/walk-pool.js';
import { flag, freePort, machine, median, stop, textFlag, textMaster, THIS_CLI } from './lib.js';

const FILES = flag('files', 4000);
const ROUNDS = flag('rounds', 5);
const JOURNAL_ROUNDS = flag('journal-rounds', 15);
/** The directories (of the 40, 100 files each) a journal sync's 10 files are spread over: 10, or 1. */
const JOURNAL_DIRS = flag('journal-dirs', 10);
/** Another build's CLI, whose agent without variants runs beside the others (`--a`). */
const BUILD_A = textFlag('a');
/** With `--a-variants`, build A's agent runs with variants compressed as files land (to compare the two builds' own). */
const A_VARIANTS = process.argv.includes('--a-variants');

/** The text assets of the installed packages, up to `max` bytes. */
function corpus(max = 48 * 1024 * 1024): Buffer[] {
  const out: Buffer[] = [];
  let total = 0;
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (total >= max) return;
      const path = join(dir, e.name);
      if (e.isDirectory()) walk(path);
      else if (e.isFile() && ['.js', '.css', '.json', '.svg', '.mjs', '.map'].includes(extname(e.name))) {
        const size = statSync(path).size;
        if (size < 1024 || size > 4 * 1024 * 1024) continue;
        out.push(readFileSync(path));
        total += size;
      }
    }
  };
  walk(new URL('../../node_modules', import.meta.url).pathname);
  return out;
}

function compressionTable(): void {
  const files = corpus();
  const bytes = files.reduce((s, f) => s + f.length, 0);
  console.log(
    `\n## Compression on one thread: ${files.length} files, ${(bytes / 2 ** 20).toFixed(1)} MiB of JS, CSS, JSON, SVG\n`,
  );
  console.log('| coding | level | s per GiB | variant / original |');
  console.log('| ------ | ----- | --------- | ------------------ |');
  const cases: [string, number, (b: Buffer) => Buffer][] = [
    ...[1, 4, 5, 6, 9, 11].map((q): [string, number, (b: Buffer) => Buffer] => [
      'br',
      q,
      (b) =>
        brotliCompressSync(b, {
          params: {
            [zlib.BROTLI_PARAM_QUALITY]: q,
            [zlib.BROTLI_PARAM_SIZE_HINT]: b.length,
            [zlib.BROTLI_PARAM_MODE]: zlib.BROTLI_MODE_TEXT,
          },
        }),
    ]),
    ...[1, 6, 9].map((l): [string, number, (b: Buffer) => Buffer] => ['gzip', l, (b) => gzipSync(b, { level: l })]),
  ];
  for (const [coding, level, fn] of cases) {
    // quality 10 and 11 are slow: a tenth of the corpus is enough to time them
    const sample = level >= 10 ? files.slice(0, Math.ceil(files.length / 10)) : files;
    const sampleBytes = sample.reduce((s, f) => s + f.length, 0);
    let out = 0;
    const t = performance.now();
    for (const f of sample) out += fn(f).length;
    const s = (performance.now() - t) / 1000;
    console.log(
      `| ${coding} | ${level} | ${((s * 2 ** 30) / sampleBytes).toFixed(0)} | ${(out / sampleBytes).toFixed(3)} |`,
    );
  }
}

/** A master of `FILES` text files of 2 to 30 KiB in 40 directories, and a few images. */
const makeMaster = (master: string): number => textMaster(master, FILES);

/** The copiers of a full-copy round: this build's, and with `--a` build A's (its own module, threads and all). */
async function copierBuilds(): Promise<{
  own: typeof TreeCopier;
  a: typeof TreeCopier | null;
  close(): Promise<void>;
}> {
  if (BUILD_A === undefined) return { own: TreeCopier, a: null, close: async () => {} };
  // OLD/dist/src/cli/bin.js -> OLD/dist/src/tree/
  const tree = join(dirname(dirname(resolve(BUILD_A))), 'tree');
  const a = (await import(join(tree, 'tree-copy.js'))) as { TreeCopier: typeof TreeCopier };
  const pool = (await import(join(tree, 'walk-pool.js'))) as { walkPool: typeof walkPool };
  return { own: TreeCopier, a: a.TreeCopier, close: () => pool.walkPool.close() };
}

type FullKind = 'none' | 'hashed' | 'variants' | 'reused' | 'A none' | 'A reused';

async function fullCopies(root: string): Promise<void> {
  const master = join(root, 'master');
  const bytes = makeMaster(master);
  const settings = TREE_DEFAULTS.variantSettings;
  const builds = await copierBuilds();
  const kinds: FullKind[] = builds.a
    ? ['none', 'hashed', 'variants', 'reused', 'A none', 'A reused']
    : ['none', 'hashed', 'variants', 'reused'];
  const times = Object.fromEntries(kinds.map((k) => [k, [] as number[]])) as Record<FullKind, number[]>;
  /** Each round's own ratio to its build's copy without variants: the machine's pace drifts between rounds. */
  const ratios = Object.fromEntries(kinds.map((k) => [k, [] as number[]])) as Record<FullKind, number[]>;
  const made: string[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const dirs = Object.fromEntries(kinds.map((k) => [k, join(root, `${k.replace(/\W+/g, '-')}${r}`)])) as Record<
      FullKind,
      string
    >;
    for (const d of Object.values(dirs)) mkdirSync(d);
    const run = async (kind: FullKind) => {
      const Copier = kind.startsWith('A ') ? (builds.a as typeof TreeCopier) : builds.own;
      const copier = new Copier(master, dirs[kind], {
        durable: true,
        ...(kind.endsWith('none') ? { variants: null } : {}),
        ...(kind === 'variants' ? { variants: { settings, other: null } } : {}),
        // the content index alone (each file hashed, no type compressible): what strong ETags cost
        ...(kind === 'hashed' ? { variants: { settings: { ...settings, types: [] }, other: null } } : {}),
        // both builds reuse the variants this build's copy made
        ...(kind.endsWith('reused') ? { variants: { settings, other: dirs.variants } } : {}),
      });
      const t = performance.now();
      await copier.mirrorAll();
      times[kind].push(performance.now() - t);
      if (kind.endsWith('reused') && copier.variantStats.compressed > 0) throw new Error('the reusing copy compressed');
    };
    // each build's copy without variants first and last in turns; a reusing one needs the variants made first
    const own: FullKind[] =
      r % 2 === 0 ? ['none', 'hashed', 'variants', 'reused'] : ['variants', 'reused', 'hashed', 'none'];
    const a: FullKind[] = builds.a ? (r % 2 === 0 ? ['A none', 'A reused'] : ['A reused', 'A none']) : [];
    const order: FullKind[] = r % 2 === 0 ? [...own, ...a] : [own[0] as FullKind, ...a, ...own.slice(1)];
    for (const kind of order) await run(kind);
    for (const kind of kinds) {
      const base = kind.startsWith('A ') ? 'A none' : 'none';
      ratios[kind].push((times[kind][r] as number) / (times[base][r] as number));
    }
    made.push(...Object.values(dirs));
  }
  await builds.close();
  // removed only now: ext4 passes over inodes freed in the last minutes when it allocates one (its
  // recently_deleted check, in the kernel's time), so files created after a large removal cost up
  // to ten times their usual time. Removing each round's copies before the next made every copy
  // slower by turns, and the ratios looked better than they are: what a file costs on its own hid
  // under what the allocator cost
  for (const d of made) await rm(d, { recursive: true, force: true });
  const mib = bytes / 2 ** 20;
  console.log(
    `\n## Full copy of ${FILES} text files (${mib.toFixed(0)} MiB) into an empty slot, durable, medians of ${ROUNDS}\n`,
  );
  console.log("| copy | ms | ratio to its build's no variants (median of the rounds' own) | added s per GiB |");
  console.log('| ---- | -- | ------------------------------------------------------------ | --------------- |');
  for (const kind of kinds) {
    const none = median(times[kind.startsWith('A ') ? 'A none' : 'none']);
    const t = median(times[kind]);
    console.log(
      `| ${kind} | ${t.toFixed(0)} | **${(t / none).toFixed(2)}x** (${median(ratios[kind]).toFixed(2)}x) | ${(((t - none) / 1000) * (1024 / mib)).toFixed(1)} |`,
    );
  }
}

interface Side {
  master: string;
  sync(): Promise<SwapRecord>;
  /** The agent's CPU time so far, all its threads, in ms (Linux: /proc; 10 ms ticks, summed over rounds). */
  cpuMs(): number;
  stop(): Promise<void>;
}

/** A process's user and system time in ms, from /proc/PID/stat (clock ticks of 10 ms); NaN elsewhere. */
function cpuMsOf(pid: number | undefined): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return Number.NaN;
  }
}

async function startSide(root: string, flagSet: string[], cli = THIS_CLI): Promise<Side> {
  const store = join(root, 'store');
  const master = join(store, 'master');
  makeMaster(master);
  const initFlags = flagSet.filter((f) => f !== '--no-precompress'); // an agent's flag
  const r = spawnSync(process.execPath, [cli, 'init', '--store', store, ...initFlags], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error('init failed');
  const token = randomBytes(24).toString('hex');
  writeFileSync(join(root, 'token'), token, { mode: 0o600 });
  const port = await freePort();
  const agent: ChildProcess = spawn(
    process.execPath,
    [cli, 'agent', '--store', store, '--listen', `127.0.0.1:${port}`, '--token-file', join(root, 'token'), ...flagSet],
    { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, MIRRORSWAP_LOG_LEVEL: 'warn' } },
  );
  process.once('exit', () => agent.kill('SIGKILL'));
  const base = `http://127.0.0.1:${port}`;
  const sync = async (): Promise<SwapRecord> => {
    const res = await fetch(`${base}/v1/sync?wait=1`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}` },
    });
    if (!res.ok) throw new Error(`sync: ${res.status} ${await res.text()}`);
    return (await res.json()) as SwapRecord;
  };
  for (;;) {
    if (agent.exitCode !== null) throw new Error(`the agent exited with ${agent.exitCode}`);
    const ok = await fetch(`${base}/readyz`).then(
      (res) => res.ok,
      () => false,
    );
    if (ok) break;
    await new Promise((res) => setTimeout(res, 20));
  }
  await sync();
  await sync();
  return { master, sync, cpuMs: () => cpuMsOf(agent.pid), stop: () => stop(agent) };
}

/** The agents compared: without variants, compressing at sync, and compressing as files land in master. */
const JOURNAL_SIDES = {
  off: ['--no-variants'],
  'at sync': ['--no-precompress'],
  precompressed: [],
  'build A': A_VARIANTS ? [] : ['--no-variants'],
} as const;
type JournalSide = keyof typeof JOURNAL_SIDES;

async function journalSyncs(root: string): Promise<void> {
  const kinds = (Object.keys(JOURNAL_SIDES) as JournalSide[]).filter((k) => BUILD_A || k !== 'build A');
  const sides = {} as Record<JournalSide, Side>;
  for (const kind of kinds) {
    const cli = kind === 'build A' ? BUILD_A : THIS_CLI;
    sides[kind] = await startSide(join(root, kind.replace(/\W+/g, '-')), [...JOURNAL_SIDES[kind]], cli);
  }
  const times = Object.fromEntries(kinds.map((k) => [k, [] as number[]])) as Record<JournalSide, number[]>;
  /** From the sync's start to the epoch that mounts the copy (its wait, copy and publish phases), by the agent's clock. */
  const toPublish = Object.fromEntries(kinds.map((k) => [k, [] as number[]])) as Record<JournalSide, number[]>;
  /** The agent's CPU time over the sync call (all threads), summed over the rounds. */
  const cpu = Object.fromEntries(kinds.map((k) => [k, 0])) as Record<JournalSide, number>;
  const made = Object.fromEntries(kinds.map((k) => [k, { compressed: 0, cached: 0, reused: 0 }])) as Record<
    JournalSide,
    { compressed: number; cached: number; reused: number }
  >;
  for (let r = 0; r < JOURNAL_ROUNDS; r++) {
    // each side goes first in turn
    const order = kinds.map((_, i) => kinds[(i + r) % kinds.length] as JournalSide);
    for (const kind of order) {
      const side = sides[kind];
      for (let k = 0; k < 10; k++) {
        // JS files only (every fourth), in 10 directories or in d0 alone
        const i = (r * 10 + k) * (JOURNAL_DIRS === 1 ? 40 : 4);
        let text = '';
        for (let n = 0; text.length < 20_000; n++) text += `export const v${r}_${n} = ${i * n}; // round ${r}\n`;
        writeFileSync(join(side.master, `d${i % 40}`, `m${i}.js`), text);
      }
      await new Promise((res) => setTimeout(res, 200)); // the watcher's events, as a writer's pause would give
      const cpuBefore = side.cpuMs();
      const t = performance.now();
      const record = await side.sync();
      times[kind].push(performance.now() - t);
      cpu[kind] += side.cpuMs() - cpuBefore;
      const { wait = 0, copy = 0, publish = 0 } = record.phases;
      toPublish[kind].push((wait + copy + publish) * 1000);
      made[kind] = {
        compressed: record.variants?.compressed ?? 0,
        cached: record.variants?.cached ?? 0,
        reused: record.variants?.reused ?? 0,
      };
    }
  }
  for (const side of Object.values(sides)) await side.stop();
  console.log(
    `\n## Journal sync of 10 changed JS files of 20 KB in ${JOURNAL_DIRS === 1 ? 'one directory' : '10 directories'}, medians of ${JOURNAL_ROUNDS}\n`,
  );
  console.log(
    "The whole swap (what the API answers after) and to the publish (the epoch that mounts the copy: what a web server switches on); each ratio as medians, and in brackets the median of the rounds' own ratios (the machine's pace drifts over a run).\n",
  );
  const withA = BUILD_A !== undefined;
  const ratios = (of: Record<JournalSide, number[]>, kind: JournalSide, base: JournalSide) =>
    `${(median(of[kind]) / median(of[base])).toFixed(2)}x (${median(of[kind].map((ms, r) => ms / (of[base][r] as number))).toFixed(2)}x)`;
  console.log(
    `| agent | swap ms | of no variants |${withA ? ' of build A |' : ''} to publish ms | of no variants |${withA ? ' of build A |' : ''} agent CPU ms a sync | variants compressed / from the cache / reused, last sync |`,
  );
  console.log(`| --- | --- | --- |${withA ? ' --- |' : ''} --- | --- |${withA ? ' --- |' : ''} --- | --- |`);
  for (const kind of kinds) {
    const m = made[kind];
    const label =
      kind === 'build A' ? (A_VARIANTS ? 'build A, compressed as they landed' : 'build A, no variants') : kind;
    const cells = [label, median(times[kind]).toFixed(1), `**${ratios(times, kind, 'off')}**`];
    if (withA) cells.push(ratios(times, kind, 'build A'));
    cells.push(median(toPublish[kind]).toFixed(1), `**${ratios(toPublish, kind, 'off')}**`);
    if (withA) cells.push(ratios(toPublish, kind, 'build A'));
    cells.push((cpu[kind] / JOURNAL_ROUNDS).toFixed(1));
    cells.push(
      kind === 'off' || (kind === 'build A' && !A_VARIANTS) ? '-' : `${m.compressed} / ${m.cached} / ${m.reused}`,
    );
    console.log(`| ${cells.join(' | ')} |`);
  }
}

async function main(): Promise<void> {
  console.log(`# Variants: ${machine()}`);
  const journalOnly = process.argv.includes('--journal-only');
  const fullOnly = process.argv.includes('--full-only');
  if (!journalOnly && !fullOnly) compressionTable();
  const root = await mkdtemp(join(tmpdir(), 'mirrorswap-variants-bench-'));
  try {
    if (!journalOnly) await fullCopies(join(root, 'full'));
    await walkPool.close();
    if (!fullOnly) await journalSyncs(join(root, 'journal'));
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

await main();
