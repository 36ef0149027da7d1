/**
 * Peers share the bytes, measured: for each fleet size, the same swaps run
 * twice in one run, once with every host pulling from the coordinator
 * (`--seeds 0`) and once with peers (`--seeds N`): a one-member etcd, a
 * coordinator and N host agents (separate processes and stores, each with
 * one web server), on loopback. Per swap of a change of `--change` bytes
 * in `--pieces` files (one by default: a host passes a file on to its peers
 * once it has the whole of it, so more pieces let the rounds overlap): the bytes the coordinator sent (files answers and
 * manifests, from its own count, `fleet.sent`), the bytes hosts took from
 * peers, and publish (the sync request) to the last web server serving the
 * new content; p50 and max over `--swaps`.
 *
 * With `--rate MBIT` (root, iproute2) the coordinator and each host agent run
 * in their own network namespace, on a bridge, each with a link shaped by
 * `tc` to MBIT each way (testkit/netns.ts); etcd, the web servers and the
 * bench stay on the bridge's side, unshaped.
 *
 *   node dist/bench/fleet-peers.js [--sizes 8,16 --swaps 5 --change 4194304 --pieces 1 --seeds 2 --rate 100] [--peers-only]
 */
import { randomBytes } from 'node:crypto';
import { type EtcdCluster, startEtcdCluster } from '../testkit/etcd.js';
import { NetLinks } from '../testkit/netns.js';
import { type FleetCoordinatorProc, type FleetHostProc, TestFleet } from '../testkit/fleet.js';
import { flag, machine, percentile } from './lib.js';

const swaps = flag('swaps', 5);
const change = flag('change', 4 * 1024 * 1024);
const seeds = flag('seeds', 2);
const rate = flag('rate', 0);
const pieces = Math.max(1, flag('pieces', 1));
const sizesAt = process.argv.indexOf('--sizes');
const sizes = (sizesAt > 0 ? (process.argv[sizesAt + 1] ?? '') : '8,16').split(',').map(Number);
/** The changed files: the first holds the marker the bench polls for. */
const FILES = pieces === 1 ? ['changed.bin'] : Array.from({ length: pieces }, (_, k) => `changed-${k}.bin`);
const FILE = FILES[0] as string;

/** Write the change: `pieces` files of random bytes, `change` bytes in all, each headed by `marker`. */
async function putChange(coordinator: FleetCoordinatorProc, marker: string): Promise<void> {
  for (let k = 0; k < FILES.length; k++) {
    const size = Math.floor(change / FILES.length) + (k < change % FILES.length ? 1 : 0);
    await put(coordinator, FILES[k] as string, Buffer.concat([Buffer.from(`${marker}\n`), randomBytes(size)]));
  }
}

interface Sent {
  manifests: number;
  files: number;
}

async function sent(coordinator: FleetCoordinatorProc): Promise<Sent> {
  return (await coordinator.api<{ fleet: { sent: Sent } }>('GET', '/v1/status')).body.fleet.sent;
}

async function put(coordinator: FleetCoordinatorProc, path: string, body: Buffer): Promise<void> {
  const res = await fetch(`${coordinator.url}/v1/files/${path}`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${coordinator.token}` },
    body,
  });
  if (res.status !== 201) throw new Error(`write failed: ${res.status} ${await res.text()}`);
}

/** A sync, tried again (up to 3 times, each said) when a loaded machine starves a host of its etcd lease. */
async function sync(coordinator: FleetCoordinatorProc, hosts: FleetHostProc[]): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    const res = await coordinator.api<{ error?: { message: string } }>('POST', '/v1/sync?wait=1');
    if (res.status === 200) return;
    if (attempt < 3) {
      console.error(`sync failed, trying again: ${res.body.error?.message}`);
      continue;
    }
    // what each host said last: why it did not prepare
    for (const h of hosts) console.error(`${h.id}:\n${h.agent.output().split('\n').slice(-8).join('\n')}`);
    throw new Error(`sync failed: ${JSON.stringify(res.body)}`);
  }
}

/** Leases and etcd deadlines for a machine this loaded: the bench measures bytes and switch times, not failover. */
const PATIENT = ['--fleet-lease', '10s', '--etcd-timeout', '5s'];

/** The marker at the head of FILE as a host's web server serves it now. */
async function servedMarker(host: FleetHostProc): Promise<string> {
  const res = await fetch(`${host.web?.url}/${FILE}`, { headers: { range: 'bytes=0-31' } });
  return Buffer.from(await res.arrayBuffer())
    .toString('latin1')
    .split('\n')[0] as string;
}

async function run(cluster: EtcdCluster, n: number, seedCount: number, net: NetLinks | undefined) {
  const f = await TestFleet.create(cluster, `peers-bench-${n}-${seedCount}-${randomBytes(3).toString('hex')}`, net);
  try {
    const coordinator = await f.startCoordinator([
      '--seeds',
      String(seedCount),
      '--prepare-timeout',
      '120s',
      ...PATIENT,
    ]);
    const hosts: FleetHostProc[] = [];
    for (let i = 0; i < n; i++) hosts.push(await f.addHost(`h${i}`, { args: PATIENT }));
    // a tree beside the changed file, and two swaps: each host's two slots then hold a copy
    for (let i = 0; i < 200; i++) await put(coordinator, `d${i % 10}/f${i}.html`, randomBytes(2048));
    for (let w = 0; w < 2; w++) {
      await putChange(coordinator, `warm-${w}`);
      await sync(coordinator, hosts);
    }
    const perSwap: { files: number; manifests: number; fromPeers: number; toServedMs: number }[] = [];
    for (let s = 0; s < swaps; s++) {
      const marker = `swap-${s}`;
      await putChange(coordinator, marker);
      const before = await sent(coordinator);
      const asked = performance.now();
      const served = hosts.map(async (h) => {
        for (;;) {
          if ((await servedMarker(h).catch(() => '')) === marker) return performance.now();
          await new Promise((r) => setTimeout(r, 5));
        }
      });
      await sync(coordinator, hosts);
      const last = Math.max(...(await Promise.all(served)));
      const after = await sent(coordinator);
      const pulls = await Promise.all(hosts.map(async (h) => (await h.status()).lastPull));
      if (process.argv.includes('--verbose'))
        for (const [i, p] of pulls.entries()) console.error(`swap ${s} ${hosts[i]?.id}: ${JSON.stringify(p)}`);
      perSwap.push({
        files: after.files - before.files,
        manifests: after.manifests - before.manifests,
        fromPeers: pulls.reduce((sum, p) => sum + (p?.fromPeers ?? 0), 0),
        toServedMs: last - asked,
      });
    }
    return perSwap;
  } finally {
    await f.stop();
  }
}

const mib = (b: number) => `${(b / 1024 / 1024).toFixed(2)} MiB`;

async function main(): Promise<void> {
  console.log(
    `fleet peers bench: ${machine()}; ${swaps} swaps of a ${mib(change)} change in ${pieces} file(s) per fleet size and mode; --seeds ${seeds} for peers; ${rate > 0 ? `each process on its own ${rate} Mbit/s link (tc)` : 'on loopback'}`,
  );
  // node 0 the coordinator, then one per host of the largest fleet
  const net = rate > 0 ? NetLinks.create(1 + Math.max(...sizes), rate) : undefined;
  // interrupted: the namespaces and the bridge go with the run (the processes in them die with it)
  for (const signal of ['SIGINT', 'SIGTERM'] as const)
    process.once(signal, () => {
      net?.remove();
      process.exit(130);
    });
  const cluster = await startEtcdCluster(1, net ? { clientHost: net.bridgeIp } : {}).catch((err: unknown) => {
    net?.remove();
    throw err;
  });
  try {
    console.log(
      'hosts | mode | coordinator bytes out per swap p50 (files + manifests) | × the change | from peers per swap p50 | publish → last host serving p50 / max ms',
    );
    for (const n of sizes) {
      for (const [mode, seedCount] of [
        ...(process.argv.includes('--peers-only') ? [] : [['coordinator only', 0] as const]),
        [`peers, ${seeds} seeds`, seeds] as const,
      ]) {
        const r = await run(cluster, n, seedCount, net);
        const sort = (a: number[]) => [...a].sort((x, y) => x - y);
        const out = percentile(sort(r.map((x) => x.files + x.manifests)), 50);
        const peers = percentile(sort(r.map((x) => x.fromPeers)), 50);
        const ms = sort(r.map((x) => x.toServedMs));
        console.log(
          `${String(n).padStart(5)} | ${mode.padEnd(16)} | ${mib(out)} | ${(out / change).toFixed(2)} | ${mib(peers)} | ${percentile(ms, 50).toFixed(0)} / ${(ms[ms.length - 1] ?? 0).toFixed(0)}`,
        );
      }
    }
  } finally {
    await cluster.stop();
    net?.remove();
  }
}

await main();
