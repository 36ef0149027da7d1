/**
 * Journal-driven syncs by the number of paths changed, against
 * `rsync -a --delete` of the same change, side by side in one run: a tree
 * of 10,000 files of 4 KiB in 100 directories, files rewritten in master
 * directly (the watcher journals them), then one sync (a whole swap over the
 * API) and one rsync, `--rounds` times per size. Reports the whole swap and
 * its time to publish (wait, copy and publish: when servers are told to
 * switch), medians. A standby is one sync behind, so each sync copies the
 * changes of the last two rounds. With `--a OLD/dist/src/cli/bin.js`, that
 * build runs beside this one on a tree of its own, the two in turns each
 * round, and the ratios B/A are printed too.
 *
 *   node dist/bench/journal-sync.js [--changed 10,200,2000] [--rounds 7] [--a OLD/dist/src/cli/bin.js]
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { SwapRecord } from '../src/agent/agent.js';
import { freePort, machine, requireCommand, stop, THIS_CLI } from './lib.js';

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? dflt : (process.argv[i + 1] as string);
};
const sizes = arg('changed', '10,200,2000').split(',').map(Number);
const rounds = Number(arg('rounds', '7'));
const DIRS = 100;
const PER_DIR = 100;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

function run(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}`);
}

interface Side {
  name: string;
  master: string;
  sync(): Promise<SwapRecord>;
  stop(): Promise<void>;
}

/** A store of the tree, initialised and served by the agent of `cli`, synced twice (both slots at the journal). */
async function startSide(name: string, cli: string, root: string): Promise<Side> {
  const store = join(root, 'store');
  const master = join(store, 'master');
  for (let d = 0; d < DIRS; d++) {
    mkdirSync(join(master, `d${d}`), { recursive: true });
    for (let f = 0; f < PER_DIR; f++) writeFileSync(join(master, `d${d}/f${f}.dat`), randomBytes(4096));
  }
  run(process.execPath, [cli, 'init', '--store', store]);
  const token = randomBytes(24).toString('hex');
  writeFileSync(join(root, 'token'), token, { mode: 0o600 });
  const port = await freePort();
  const agent: ChildProcess = spawn(
    process.execPath,
    [cli, 'agent', '--store', store, '--listen', `127.0.0.1:${port}`, '--token-file', join(root, 'token')],
    { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, MIRRORSWAP_LOG_LEVEL: 'warn' } },
  );
  process.once('exit', () => agent.kill('SIGKILL'));
  const base = `http://127.0.0.1:${port}`;
  const sync = async (): Promise<SwapRecord> => {
    const res = await fetch(`${base}/v1/sync?wait=1`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}` },
    });
    if (!res.ok) throw new Error(`${name}: sync: ${res.status} ${await res.text()}`);
    return (await res.json()) as SwapRecord;
  };
  for (;;) {
    if (agent.exitCode !== null) throw new Error(`${name}: the agent exited with ${agent.exitCode}`);
    if (
      await fetch(`${base}/readyz`).then(
        (r) => r.ok,
        () => false,
      )
    )
      break;
    await new Promise((r) => setTimeout(r, 20));
  }
  await sync();
  await sync();
  return { name, master, sync, stop: () => stop(agent) };
}

async function main(): Promise<void> {
  requireCommand('rsync');
  const root = await mkdtemp(join(tmpdir(), 'mirrorswap-journal-sync-'));
  const a = arg('a', '');
  const sides = [
    ...(a ? [await startSide('A', a, join(root, 'a'))] : []),
    await startSide(a ? 'B' : 'this build', THIS_CLI, join(root, 'b')),
  ];
  const ours = sides.at(-1) as Side;
  const copy = join(root, 'rsync');
  run('rsync', ['-a', '--delete', `${ours.master}/`, `${copy}/`]);

  const rows: string[] = [];
  let round = 0;
  for (const changed of sizes) {
    const whole = sides.map((): number[] => []);
    const toPublish = sides.map((): number[] => []);
    const rsync: number[] = [];
    let copied = 0;
    for (let r = 0; r < rounds; r++) {
      round++;
      // sides in turns, first one then the other, so neither always runs on a disk the other just wrote
      const order = sides.map((_, i) => i);
      if (r % 2 === 1) order.reverse();
      for (const i of order) {
        const side = sides[i] as Side;
        for (let k = 0; k < changed; k++) {
          const rel = `d${k % DIRS}/f${(round + Math.floor(k / DIRS)) % PER_DIR}.dat`;
          writeFileSync(join(side.master, rel), randomBytes(1024));
        }
        await new Promise((r) => setTimeout(r, 200)); // the watcher's events, as a writer's pause would give
        const t = performance.now();
        const record = await side.sync();
        (whole[i] as number[]).push(performance.now() - t);
        const p = record.phases;
        (toPublish[i] as number[]).push(((p.wait ?? 0) + (p.copy ?? 0) + (p.publish ?? 0)) * 1000);
        if (side === ours) copied = record.copied.files;
      }
      const t = performance.now();
      run('rsync', ['-a', '--delete', `${ours.master}/`, `${copy}/`]);
      rsync.push(performance.now() - t);
    }
    const rs = median(rsync);
    const cells = sides.map((side, i) => {
      const w = median(whole[i] as number[]);
      const pub = median(toPublish[i] as number[]);
      console.error(`  ${changed} changed, ${side.name}: whole ${w.toFixed(1)} ms, to publish ${pub.toFixed(1)} ms`);
      return {
        w,
        pub,
        text: `${w.toFixed(1)} ms (${pub.toFixed(1)} ms) = **${(w / rs).toFixed(3)}x** (${(pub / rs).toFixed(3)}x)`,
      };
    });
    console.error(`  ${changed} changed, rsync: ${rs.toFixed(0)} ms`);
    const ab =
      cells.length === 2
        ? ` | **${((cells[1]?.w ?? 0) / (cells[0]?.w ?? 1)).toFixed(2)}** (${((cells[1]?.pub ?? 0) / (cells[0]?.pub ?? 1)).toFixed(2)})`
        : '';
    rows.push(`| ${changed} | ${copied} | ${rs.toFixed(0)} ms | ${cells.map((c) => c.text).join(' | ')}${ab} |`);
  }
  for (const side of sides) await side.stop();
  await rm(root, { recursive: true, force: true });
  console.log(
    `machine: ${machine()}; ${DIRS * PER_DIR} files of 4 KiB in ${DIRS} dirs; ${rounds} rounds per size (medians)${a ? `; A = ${a}, B = this build, in turns` : ''}\n`,
  );
  const heads = sides.map((s) => `${s.name}: whole swap (to publish) = ratio to rsync`);
  console.log(
    `| changed per round | files copied by a sync | rsync -a --delete | ${heads.join(' | ')}${a ? ' | B/A whole (to publish)' : ''} |`,
  );
  console.log(`|---|---|---|${sides.map(() => '---|').join('')}${a ? '---|' : ''}`);
  for (const row of rows) console.log(row);
}

await main();
