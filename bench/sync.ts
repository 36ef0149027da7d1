/**
 * The agent's copies against the standard tools, side by side in one run on
 * one tree: a journal-driven sync and a full compare walk against
 * `rsync -a --delete`, and a full copy (what `init` does per slot) against
 * `cp -a`. Also the agent's resident memory on that tree.
 *
 *   npm run bench:sync [-- --files 100000 --size 4096 --changed 10]
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { SwapRecord } from '../src/agent/agent.js';
import { Limiter } from '../src/core/limiter.js';
import { TreeCopier } from '../src/tree/tree-copy.js';
import { flag, machine, requireCommand, rss, startTarget, stop, timed } from './lib.js';

// as the CLI does (src/cli/bin.ts): the copier keeps many fs calls in flight
process.env.UV_THREADPOOL_SIZE ??= '16';

const files = flag('files', 100_000);
const size = flag('size', 4096);
const changed = flag('changed', 10);
const PER_DIR = 1000;
const CLI = fileURLToPath(new URL('../src/cli/bin.js', import.meta.url));

const pathOf = (i: number) => `d${Math.floor(i / PER_DIR)}/f${i}.dat`;

function run(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}`);
}

async function main(): Promise<void> {
  requireCommand('rsync');
  const root = await mkdtemp(join(tmpdir(), 'mirrorswap-syncbench-'));
  const store = join(root, 'store');
  const master = join(store, 'master');
  console.error(`building ${files} files of ${size} bytes in ${root} ...`);
  const limiter = new Limiter(32);
  for (let d = 0; d * PER_DIR < files; d++) await mkdir(join(master, `d${d}`), { recursive: true });
  await Promise.all(
    Array.from({ length: files }, (_, i) => limiter.run(() => writeFile(join(master, pathOf(i)), randomBytes(size)))),
  );

  // full copies: cp -a against the agent's copier (durable: one syncfs at the end; and without it)
  console.error('full copy:');
  const cpMs = timed('cp -a', () => run('cp', ['-a', master, join(root, 'cp')]));
  let t = performance.now();
  await new TreeCopier(master, join(root, 'copy-durable'), { durable: true }).mirrorAll();
  const copyDurableMs = performance.now() - t;
  console.error(`  mirrorswap copy (durable): ${copyDurableMs.toFixed(0)} ms`);
  t = performance.now();
  await new TreeCopier(master, join(root, 'copy-fast'), { durable: false }).mirrorAll();
  const copyFastMs = performance.now() - t;
  console.error(`  mirrorswap copy (--no-fsync): ${copyFastMs.toFixed(0)} ms`);
  await rm(join(root, 'copy-durable'), { recursive: true });
  await rm(join(root, 'copy-fast'), { recursive: true });

  // the agent, as operators run it, on this store
  const tokenFile = join(root, 'token');
  await writeFile(tokenFile, randomBytes(24).toString('hex'), { mode: 0o600 });
  const token = (await import('node:fs')).readFileSync(tokenFile, 'utf8');
  console.error('starting the agent (init mirrors both slots) ...');
  const agent = await startTarget('./sync-agent-target.js', [CLI, store, tokenFile]);
  const base = `http://127.0.0.1:${agent.port}`;
  const call = async <T>(method: string, path: string, body?: Buffer): Promise<T> => {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}` },
      ...(body ? { body } : {}),
    });
    return (await res.json()) as T;
  };
  const change = async (round: number) => {
    for (let k = 0; k < changed; k++)
      await call('PUT', `/v1/files/${pathOf((round * 7919 + k * 104729) % files)}`, randomBytes(size));
  };

  // an rsync target that mirrors master, as a slot would
  run('rsync', ['-a', '--delete', `${master}/`, join(root, 'rsync')]);
  const rsyncOnce = () =>
    timed('rsync -a --delete', () => run('rsync', ['-a', '--delete', `${master}/`, join(root, 'rsync')]));

  // warm-up swap so both slots are at the journal position
  await call('POST', '/v1/sync?wait=1');
  await call('POST', '/v1/sync?wait=1');

  console.error(`journal-driven sync, ${changed} files changed:`);
  await change(1);
  t = performance.now();
  const inc = await call<SwapRecord>('POST', '/v1/sync?wait=1');
  const incMs = performance.now() - t;
  console.error(
    `  mirrorswap sync: ${incMs.toFixed(0)} ms (copy ${((inc.phases.copy ?? 0) * 1000).toFixed(1)} ms), ${inc.copied.files} files`,
  );
  const rsyncIncMs = rsyncOnce();

  console.error(`full compare walk, ${changed} files changed:`);
  await change(2);
  t = performance.now();
  const full = await call<SwapRecord>('POST', '/v1/sync?wait=1&full=1');
  const fullMs = performance.now() - t;
  console.error(
    `  mirrorswap sync --full: ${fullMs.toFixed(0)} ms (copy ${((full.phases.copy ?? 0) * 1000).toFixed(1)} ms), ${full.copied.files} files`,
  );
  const rsyncFullMs = rsyncOnce();

  const agentRss = rss(agent.pid);
  await stop(agent.child);
  execFileSync('rm', ['-rf', root]);

  const r = (x: number, y: number) => `**${(x / y).toFixed(3)}x**`;
  console.log(
    `machine: ${machine()}; ${files} files of ${size} bytes (${((files * size) / 2 ** 20).toFixed(0)} MiB), ${changed} changed per sync\n`,
  );
  console.log('| operation | mirrorswap | standard tool | ratio (lower is faster) |');
  console.log('|---|---|---|---|');
  console.log(
    `| sync, journal-driven (whole swap) | ${incMs.toFixed(0)} ms | rsync -a --delete ${rsyncIncMs.toFixed(0)} ms | ${r(incMs, rsyncIncMs)} |`,
  );
  console.log(
    `| sync, full compare walk (whole swap) | ${fullMs.toFixed(0)} ms | rsync -a --delete ${rsyncFullMs.toFixed(0)} ms | ${r(fullMs, rsyncFullMs)} |`,
  );
  console.log(
    `| full copy of one slot (durable) | ${copyDurableMs.toFixed(0)} ms | cp -a ${cpMs.toFixed(0)} ms | ${r(copyDurableMs, cpMs)} |`,
  );
  console.log(
    `| full copy of one slot (--no-fsync) | ${copyFastMs.toFixed(0)} ms | cp -a ${cpMs.toFixed(0)} ms | ${r(copyFastMs, cpMs)} |`,
  );
  console.log(`\nagent resident memory on this tree (watching master): ${(agentRss / 2 ** 20).toFixed(0)} MiB`);
}

await main();
