/**
 * What a cache entry really costs on the heap, to check ENTRY_COST and
 * INDEX_COST (middleware/static/file-cache.ts): N files looked up through
 * the real path resolver into a FileCache with no arena (bodies aside),
 * with and without a content index listing two variants each; the heap's
 * growth between two forced collections, per entry, beside what the cache
 * counts for it.
 *
 *   node --expose-gc dist/bench/entry-cost.js [--files 20000]
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveStaticOptions } from '../middleware/options.js';
import { BodyArena } from '../middleware/static/body-arena.js';
import { ENTRY_COST, FileCache, HEAP_HEADROOM } from '../middleware/static/file-cache.js';
import { resolveRequestPath } from '../middleware/static/path-resolver.js';
import { writeVariantsFor } from '../testkit/variants.js';
import { flag, machine } from './lib.js';

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) {
  console.error('run with node --expose-gc');
  process.exit(2);
}

function heap(): number {
  for (let i = 0; i < 4; i++) gc?.();
  return process.memoryUsage().heapUsed;
}

async function measure(files: number, variants: boolean): Promise<{ heap: number; counted: number }> {
  const root = await mkdtemp(join(tmpdir(), 'mirrorswap-entry-cost-'));
  const rels: string[] = [];
  for (let d = 0; d * 1000 < files; d++) await mkdir(join(root, `d${d}`));
  for (let i = 0; i < files; i++) {
    const rel = `d${Math.floor(i / 1000)}/file-${i}.js`;
    await writeFile(join(root, rel), `console.log(${i});\n`.repeat(20));
    rels.push(rel);
  }
  if (variants) writeVariantsFor(root, rels);
  const opts = resolveStaticOptions({ store: root, cacheMaxEntries: files * 2 });
  // an arena with no room: every body is streamed, so the heap holds the entries only
  const arena = new BodyArena({ maxBodyBytes: 0, room: () => 0 });
  const cache = new FileCache({ maxBytes: 2 ** 40, maxEntries: files * 2 }, arena);
  const slot = { root, realRoot: root };
  // the directories' indexes are read (and kept) first: what is measured is the entries
  for (let d = 0; d * 1000 < files; d++)
    await resolveRequestPath(`/d${d}/file-${d * 1000}.js`, slot, opts, arena, cache);
  const indexBytes = cache.entryBytes;
  const before = heap();
  for (const rel of rels) {
    const key = `/${rel}`;
    await cache.resolve(key, () => resolveRequestPath(key, slot, opts, arena, cache));
  }
  const after = heap();
  // what the cache counts, less the headroom it adds for the collector: the heap size it assumes
  const counted = (cache.entryBytes - indexBytes) / HEAP_HEADROOM;
  cache.clear();
  await rm(root, { recursive: true, force: true });
  return { heap: (after - before) / files, counted: counted / files };
}

/**
 * The heap under churn: a cache of `budgetMib` (entries only) looking up
 * `rounds` times more distinct keys than it holds, as a sweep over many
 * files makes it do. Evicted entries are garbage the collector finds only
 * later: the heap's peak growth (sampled, never forced) over what the cache
 * counts is what entries really cost while a cache turns over.
 */
async function churn(files: number, budgetMib: number, rounds: number): Promise<{ peak: number; counted: number }> {
  const root = await mkdtemp(join(tmpdir(), 'mirrorswap-entry-churn-'));
  const rels: string[] = [];
  for (let d = 0; d * 1000 < files; d++) await mkdir(join(root, `d${d}`));
  for (let i = 0; i < files; i++) {
    const rel = `d${Math.floor(i / 1000)}/file-${i}.js`;
    await writeFile(join(root, rel), 'x');
    rels.push(rel);
  }
  const opts = resolveStaticOptions({ store: root });
  const arena = new BodyArena({ maxBodyBytes: 0, room: () => 0 });
  const cache = new FileCache({ maxBytes: budgetMib * 2 ** 20, maxEntries: 10 ** 7 }, arena);
  const slot = { root, realRoot: root };
  const base = heap();
  let peak = 0;
  let counted = 0;
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < rels.length; i++) {
      const path = `/${rels[i]}`;
      // a distinct key each round: the cache turns over as under a sweep of distinct files
      await cache.resolve(`${path}?${round}`, () => resolveRequestPath(path, slot, opts, arena, cache));
      if (i % 500 === 0) {
        peak = Math.max(peak, process.memoryUsage().heapUsed - base);
        counted = Math.max(counted, cache.entryBytes / HEAP_HEADROOM);
      }
    }
  }
  cache.clear();
  await rm(root, { recursive: true, force: true });
  return { peak, counted };
}

async function main(): Promise<void> {
  const files = flag('files', 20_000);
  console.log(`# cache entry cost, ${machine()}; ${files} files (ENTRY_COST ${JSON.stringify(ENTRY_COST)})\n`);
  console.log(`| entries | heap growth per entry | counted per entry (before the ${HEAP_HEADROOM}x headroom) |`);
  console.log('| --- | --- | --- |');
  for (const variants of [false, true]) {
    const m = await measure(files, variants);
    console.log(
      `| file${variants ? ' with br and gzip variants' : ''} | ${m.heap.toFixed(0)} B | ${m.counted.toFixed(0)} B |`,
    );
  }
  const budget = flag('churn-budget-mib', 16);
  const c = await churn(files, budget, flag('churn-rounds', 5));
  console.log(
    `\nunder churn (a ${budget} MiB cache of entries, ${files} files looked up again under new keys): the heap's peak growth ${(c.peak / 2 ** 20).toFixed(1)} MiB for ${(c.counted / 2 ** 20).toFixed(1)} MiB of entries' heap (${(c.peak / c.counted).toFixed(2)}x)`,
  );
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
