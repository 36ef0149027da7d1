import { DRAIN_DEFAULTS } from '../store/drain.js';
import { TREE_DEFAULTS } from '../tree/tree-defaults.js';

/**
 * Every default of fleet mode, in one place: the coordinator's and the host
 * agent's options, the CLI's flags and their help, and docs/FLEET.md read
 * them here. Durations in milliseconds.
 */

/** What a swap does with a host that did not prepare in time. */
export type StragglerPolicy = 'block' | 'evict';

export const FLEET_DEFAULTS = Object.freeze({
  /** Deadline of every etcd call. */
  etcdTimeoutMs: 2000,
  /** Lease of the coordinator's and each host's keys: a dead one drops out after this. */
  leaseTtlMs: 5000,
  /** Longest wait for every member to prepare a swap. */
  prepareTimeoutMs: 60_000,
  straggler: 'block' as StragglerPolicy,
  /** The quorum of a swap: hosts that must prepare it for it to commit (0: no floor). */
  minMembers: 0,
  /** Hosts that pull a swap's files from the coordinator; the others pull them from peers (0: all from it). */
  seeds: 2,
});

/** The host agent's (`mirrorswap host`): its servers are drained as the sync agent drains its own. */
export const HOST_DEFAULTS = Object.freeze({
  drainTimeoutMs: DRAIN_DEFAULTS.drainTimeoutMs,
  serverTtlMs: DRAIN_DEFAULTS.serverTtlMs,
  durable: TREE_DEFAULTS.durable,
  /** How often waits re-read etcd while they also watch it: a lost watch event costs at most this. */
  backstopMs: 1000,
  /** Peer pulls this host serves at once (more are answered 503: the peer asks another); 0 serves none. */
  peerServe: 4,
  /** A peer's answer: its head within this, and no silence longer; past it the pull asks another peer. */
  peerTimeoutMs: 2000,
  /** Longest a pull waits, in all, for a peer to hold the snapshot before it fetches from the coordinator. */
  peerWaitMs: 30_000,
  /** Failed peer answers (not busy ones) before a pull fetches the rest from the coordinator. */
  peerFailures: 3,
  /** The slowest a peer may send, on average past a grace of the peer timeout: a slower one is left. */
  peerMinBytesPerSecond: 1024 * 1024,
  /** How long pulls of a slot about to be rewritten may run on before they are cut. */
  peerCutGraceMs: 500,
});
