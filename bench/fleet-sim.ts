/**
 * Fleet swaps at sizes this machine cannot run, by a discrete-event model
 * of the protocol docs/FLEET.md describes, fed with per-host costs measured
 * here. For each host count, many runs of one swap of a `--delta-mib` change
 * in `--files` files, with peers (`--seeds`, each host serving at most
 * `--peer-serve` pulls) and with every host pulling from the coordinator,
 * on links of `--gbps` each way: from the sync request to the last web
 * server serving the new release, p50 and p99 over the runs, and the bytes
 * the coordinator sent.
 *
 *   node dist/bench/fleet-sim.js [--hosts 100,1000 --delta-mib 10 --files 100 --gbps 1 --runs 200]
 *
 * The model (one swap):
 *   1. The coordinator copies the delta into its standby and reads its manifest (measured: the
 *      delta's files written and fsynced here, plus `--manifest-ms`), then proposes: every host sees
 *      the proposal one etcd round later (`--etcd-ms`).
 *   2. Each host prepares: fetches the manifest and drains its standby (`--prepare-ms`, drawn per
 *      host around it), then pulls the delta: a seed from the coordinator, any other host from a
 *      peer picked at random among the hosts that prepared and have a free place (at most
 *      `--peer-serve` each; a full peer answers 503 and the host asks another), waiting for one
 *      when none has. It falls back to the coordinator after `--peer-wait-ms` without a peer.
 *   3. Bytes flow by processor sharing: a transfer's rate is its sender's uplink divided among the
 *      sender's transfers, capped by the receiver's downlink.
 *   4. A host places the pulled files (measured: write and fsync each file here), says `prepared`,
 *      and serves peers from then on (visible one etcd round later).
 *   4b. Pipelined (what hosts do): a host that starts a transfer says it shares the snapshot (visible
 *      one etcd round later) and serves each file once placed; a host pulls from such a peer when
 *      no peer holding it whole has a free place. A transfer cannot run ahead of its sender: one
 *      whose bytes are all in before its sender's are is held, and its last batch (`--batch-mib`,
 *      the batch a sharing host places at a time) comes once the sender placed its own last
 *      batch. A transfer that is behind its sender runs at its share of the sender's uplink (the
 *      model does not slow it to the sender's own inflow: on equal links the two are alike).
 *   5. Once every host prepared, the coordinator commits (one etcd round), each host sees it one
 *      round later, and its web server serves the new release after a switch time drawn around
 *      `--switch-ms` (p50) with `--switch-p99-ms`.
 */
import { closeSync, fsyncSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { flag, machine, percentile } from './lib.js';

const listFlag = (name: string, dflt: number[]): number[] => {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? dflt : (process.argv[i + 1] ?? '').split(',').map(Number);
};

const HOSTS = listFlag('hosts', [100, 1000]);
const DELTA = flag('delta-mib', 10) * 2 ** 20;
const FILES = flag('files', 100);
const GBPS = flag('gbps', 1);
const RUNS = flag('runs', 200);
const SEEDS = flag('seeds', 2);
const PEER_SERVE = flag('peer-serve', 4);
// Measured on this machine (bench/README.md, "Fleet mode", 2 hosts): request → commit p50 169 ms for
// one 4 KiB change, of which about 35 ms is the coordinator's manifest read at 2,000 files; the rest is
// the host's prepare (its manifest, delta, drain and fsyncs) and etcd. Commit → last web server serving:
// p50 35 ms, p99 61 ms.
const MANIFEST_MS = flag('manifest-ms', 35);
const PREPARE_MS = flag('prepare-ms', 120);
const PREPARE_SPREAD = flag('prepare-spread', 0.25);
const ETCD_MS = flag('etcd-ms', 5);
const SWITCH_MS = flag('switch-ms', 35);
const SWITCH_P99_MS = flag('switch-p99-ms', 61);
const PEER_WAIT_MS = flag('peer-wait-ms', 30_000);
/** The bytes a host pulling and sharing places at a time (pull.ts, SHARED_PLACE_BATCH_BYTES). */
const BATCH = Math.min(flag('batch-mib', 1) * 2 ** 20, DELTA);
const BYTES_PER_MS = (GBPS * 1e9) / 8 / 1000;

/** The cost of placing the delta on a host, measured here: `files` files of its size written and fsynced. */
function measurePlaceMs(): number {
  const dir = mkdtempSync(join(tmpdir(), 'mirrorswap-fleet-sim-'));
  try {
    const each = Buffer.alloc(Math.ceil(DELTA / FILES), 0x61);
    const times: number[] = [];
    for (let round = 0; round < 3; round++) {
      const t = performance.now();
      for (let i = 0; i < FILES; i++) {
        const fd = openSync(join(dir, `${round}-${i}`), 'w');
        writeSync(fd, each);
        fsyncSync(fd);
        closeSync(fd);
      }
      times.push(performance.now() - t);
    }
    return times.sort((a, b) => a - b)[1] as number;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A seeded generator (mulberry32), so a run can be replayed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A log-normal draw with median `median` and the given sigma. */
function logNormal(random: () => number, median: number, sigma: number): number {
  const u = Math.max(random(), 1e-12);
  const v = random();
  return median * Math.exp(sigma * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v));
}

const COORDINATOR = -1;

type Kind = 'ready' | 'placed' | 'visible' | 'sharing' | 'lastBatch' | 'giveUp';
interface SimEvent {
  t: number;
  kind: Kind;
  host: number;
}

/** Timed events, earliest first (a binary heap). */
class EventQueue {
  readonly #heap: SimEvent[] = [];

  push(e: SimEvent): void {
    const h = this.#heap;
    h.push(e);
    for (let i = h.length - 1; i > 0; ) {
      const parent = (i - 1) >> 1;
      if ((h[parent] as SimEvent).t <= e.t) break;
      h[i] = h[parent] as SimEvent;
      h[parent] = e;
      i = parent;
    }
  }

  peek(): SimEvent | undefined {
    return this.#heap[0];
  }

  pop(): SimEvent | undefined {
    const h = this.#heap;
    const top = h[0];
    const last = h.pop();
    if (h.length > 0 && last !== undefined) {
      h[0] = last;
      for (let i = 0; ; ) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && (h[l] as SimEvent).t < (h[m] as SimEvent).t) m = l;
        if (r < h.length && (h[r] as SimEvent).t < (h[m] as SimEvent).t) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m] as SimEvent, h[i] as SimEvent];
        i = m;
      }
    }
    return top;
  }
}

interface Transfer {
  from: number;
  to: number;
  left: number;
  /** All its bytes are in before its sender's: it waits for the sender's last batch. */
  held?: boolean;
}

/** How hosts pass the bytes on: not at all (the coordinator sends all), once prepared, or as placed. */
type Mode = 'coordinator' | 'store-and-forward' | 'pipelined';

interface Outcome {
  lastServingMs: number;
  coordinatorBytes: number;
  fallbacks: number;
}

/** One swap over `hosts` hosts. */
function simulate(hosts: number, mode: Mode, placeMs: number, random: () => number): Outcome {
  const seeds = mode === 'coordinator' ? 0 : SEEDS;
  const switchSigma = Math.log(SWITCH_P99_MS / SWITCH_MS) / 2.326;
  const proposalSeen = placeMs + MANIFEST_MS + ETCD_MS;
  // timed events: [time, kind, host]
  const events = new EventQueue();
  const at = (t: number, kind: Kind, host: number) => events.push({ t, kind, host });
  for (let h = 0; h < hosts; h++) at(proposalSeen + logNormal(random, PREPARE_MS, PREPARE_SPREAD), 'ready', h);
  const serving = new Array<number>(hosts).fill(0); // pulls a host serves now (peers)
  const visible: number[] = []; // hosts others can pull from
  const sharing: number[] = []; // hosts pulling that others can pull from (pipelined)
  const lastBatchIn = new Set<number>(); // sharing hosts that placed their last batch
  const lastBatchPlaceMs = placeMs * (BATCH / DELTA);
  const waiting = new Set<number>(); // hosts waiting for a peer with a free place
  const transfers: Transfer[] = [];
  let coordinatorBytes = 0;
  let fallbacks = 0;
  let prepared = 0;
  let lastPreparedSeen = 0;
  let now = 0;

  const start = (from: number, to: number) => {
    transfers.push({ from, to, left: DELTA });
    if (from === COORDINATOR) coordinatorBytes += DELTA;
    else serving[from] = (serving[from] ?? 0) + 1;
  };
  const tryPeer = (h: number): boolean => {
    // a peer holding it whole first, then one still pulling it
    for (const among of [visible, sharing]) {
      const free = among.filter((p) => (serving[p] ?? 0) < PEER_SERVE && p !== h);
      if (free.length === 0) continue;
      start(free[Math.floor(random() * free.length)] as number, h);
      if (mode === 'pipelined') at(now + ETCD_MS, 'sharing', h);
      return true;
    }
    return false;
  };
  const wake = () => {
    for (const h of [...waiting]) if (tryPeer(h)) waiting.delete(h);
  };

  for (;;) {
    // the rates now: each sender's uplink shared among its transfers, each receiver pulls one
    const sending = new Map<number, number>();
    for (const x of transfers) if (!x.held) sending.set(x.from, (sending.get(x.from) ?? 0) + 1);
    const rate = (x: Transfer) => (x.held ? 0 : Math.min(BYTES_PER_MS / (sending.get(x.from) ?? 1), BYTES_PER_MS));
    let nextDone = Number.POSITIVE_INFINITY;
    for (const x of transfers) if (!x.held) nextDone = Math.min(nextDone, now + x.left / rate(x));
    const nextEvent = events.peek()?.t ?? Number.POSITIVE_INFINITY;
    if (nextDone === Number.POSITIVE_INFINITY && nextEvent === Number.POSITIVE_INFINITY) break;
    const t = Math.min(nextDone, nextEvent);
    for (const x of transfers) x.left -= rate(x) * (t - now);
    now = t;
    // transfers done
    for (let i = transfers.length - 1; i >= 0; i--) {
      const x = transfers[i] as Transfer;
      if (x.held || x.left > 1e-6) continue;
      if (mode === 'pipelined' && x.from !== COORDINATOR && !lastBatchIn.has(x.from)) {
        // ahead of its sender: the last batch comes once the sender placed its own
        x.held = true;
        x.left = BATCH;
        continue;
      }
      transfers.splice(i, 1);
      if (x.from !== COORDINATOR) serving[x.from] = (serving[x.from] ?? 1) - 1;
      at(now + placeMs, 'placed', x.to);
      if (mode === 'pipelined') at(now + lastBatchPlaceMs, 'lastBatch', x.to);
    }
    if (nextEvent <= now) {
      const e = events.pop() as SimEvent;
      if (e.kind === 'ready') {
        if (seeds === 0 || e.host < seeds) {
          start(COORDINATOR, e.host);
          if (mode === 'pipelined') at(now + ETCD_MS, 'sharing', e.host);
        } else if (!tryPeer(e.host)) {
          waiting.add(e.host);
          at(now + PEER_WAIT_MS, 'giveUp', e.host);
        }
      } else if (e.kind === 'giveUp' && waiting.delete(e.host)) {
        fallbacks++;
        start(COORDINATOR, e.host);
        if (mode === 'pipelined') at(now + ETCD_MS, 'sharing', e.host);
      } else if (e.kind === 'placed') {
        prepared++;
        lastPreparedSeen = Math.max(lastPreparedSeen, now + ETCD_MS);
        if (seeds > 0) at(now + ETCD_MS, 'visible', e.host);
      } else if (e.kind === 'visible') {
        visible.push(e.host);
      } else if (e.kind === 'sharing') {
        sharing.push(e.host);
      } else if (e.kind === 'lastBatch') {
        lastBatchIn.add(e.host);
        for (const x of transfers) if (x.from === e.host) x.held = false;
      }
    }
    wake();
  }
  if (prepared !== hosts) throw new Error(`only ${prepared} of ${hosts} hosts prepared`);
  // the commit: one etcd round, seen by each host a round later, then each web server's switch
  const committed = lastPreparedSeen + ETCD_MS;
  let last = 0;
  for (let h = 0; h < hosts; h++)
    last = Math.max(last, committed + ETCD_MS + logNormal(random, SWITCH_MS, switchSigma));
  return { lastServingMs: last, coordinatorBytes, fallbacks };
}

function main(): void {
  const placeMs = measurePlaceMs();
  console.log(`# Fleet swaps by a discrete-event model: ${machine()}`);
  console.log(
    `\nInputs: a ${DELTA / 2 ** 20} MiB delta in ${FILES} files, ${GBPS} Gb/s links each way, ${SEEDS} seeds, ` +
      `${PEER_SERVE} peer pulls served at once; measured here: placing the delta ${placeMs.toFixed(0)} ms ` +
      `(write and fsync of each file); from bench/README.md: manifest ${MANIFEST_MS} ms, host prepare ` +
      `${PREPARE_MS} ms (log-normal, sigma ${PREPARE_SPREAD}), etcd round ${ETCD_MS} ms, web server switch ` +
      `p50 ${SWITCH_MS} / p99 ${SWITCH_P99_MS} ms. ${RUNS} runs each.\n`,
  );
  console.log(
    '| hosts | mode | request → last web server serving p50 / p99 | coordinator bytes out / delta | fallbacks per swap |',
  );
  console.log(
    '| ----- | ---- | ------------------------------------------- | ----------------------------- | ------------------ |',
  );
  const p99s: Record<string, number> = {};
  const MODES: Record<Mode, string> = {
    pipelined: `peers, ${SEEDS} seeds, pipelined`,
    'store-and-forward': `peers, ${SEEDS} seeds, store and forward`,
    coordinator: 'coordinator only',
  };
  for (const hosts of HOSTS) {
    for (const mode of Object.keys(MODES) as Mode[]) {
      const times: number[] = [];
      let bytes = 0;
      let fallbacks = 0;
      for (let run = 0; run < RUNS; run++) {
        const o = simulate(hosts, mode, placeMs, rng(run * 7919 + hosts));
        times.push(o.lastServingMs);
        bytes += o.coordinatorBytes;
        fallbacks += o.fallbacks;
      }
      times.sort((a, b) => a - b);
      p99s[`${hosts} ${mode}`] = percentile(times, 99);
      console.log(
        `| ${hosts} | ${MODES[mode]} | ${(percentile(times, 50) / 1000).toFixed(2)} / ${(percentile(times, 99) / 1000).toFixed(2)} s | ` +
          `${(bytes / RUNS / DELTA).toFixed(2)} | ${(fallbacks / RUNS).toFixed(2)} |`,
      );
    }
  }
  if (HOSTS.length >= 2) {
    const [small, large] = [HOSTS[0], HOSTS[HOSTS.length - 1]];
    for (const mode of ['pipelined', 'store-and-forward'] as const) {
      const ratio = (p99s[`${large} ${mode}`] ?? 0) / (p99s[`${small} ${mode}`] ?? 1);
      console.log(`\nWith peers (${MODES[mode]}), p99 at ${large} hosts / at ${small} hosts: **${ratio.toFixed(2)}x**`);
    }
  }
}

main();
