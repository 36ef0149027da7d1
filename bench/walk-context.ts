/**
 * What the size of a walk job's context costs a full copy: a copy with
 * variants reusing the other copy's (TreeCopier.mirrorAll into an emptied
 * slot, the derive fused into the clone), with the variant cache's view
 * empty and holding `--entries` entries (the agent's cap is 20,000: an hour
 * of writes with no sync). The view goes to the walk threads in the clone's
 * context. Side by side in one process, in turns, each first in turn: this
 * build and, with `--a OLD/dist`, another. Per side the median wall time
 * and the ratio of the large view to the empty one (medians, and in brackets
 * the median of each round's own ratio).
 *
 *   node dist/bench/walk-context.js [--files 2000] [--entries 20000] [--rounds 9] [--a OLD/dist] [--durable 1]
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { flag, machine, median, textFlag, textMaster } from './lib.js';

const FILES = flag('files', 2000);
const ENTRIES = flag('entries', 20_000);
const ROUNDS = flag('rounds', 9);
const DURABLE = flag('durable', 0) === 1;
/** Rounds left out of the medians: the threads and the code warm up. */
const WARMUP = 2;
const BUILD_A = textFlag('a');
const THIS_DIST = new URL('..', import.meta.url).pathname;

interface Side {
  label: string;
  copy(): Promise<number>;
  ms: number[];
}

/** A view of `n` entries the copy never takes (no file has their hashes): only their weight counts. */
function view(dir: string, n: number) {
  const entries: Record<string, { size: number; sha256: string }> = {};
  for (let i = 0; i < n; i++) {
    const sha = `${i.toString(36).padStart(8, '0')}${'x'.repeat(35)}`;
    entries[`${sha}.br5`] = { size: 1000 + i, sha256: sha };
  }
  return { dir, entries };
}

/** One build's copier: a slot derived once (the other copy), and one emptied and copied whole each round. */
async function build(dist: string, name: string, master: string, root: string): Promise<Side[]> {
  const load = (rel: string) => import(pathToFileURL(join(dist, rel)).href);
  const { TreeCopier } = await load('src/tree/tree-copy.js');
  const { TREE_DEFAULTS } = await load('src/tree/tree-defaults.js');
  const settings = TREE_DEFAULTS.variantSettings;
  const other = join(root, `${name}-other`);
  const cacheDir = join(root, `${name}-cache`);
  mkdirSync(other);
  mkdirSync(cacheDir);
  const first = new TreeCopier(master, other, { durable: false, variants: { settings, other: null, cache: null } });
  await first.mirrorAll();
  await first.clearTemp();
  const side = (label: string, cache: ReturnType<typeof view>): Side => {
    const slot = join(root, `${name}-${label.replace(/\W+/g, '-')}`);
    return {
      label: `${name}, ${label}`,
      ms: [],
      async copy() {
        rmSync(slot, { recursive: true, force: true });
        mkdirSync(slot);
        const c = new TreeCopier(master, slot, {
          durable: DURABLE,
          variants: { settings, other, cache: Object.keys(cache.entries).length > 0 ? cache : null },
        });
        const t = performance.now();
        await c.mirrorAll();
        const ms = performance.now() - t;
        await c.clearTemp();
        return ms;
      },
    };
  };
  return [side('empty view', view(cacheDir, 0)), side(`${ENTRIES} entries`, view(cacheDir, ENTRIES))];
}

async function main(): Promise<void> {
  console.log(`# A full copy reusing the other copy's variants, the cache's view empty and large: ${machine()}`);
  const root = mkdtempSync(join(tmpdir(), 'mirrorswap-walk-context-'));
  try {
    const master = join(root, 'master');
    const bytes = textMaster(master, FILES);
    const builds: Side[][] = [];
    if (BUILD_A) builds.push(await build(BUILD_A, 'build A', master, root));
    builds.push(await build(THIS_DIST, 'this build', master, root));
    const sides = builds.flat();
    for (let r = 0; r < ROUNDS; r++) {
      for (let j = 0; j < sides.length; j++) {
        const s = sides[(j + r) % sides.length] as Side;
        s.ms.push(await s.copy());
      }
    }
    const kept = (xs: number[]) => xs.slice(WARMUP);
    console.log(
      `\n${FILES} files (${(bytes / 2 ** 20).toFixed(0)} MiB), ${DURABLE ? 'durable' : 'not durable'}, ${ROUNDS - WARMUP} rounds after ${WARMUP}\n`,
    );
    console.log('| copy | ms | large view / empty |');
    console.log('| --- | --- | --- |');
    for (const [empty, large] of builds as [Side, Side][]) {
      const own = median(kept(large.ms).map((x, i) => x / (kept(empty.ms)[i] as number)));
      console.log(`| ${empty.label} | ${median(kept(empty.ms)).toFixed(0)} | 1.00x |`);
      console.log(
        `| ${large.label} | ${median(kept(large.ms)).toFixed(0)} | ${(median(kept(large.ms)) / median(kept(empty.ms))).toFixed(2)}x (${own.toFixed(2)}x) |`,
      );
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
  process.exit(0); // the other build's walk threads
}

await main();
