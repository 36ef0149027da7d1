/**
 * Two builds of mirrorswap side by side, for a change that must cost nothing
 * (a refactor, a new check on the hot path): `mirrorswap serve` of each on the
 * same store under wrk, in interleaved rounds (ABAB...), and `mirrorswap init`
 * of each on the same tree, alternating. Prints the ratios B/A. With
 * `--retained`, the store keeps an older release besides the mounted one
 * (as `--keep 3` does): B then serves with skew protection armed (pins
 * looked for, the asset fallback ready), the requests naming none.
 *
 *   node dist/bench/ab-builds.js --a /path/to/old/dist/src/cli/bin.js [--b this build] \
 *     [--rounds 3] [--seconds 6] [--files 500] [--tree-files 20000] [--retained]
 */
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { publishEpoch } from '../src/store/publish.js';
import { THIS_CLI, benchStore, flag, machine, startServe, stop, wrk } from './lib.js';

function option(name: string, dflt: string | undefined): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? dflt : process.argv[i + 1];
}

function initTime(cli: string, tree: string): number {
  const store = execFileSync('mktemp', ['-d']).toString().trim();
  execFileSync('cp', ['-a', tree, join(store, 'master')]);
  execFileSync('sync');
  const started = performance.now();
  execFileSync(process.execPath, [cli, 'init', '--store', store], { stdio: 'ignore' });
  const ms = performance.now() - started;
  execFileSync('rm', ['-rf', store]);
  return ms;
}

const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)] as number;

async function main(): Promise<void> {
  const a = option('a', undefined);
  if (!a) throw new Error('--a PATH: the CLI (dist/src/cli/bin.js) of the build to compare against');
  const b = option('b', THIS_CLI) as string;
  const rounds = flag('rounds', 3);
  const seconds = flag('seconds', 6);
  const files = flag('files', 500);
  const treeFiles = flag('tree-files', 20_000);
  console.log(`# A/B of two builds on ${machine()}\nA: ${a}\nB: ${b}\n`);

  const body = Buffer.alloc(2048, 'x');
  const layout = await benchStore('mirrorswap-ab-', async (dir) => {
    for (let i = 0; i < files; i++) await writeFile(join(dir, `f${i}.html`), body);
  });
  if (process.argv.includes('--retained')) {
    const replacedAt = new Date().toISOString();
    await publishEpoch(layout, 2, 'a', { keep: 3, retained: [{ slot: 'b', epoch: 1, replacedAt }] });
  }
  const paths = Array.from({ length: files }, (_, i) => `/f${i}.html`);
  const rps: Record<'A' | 'B', number[]> = { A: [], B: [] };
  for (let round = 0; round < rounds; round++) {
    // alternate which build goes first, so drift over the run hits both alike
    const order: ('A' | 'B')[] = round % 2 === 0 ? ['A', 'B'] : ['B', 'A'];
    for (const which of order) {
      const target = await startServe(layout.root, which === 'A' ? a : b);
      await wrk(`http://127.0.0.1:${target.port}`, paths, { connections: 50, duration: 1 }); // warm-up
      const r = await wrk(`http://127.0.0.1:${target.port}`, paths, { connections: 50, duration: seconds });
      rps[which].push(r.rps);
      await stop(target.child);
    }
  }
  await rm(layout.root, { recursive: true, force: true });
  const serveRatio = median(rps.B) / median(rps.A);
  console.log(`serve, ${files} files of 2 KB, wrk -t1 -c50, ${rounds} rounds of ${seconds} s per build`);
  console.log(`  A: ${rps.A.map((x) => x.toFixed(0)).join(', ')} req/s`);
  console.log(`  B: ${rps.B.map((x) => x.toFixed(0)).join(', ')} req/s`);
  console.log(`  B/A (medians): ${serveRatio.toFixed(3)}\n`);

  if (treeFiles === 0) return; // --tree-files 0: serving only
  const tree = await mkdtemp(join(tmpdir(), 'mirrorswap-ab-tree-'));
  for (let d = 0; d < 100; d++) {
    await mkdir(join(tree, `d${d}`));
    for (let i = 0; i < treeFiles / 100; i++) await writeFile(join(tree, `d${d}`, `f${i}`), body);
  }
  const init: Record<'A' | 'B', number[]> = { A: [], B: [] };
  for (let round = 0; round < rounds; round++) {
    for (const which of round % 2 === 0 ? (['A', 'B'] as const) : (['B', 'A'] as const)) {
      init[which].push(initTime(which === 'A' ? a : b, tree));
    }
  }
  await rm(tree, { recursive: true, force: true });
  console.log(`init (both slots, durable), ${treeFiles} files of 2 KB in 100 dirs, ${rounds} rounds`);
  console.log(`  A: ${init.A.map((x) => x.toFixed(0)).join(', ')} ms`);
  console.log(`  B: ${init.B.map((x) => x.toFixed(0)).join(', ')} ms`);
  console.log(`  B/A (medians): ${(median(init.B) / median(init.A)).toFixed(3)}`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
