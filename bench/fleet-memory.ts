/**
 * What a large tree costs a fleet coordinator's memory, beside the same
 * agent without a fleet: a master of `--files` small files (in directories
 * of 1,000) under two stores (the second's master hard-linked from the
 * first's), then on each in turn `--syncs` syncs of 10 changed files each
 * (the first two copy the whole tree, one into each slot): first a plain
 * agent, then a coordinator with `--hosts` host agents. After each sync: its
 * wall time and the process's resident set, now and at its highest so far
 * (VmHWM), from /proc. Four syncs leave the coordinator with four
 * snapshots' manifests.
 *
 *   node dist/bench/fleet-memory.js [--files 1000000 --syncs 5 --hosts 0]
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type AgentProc, startAgentProc, writeTokenFile } from '../testkit/cluster.js';
import { startEtcdCluster } from '../testkit/etcd.js';
import { type FleetHostProc, TestFleet } from '../testkit/fleet.js';
import { rawGet } from '../testkit/server.js';
import { type TempStore, tempStore } from '../testkit/store.js';
import { waitFor } from '../testkit/wait.js';
import { flag, machine } from './lib.js';

const files = flag('files', 1_000_000);
const syncs = flag('syncs', 5);
const hostCount = flag('hosts', 0);
const PER_DIR = 1000;
const MiB = 1024 * 1024;
const HOUR = 3_600_000;
/** Leases and deadlines for syncs that copy a million files on a loaded machine. */
const PATIENT = ['--drain-timeout', '60s', '--fleet-lease', '20s', '--etcd-timeout', '5s'];

/** VmRSS and VmHWM of a process, in MiB. */
function memory(pid: number | undefined): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string) => Number(new RegExp(`${key}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0);
  return { rss: (kb('VmRSS') * 1024) / MiB, peak: (kb('VmHWM') * 1024) / MiB };
}

const dirOf = (n: number) => `d${String(Math.floor(n / PER_DIR)).padStart(4, '0')}`;

function fillMaster(master: string): void {
  for (let d = 0; d * PER_DIR < files; d++) {
    const dir = join(master, dirOf(d * PER_DIR));
    mkdirSync(dir, { recursive: true });
    for (let i = d * PER_DIR; i < Math.min(files, (d + 1) * PER_DIR); i++) {
      writeFileSync(join(dir, `file-${i}.txt`), `file ${i}\n`);
    }
  }
}

/** Rewrite 10 files of master for sync `s`: each a new file renamed over (the masters share inodes). */
function change(master: string, s: number): void {
  for (let i = 0; i < 10; i++) {
    const n = (s * 7919 + i * 104_729) % files;
    const file = join(master, dirOf(n), `file-${n}.txt`);
    writeFileSync(`${file}.new`, `file ${n} at sync ${s}\n`);
    renameSync(`${file}.new`, file);
  }
}

/** Run the syncs on `agent`, printing a row per sync. */
async function runSyncs(label: string, store: TempStore, agent: AgentProc, hosts: FleetHostProc[]): Promise<void> {
  for (let s = 1; s <= syncs; s++) {
    if (s > 2) change(store.master, s);
    const started = Date.now();
    // waited for without a time limit: a sync of a million files with a host pulling them all takes
    // longer than fetch waits for an answer's head (5 minutes)
    const port = Number(new URL(agent.url).port);
    const res = await rawGet(port, '/v1/sync?wait=1', { authorization: `Bearer ${agent.token}` }, 'POST');
    if (res.status !== 200) throw new Error(`${label}: sync ${s} failed: ${res.body.toString()}`);
    const seconds = (Date.now() - started) / 1000;
    const m = memory(agent.proc.child.pid);
    const h = hosts.map((x) => memory(x.agent.child.pid));
    const hostCells =
      hosts.length === 0
        ? ''
        : ` ${Math.max(...h.map((x) => x.rss)).toFixed(0)} / ${Math.max(...h.map((x) => x.peak)).toFixed(0)} MiB |`;
    console.log(
      `| ${label} | ${s} | ${seconds.toFixed(1)} | ${m.rss.toFixed(0)} MiB | ${m.peak.toFixed(0)} MiB |${hostCells}`,
    );
  }
}

async function main(): Promise<void> {
  console.log(`${machine()}; ${files} files, ${syncs} syncs, ${hostCount} hosts`);
  const plain = await tempStore('mirrorswap-memory-agent-');
  const coordinated = await tempStore('mirrorswap-memory-coord-');
  const cluster = await startEtcdCluster(1);
  const fleet = await TestFleet.create(cluster, `memory-bench-${process.pid}`);
  try {
    const started = Date.now();
    fillMaster(plain.master);
    rmSync(coordinated.master, { recursive: true });
    execFileSync('cp', ['-al', plain.master, coordinated.master]);
    console.log(`masters filled in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    console.log(`| process | sync | seconds | RSS | highest RSS |${hostCount > 0 ? ' hosts: RSS / highest |' : ''}`);
    console.log(`|---|---|---|---|---|${hostCount > 0 ? '---|' : ''}`);
    const { file, token } = await writeTokenFile(plain);
    const agent = await startAgentProc(plain, file, token, ['--drain-timeout', '60s'], { listenTimeoutMs: HOUR });
    try {
      await runSyncs('agent', plain, agent, []);
    } finally {
      await agent.proc.kill();
    }
    const coordinator = await fleet.startCoordinator(['--prepare-timeout', '1800s', ...PATIENT], coordinated, {
      listenTimeoutMs: HOUR,
    });
    await waitFor(
      'the coordinator to be elected',
      async () =>
        (await coordinator.api<{ fleet?: { coordinator?: { elected: boolean } } }>('GET', '/v1/status')).body.fleet
          ?.coordinator?.elected === true,
      { timeout: 60_000, step: 200 },
    );
    const hosts: FleetHostProc[] = [];
    for (let h = 0; h < hostCount; h++)
      hosts.push(await fleet.addHost(`h${h}`, { web: false, args: PATIENT, startTimeoutMs: HOUR }));
    await runSyncs('coordinator', coordinated, coordinator, hosts);
    const onDisk = execFileSync('du', ['-sb', coordinated.fleetManifestsDir]).toString().split('\t')[0];
    console.log(`the coordinator's manifests and answers on disk: ${(Number(onDisk) / MiB).toFixed(0)} MiB`);
    if (process.env.MIRRORSWAP_BENCH_HEAP) {
      // started with NODE_OPTIONS=--heapsnapshot-signal=SIGUSR2: a snapshot of what the coordinator keeps
      coordinator.proc.child.kill('SIGUSR2');
      await new Promise((r) => setTimeout(r, 30_000));
    }
  } finally {
    await fleet.stop();
    await cluster.stop();
    await plain.dispose();
    await coordinated.dispose();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
