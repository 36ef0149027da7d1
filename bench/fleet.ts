/**
 * Fleet mode on this machine: a 3-member etcd, a coordinator and 2, 4 and 8
 * host agents (separate processes and stores, each with one web server), all
 * on loopback. For each fleet size: request to commit, commit to the last
 * host switched (its epoch file published) and to the last web server
 * serving the new copy (seen in turns by two observers: requests to every
 * server every 5 ms, and a look at the host's epoch file before requests,
 * which adds less load), commit to the last web server switched by its own
 * stamp (its heartbeat's `switchedAt`, in every swap, and in a third of the
 * swaps no observer asks anything), commit to every host drained (its ack), p50 and p99
 * over `--swaps` swaps of one changed 4 KiB file; the bytes the coordinator
 * sent per swap (its own count, `fleet.sent`) against the bytes that changed (with the default
 * `--seeds 2`, hosts other than the seeds take the file from peers); and the time to evict a
 * host killed just before a swap (`--straggler evict`).
 *
 *   node dist/bench/fleet.js [--swaps 30 --sizes 2,4,8]
 */
import { randomBytes } from 'node:crypto';
import { statSync } from 'node:fs';
import { Agent as HttpAgent, get as httpGet } from 'node:http';
import { readEpochFile } from '../src/store/epoch-file.js';
import { readHeartbeats } from '../src/store/heartbeat.js';
import { EtcdGateway } from '../src/fleet/etcd.js';
import { fleetKeys } from '../src/fleet/fleet-keys.js';
import { type EtcdCluster, startEtcdCluster } from '../testkit/etcd.js';
import { type FleetCoordinatorProc, type FleetHostProc, TestFleet } from '../testkit/fleet.js';
import { flag, machine, percentile } from './lib.js';

const swaps = flag('swaps', 30);
const sizesAt = process.argv.indexOf('--sizes');
const sizes = (sizesAt > 0 ? (process.argv[sizesAt + 1] ?? '') : '2,4,8').split(',').map(Number);
const FILE_BYTES = 4096;

interface SwapBody {
  result: string;
  epoch: number;
  phases: Record<string, number>;
  error?: { message: string };
}

async function coordinatorSent(coordinator: FleetCoordinatorProc): Promise<{ files: number; manifests: number }> {
  const res = await coordinator.api<{ fleet: { sent: { files: number; manifests: number } } }>('GET', '/v1/status');
  return res.body.fleet.sent;
}

// node:http over kept-alive sockets, not fetch: the observer's own cost per request is a part of what it
// measures (fetch cost several times as much CPU per request in the bench process, on the same two cores)
const observerAgent = new HttpAgent({ keepAlive: true, maxSockets: 4 });

function servedEpoch(host: FleetHostProc): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = httpGet(`${host.web?.url}/which.txt`, { agent: observerAgent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve(body));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

/**
 * How the bench sees a web server serve the new copy: asking it (two ways, which differ in the load they
 * add), or not at all (`quiet`: the servers' own stamps only, read from their heartbeats afterwards).
 */
type Observer = 'requests' | 'epoch file' | 'quiet';
const OBSERVERS: Observer[] = ['requests', 'epoch file', 'quiet'];

/** When `host`'s web server first answers with `marker`'s content, as `observer` sees it. */
async function observeServing(host: FleetHostProc, marker: string, observer: Observer): Promise<number> {
  if (observer === 'quiet') return Number.NaN;
  const serves = async () => (await servedEpoch(host).catch(() => '')).startsWith(`${marker}.`);
  if (observer === 'epoch file') {
    // the web server cannot switch before its host publishes: until then, a stat, not a request
    const ino = () => {
      try {
        return statSync(host.store.epochFile).ino;
      } catch {
        return -1;
      }
    };
    const before = ino();
    while (ino() === before) await new Promise((r) => setTimeout(r, 2));
  }
  for (;;) {
    if (await serves()) return Date.now();
    await new Promise((r) => setTimeout(r, observer === 'requests' ? 5 : 2));
  }
}

async function runSize(cluster: EtcdCluster, etcd: EtcdGateway, n: number) {
  const f = await TestFleet.create(cluster, `bench-${n}-${randomBytes(3).toString('hex')}`);
  try {
    const coordinator = await f.startCoordinator(['--straggler', 'evict', '--prepare-timeout', '10s']);
    const hosts: FleetHostProc[] = [];
    for (let i = 0; i < n; i++) hosts.push(await f.addHost(`h${i}`));
    // a tree worth pulling: 2,000 files of 4 KiB
    const files: Record<string, string> = {};
    for (let i = 0; i < 2000; i++) files[`d${i % 20}/f${i}.html`] = randomBytes(FILE_BYTES / 2).toString('hex');
    for (const [path, content] of Object.entries(files)) {
      const res = await coordinator.api('PUT', `/v1/files/${path}`, content);
      if (res.status !== 201) throw new Error(`write failed: ${JSON.stringify(res.body)}`);
    }
    // two swaps first: each host's two slots then hold a copy (the first pull into each is a full one)
    const warmUp: number[] = [];
    for (let i = 0; i < 2; i++) {
      const started = Date.now();
      const res = await coordinator.api<SwapBody>('POST', '/v1/sync?wait=1');
      if (res.status !== 200) throw new Error(`warm-up sync failed: ${JSON.stringify(res.body)}`);
      warmUp.push(Date.now() - started);
    }
    // hosts evicted from a warm-up swap (their full pull outlasting --prepare-timeout) catch up first
    const status = await coordinator.api<{ fleet: { epoch: { epoch: number } } }>('GET', '/v1/status');
    await f.converged(status.body.fleet.epoch.epoch, hosts, 120_000);
    // and until a swap commits with every host: a standby filled by a catch-up may hold a snapshot the
    // coordinator forgot, so its next pull compares the whole tree (past --prepare-timeout on this machine)
    for (let round = 0; round < 3; round++) {
      await coordinator.api('PUT', '/v1/files/which.txt', `settle-${round}`.padEnd(FILE_BYTES, '.'));
      const res = await coordinator.api<SwapBody & { fleet?: { evicted: string[]; members: string[] } }>(
        'POST',
        '/v1/sync?wait=1',
      );
      await f.converged(res.body.epoch, hosts, 120_000);
      if (res.body.fleet?.evicted.length === 0) break;
    }
    const keys = fleetKeys(f.name);
    const requestToCommit: number[] = [];
    const commitToSwitch: number[] = [];
    const commitToServed: Record<Observer, number[]> = { requests: [], 'epoch file': [], quiet: [] };
    // by each web server's own stamp (its heartbeat's switchedAt): when its new requests went to the new copy
    const commitToServerSwitch: Record<Observer, number[]> = { requests: [], 'epoch file': [], quiet: [] };
    const commitToDrained: number[] = [];
    const sentPerSwap: number[] = [];
    for (let s = 0; s < swaps; s++) {
      const marker = `swap-${s}`;
      await coordinator.api('PUT', '/v1/files/which.txt', marker.padEnd(FILE_BYTES, '.'));
      const sentBefore = await coordinatorSent(coordinator);
      const asked = Date.now();
      // poll every web server until each serves the new copy, while the sync runs. Two observers, in
      // turns: requests to every server every 5 ms from the start (8 servers: 1,600 requests a second
      // on the machine under test), or a look at the host's epoch file (a stat) every 2 ms, then
      // requests every 2 ms once it changed: both see a server serving by asking it
      const observer = OBSERVERS[s % OBSERVERS.length] as Observer;
      const served = hosts.map((h) => observeServing(h, marker, observer));
      const res = await coordinator.api<SwapBody>('POST', '/v1/sync?wait=1');
      if (res.status !== 200) throw new Error(`sync failed: ${JSON.stringify(res.body)}`);
      const servedAt = await Promise.all(served);
      const committed = JSON.parse((await etcd.get(keys.epoch))?.value ?? '{}') as {
        committedAt: string;
        epoch: number;
      };
      const commitAt = Date.parse(committed.committedAt);
      const switches = await Promise.all(
        hosts.map(async (h) => Date.parse((await readEpochFile(h.store.epochFile))?.publishedAt ?? '')),
      );
      const acks = (await etcd.getPrefix(keys.acks)).kvs.map(
        (kv) => JSON.parse(kv.value) as { epoch: number; at: string },
      );
      requestToCommit.push(commitAt - asked);
      if (process.env.MIRRORSWAP_BENCH_DEBUG && (res.body as { fleet?: { evicted: string[] } }).fleet?.evicted.length)
        console.log(hosts[0]?.agent.output().split('\n').slice(-12).join('\n'));
      commitToSwitch.push(Math.max(...switches) - commitAt);
      if (observer !== 'quiet') commitToServed[observer].push(Math.max(...servedAt) - commitAt);
      // the sync returned after every host drained: every server has switched and written its heartbeat
      const stamps = (await Promise.all(hosts.map((h) => readHeartbeats(h.store.serversDir))))
        .flat()
        .filter((hb) => hb.epoch === committed.epoch)
        .map((hb) => Date.parse(hb.switchedAt ?? ''));
      if (stamps.length !== hosts.length || stamps.some(Number.isNaN))
        throw new Error(`epoch ${committed.epoch}: ${stamps.length} of ${hosts.length} servers stamped their switch`);
      commitToServerSwitch[observer].push(Math.max(...stamps) - commitAt);
      if (process.env.MIRRORSWAP_BENCH_DEBUG)
        console.log(
          JSON.stringify({
            phases: res.body.phases,
            fleet: (res.body as { fleet?: unknown }).fleet,
            epoch: committed.epoch,
            commitAt,
            switches: switches.map((x) => x - commitAt),
            served: servedAt.map((x) => x - commitAt),
            serverSwitched: stamps.map((x) => x - commitAt),
            observer,
          }),
        );
      commitToDrained.push(
        Math.max(...acks.filter((a) => a.epoch === committed.epoch).map((a) => Date.parse(a.at))) - commitAt,
      );
      // what the coordinator sent (hosts not seeds took the file from peers: see bench/fleet-peers.ts)
      const sentAfter = await coordinatorSent(coordinator);
      sentPerSwap.push(sentAfter.files + sentAfter.manifests - sentBefore.files - sentBefore.manifests);
    }
    // each web server's own count of its switches' lag, from its host's publish to its switch
    const lags = await Promise.all(
      hosts.map(async (h) => {
        const text = await (await fetch(`${h.web?.url}/metrics`)).text();
        const num = (name: string) => Number(new RegExp(`^${name} ([0-9.e+-]+)$`, 'm').exec(text)?.[1] ?? Number.NaN);
        return (
          (num('mirrorswap_server_switch_lag_seconds_sum') / num('mirrorswap_server_switch_lag_seconds_count')) * 1000
        );
      }),
    );
    // a host killed just before a swap: the time until the swap commits without it
    const victim = hosts[hosts.length - 1] as FleetHostProc;
    await coordinator.api('PUT', '/v1/files/which.txt', 'evict'.padEnd(FILE_BYTES, '.'));
    await victim.agent.kill('SIGKILL');
    const killed = Date.now();
    const evicted = await coordinator.api<SwapBody & { fleet?: { evicted: string[] } }>('POST', '/v1/sync?wait=1');
    const evictMs = Date.now() - killed;
    if (!evicted.body.fleet?.evicted.includes(victim.id))
      throw new Error(`not evicted: ${JSON.stringify(evicted.body)}`);
    return {
      requestToCommit,
      commitToSwitch,
      commitToServed,
      commitToServerSwitch,
      commitToDrained,
      sentPerSwap,
      evictMs,
      warmUp,
      lags,
    };
  } finally {
    await f.stop();
  }
}

const ms = (sorted: number[]) =>
  `${percentile(sorted, 50).toFixed(0).padStart(4)} / ${percentile(sorted, 99).toFixed(0).padStart(4)}`;

async function main(): Promise<void> {
  console.log(`fleet bench: ${machine()}; ${swaps} swaps of one changed ${FILE_BYTES}-byte file per size`);
  const cluster = await startEtcdCluster(3, { electionTimeoutMs: 1000, heartbeatMs: 100 });
  const etcd = new EtcdGateway({ endpoints: cluster.endpoints.split(',') });
  try {
    console.log(
      'hosts | request→commit p50/p99 ms | commit→last host switched | commit→last server serving (seen by requests every 5 ms / by the epoch file, then requests) | commit→last server switched, its own stamp (all swaps / quiet swaps) | commit→all drained | bytes the coordinator sent per swap / changed | evict a killed host | host publish→server switched, mean per server (its metric) | first two swaps (full pulls of 2,000 files, 8 MiB)',
    );
    for (const n of sizes) {
      const r = await runSize(cluster, etcd, n);
      const sort = (a: number[]) => [...a].sort((x, y) => x - y);
      const sent = percentile(sort(r.sentPerSwap), 50);
      const lag = `${Math.min(...r.lags).toFixed(0)} to ${Math.max(...r.lags).toFixed(0)} ms`;
      console.log(
        `${String(n).padStart(5)} | ${ms(sort(r.requestToCommit))} | ${ms(sort(r.commitToSwitch))} | ${ms(sort(r.commitToServed.requests))} / ${ms(sort(r.commitToServed['epoch file']))} | ${ms(sort(Object.values(r.commitToServerSwitch).flat()))} / ${ms(sort(r.commitToServerSwitch.quiet))} | ${ms(sort(r.commitToDrained))} | ${sent} B = ${(sent / n).toFixed(0)} B/host / ${FILE_BYTES} B | ${r.evictMs} ms | ${lag} | ${r.warmUp.map((w) => `${(w / 1000).toFixed(1)} s`).join(', ')}`,
      );
    }
  } finally {
    etcd.close();
    observerAgent.destroy();
    await cluster.stop();
  }
}

await main();
