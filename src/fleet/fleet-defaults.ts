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
});

/** The host agent's (`mirrorswap host`): its servers are drained as the sync agent drains its own. */
export const HOST_DEFAULTS = Object.freeze({
  drainTimeoutMs: DRAIN_DEFAULTS.drainTimeoutMs,
  serverTtlMs: DRAIN_DEFAULTS.serverTtlMs,
  durable: TREE_DEFAULTS.durable,
  /** How often waits re-read etcd while they also watch it: a lost watch event costs at most this. */
  backstopMs: 1000,
});
