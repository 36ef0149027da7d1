/**
 * What looking at made variants costs two walks over a copy with variants,
 * beside another build (`--a OLD/dist`, the build before a change), side by
 * side in one process, in turns, each first in turn:
 *
 * 1. a fleet coordinator's manifest of the copy (`ManifestFile.write`: the
 *    walk in the walk threads, then the merge), which marks the variants the
 *    copy's index names as made: its first manifest (every file hashed), and
 *    the next (the hashes carried over: what each swap's snapshot costs);
 * 2. a full compare of master with the copy (`compareTrees`, variants on:
 *    what a full sync, the agent's start and `verify` walk), which looks at
 *    each made variant's time.
 *
 * One copy of `--files` text files (in 40 directories, a tenth of them PNG
 * images; the rest with their br and gzip variants and the content index,
 * as the agent makes them). Medians, and in brackets the median of each
 * round's own ratio.
 *
 *   node dist/bench/variant-walks.js --a OLD/dist [--files 4000] [--rounds 9]
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { flag, machine, median, textFlag, textMaster } from './lib.js';

const FILES = flag('files', 4000);
const ROUNDS = flag('rounds', 9);
/** Rounds left out of the medians: the threads and the code warm up. */
const WARMUP = 2;
const BUILD_A = textFlag('a');
const THIS_DIST = new URL('..', import.meta.url).pathname;

interface ManifestFileLike {
  file: string;
  remove(): Promise<void>;
}
interface Side {
  label: string;
  write(file: string, cache: ManifestFileLike | null): Promise<ManifestFileLike>;
  compare(): Promise<unknown[]>;
  first: number[];
  next: number[];
  compared: number[];
  marked: number;
  differences: number;
}

async function side(dist: string, label: string): Promise<Side> {
  const load = (rel: string) => import(pathToFileURL(join(dist, rel)).href);
  const { ManifestFile } = await load('src/tree/manifest-file.js');
  const { compareTrees } = await load('src/tree/compare-trees.js');
  return {
    label,
    write: (file, cache) => ManifestFile.write(slot, file, cache),
    compare: () => compareTrees(master, slot, { variants: true }),
    first: [],
    next: [],
    compared: [],
    marked: 0,
    differences: 0,
  };
}

const root = mkdtempSync(join(tmpdir(), 'mirrorswap-variant-walks-'));
const master = join(root, 'master');
const slot = join(root, 'slot');
const out = join(root, 'manifests');

async function main(): Promise<void> {
  console.log(`# Walks over a copy with variants: ${machine()}`);
  mkdirSync(master);
  mkdirSync(slot);
  mkdirSync(out);
  const bytes = textMaster(master, FILES);
  const { TreeCopier } = await import(pathToFileURL(join(THIS_DIST, 'src/tree/tree-copy.js')).href);
  const { TREE_DEFAULTS } = await import(pathToFileURL(join(THIS_DIST, 'src/tree/tree-defaults.js')).href);
  const copier = new TreeCopier(master, slot, {
    durable: false,
    variants: { settings: TREE_DEFAULTS.variantSettings, other: null },
  });
  await copier.mirrorAll();
  await copier.clearTemp();
  const sides = [await side(THIS_DIST, 'this build')];
  if (BUILD_A) sides.push(await side(BUILD_A, 'build A'));
  let n = 0;
  for (let r = 0; r < ROUNDS; r++) {
    for (let k = 0; k < sides.length; k++) {
      const s = sides[(k + r) % sides.length] as Side;
      let t = performance.now();
      const first = await s.write(join(out, `m${n++}`), null);
      const firstMs = performance.now() - t;
      t = performance.now();
      const next = await s.write(join(out, `m${n++}`), first);
      const nextMs = performance.now() - t;
      s.marked = readFileSync(next.file, 'utf8').split('"made":true').length - 1;
      await first.remove();
      await next.remove();
      t = performance.now();
      s.differences = (await s.compare()).length;
      const comparedMs = performance.now() - t;
      if (r < WARMUP) continue;
      s.first.push(firstMs);
      s.next.push(nextMs);
      s.compared.push(comparedMs);
    }
  }
  console.log(
    `\n${FILES} text files (${(bytes / 2 ** 20).toFixed(1)} MiB) in 40 directories, with their variants: medians of ${ROUNDS - WARMUP} rounds\n`,
  );
  const base = sides[sides.length - 1] as Side;
  const ratio = (of: (s: Side) => number[], s: Side) =>
    `${(median(of(s)) / median(of(base))).toFixed(2)}x (${median(of(s).map((ms, i) => ms / (of(base)[i] as number))).toFixed(2)}x)`;
  console.log(
    '| side | first manifest ms | of build A | next manifest ms | of build A | files marked made | full compare ms | of build A | differences |',
  );
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const s of sides)
    console.log(
      `| ${s.label} | ${median(s.first).toFixed(0)} | ${ratio((x) => x.first, s)} | ${median(s.next).toFixed(0)} | ${ratio((x) => x.next, s)} | ${s.marked} | ${median(s.compared).toFixed(1)} | ${ratio((x) => x.compared, s)} | ${s.differences} |`,
    );
}

main()
  .catch((err) => {
    console.error(err);
    process.exitCode = 1;
  })
  .finally(() => {
    rmSync(root, { recursive: true, force: true });
    process.exit();
  });
