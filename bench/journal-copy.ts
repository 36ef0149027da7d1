/**
 * The copy step of a journal sync alone (TreeCopier.copyPaths into the
 * standby, durable, what the agent's copy phase runs), side by side in one
 * process: 10 JS files of 20 KB rewritten in master each round, in 10 of
 * its 40 directories, copied into alternate slots (a standby is one sync
 * behind, so each copy takes the last two rounds' 20 files). Sides: this
 * build without variants and with variants compressed as the files landed
 * (the agent's Precompress, pruned after each copy as the agent does); with
 * `--a OLD/dist`, that build's two as well. The sides go in turns, each
 * first in turn; per side the median wall time of a copy, the median CPU
 * time of the process over it (all threads: what the 2 cores spend), and
 * the ratios to the first side (medians, and in brackets the median of
 * each round's own ratio, as the machine's pace drifts).
 *
 *   node dist/bench/journal-copy.js [--rounds 50] [--a OLD/dist]
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { flag, machine, median, textFlag, textMaster } from './lib.js';

const ROUNDS = flag('rounds', 50);
/** Rounds left out of the medians: the threads and the code warm up. */
const WARMUP = 4;
const BUILD_A = textFlag('a');
const THIS_DIST = new URL('..', import.meta.url).pathname;

interface Side {
  label: string;
  copy(k: number, paths: string[]): Promise<{ ms: number; cpuMs: number }>;
  close(): Promise<void>;
  ms: number[];
  cpu: number[];
}

const quiet = { warn() {}, info() {}, error() {}, debug() {} };

/** One build's copier, into a pair of slots of its own, with variants from its own cache or none. */
async function side(dist: string, label: string, variants: boolean, master: string, root: string): Promise<Side> {
  const load = (rel: string) => import(pathToFileURL(join(dist, rel)).href);
  const { TreeCopier } = await load('src/tree/tree-copy.js');
  const { TREE_DEFAULTS } = await load('src/tree/tree-defaults.js');
  const { Precompress } = variants ? await load('src/agent/master/precompress.js') : { Precompress: null };
  const settings = TREE_DEFAULTS.variantSettings;
  const name = label.replace(/\W+/g, '-');
  const pre = variants ? new Precompress({ master, cache: join(root, `${name}-cache`), settings, log: quiet }) : null;
  const slots = [join(root, `${name}-a`), join(root, `${name}-b`)];
  const copier = (k: number) =>
    new TreeCopier(master, slots[k], {
      durable: true,
      keepReplacedBytes: 256 * 1024 * 1024,
      variants: variants ? { settings, other: slots[1 - k], cache: pre.cacheForSync } : undefined,
    });
  for (const k of [0, 1]) {
    mkdirSync(slots[k] as string);
    const c = copier(k);
    await c.mirrorAll();
    await c.clearTemp();
  }
  /** What each slot has yet to copy: the round before's paths. */
  const behind: string[][] = [[], []];
  return {
    label,
    ms: [],
    cpu: [],
    async copy(k, paths) {
      pre?.add(paths);
      await new Promise((res) => setTimeout(res, 300)); // compressed as they landed
      await pre?.pause();
      const list = [...(behind[k] as string[]), ...paths];
      behind[k] = [];
      behind[1 - k]?.push(...paths);
      const c = copier(k);
      const cpu = process.cpuUsage();
      const t = performance.now();
      await c.copyPaths(list);
      const ms = performance.now() - t;
      const used = process.cpuUsage(cpu);
      pre?.taken(slots[k], c.cacheTaken);
      await c.clearTemp();
      pre?.resume();
      await pre?.prune();
      return { ms, cpuMs: (used.user + used.system) / 1000 };
    },
    close: async () => pre?.close(),
  };
}

async function main(): Promise<void> {
  console.log(`# The copy step of a journal sync: ${machine()}`);
  const root = mkdtempSync(join(tmpdir(), 'mirrorswap-journal-copy-'));
  try {
    const master = join(root, 'master');
    textMaster(master, 4000);
    const sides: Side[] = [];
    if (BUILD_A) {
      sides.push(await side(BUILD_A, 'build A, no variants', false, master, root));
      // a build from before variants has none to compare
      const withVariants = await side(BUILD_A, 'build A, variants', true, master, root).catch(() => null);
      if (withVariants) sides.push(withVariants);
    }
    sides.push(await side(THIS_DIST, 'no variants', false, master, root));
    sides.push(await side(THIS_DIST, 'variants', true, master, root));
    for (let r = 0; r < ROUNDS; r++) {
      const paths: string[] = [];
      for (let k = 0; k < 10; k++) {
        const i = (r * 10 + k) * 4;
        let text = '';
        for (let n = 0; text.length < 20_000; n++) text += `export const v${r}_${n} = ${i * n}; // round ${r}\n`;
        const rel = `d${i % 40}/m${i}.js`;
        writeFileSync(join(master, rel), text);
        paths.push(rel);
      }
      for (let j = 0; j < sides.length; j++) {
        const s = sides[(j + r) % sides.length] as Side;
        const { ms, cpuMs } = await s.copy(r % 2, paths);
        s.ms.push(ms);
        s.cpu.push(cpuMs);
      }
    }
    const base = sides[0] as Side;
    const kept = (xs: number[]) => xs.slice(WARMUP);
    const ratio = (of: number[], to: number[]) =>
      `${(median(kept(of)) / median(kept(to))).toFixed(2)}x (${median(kept(of).map((x, i) => x / (kept(to)[i] as number))).toFixed(2)}x)`;
    console.log(
      `\n20 files of 20 KB in 10 directories a copy, ${ROUNDS - WARMUP} rounds (after ${WARMUP} to warm up)\n`,
    );
    console.log(`| copier | ms | of ${base.label} | CPU ms | of ${base.label} |`);
    console.log('| --- | --- | --- | --- | --- |');
    for (const s of sides) {
      console.log(
        `| ${s.label} | ${median(kept(s.ms)).toFixed(1)} | ${ratio(s.ms, base.ms)} | ${median(kept(s.cpu)).toFixed(1)} | ${ratio(s.cpu, base.cpu)} |`,
      );
    }
    for (const s of sides) await s.close();
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
  process.exit(0); // the other build's walk threads
}

await main();
