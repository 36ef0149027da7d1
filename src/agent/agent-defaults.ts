import { DRAIN_DEFAULTS } from '../store/drain.js';
import { TREE_DEFAULTS } from '../tree/tree-defaults.js';
import { RETENTION_DEFAULTS } from '../store/retained-releases.js';

/**
 * Every default of the agent, in one place: `Agent.start`, the CLI's flags
 * and their help, and the docs read them here. Durations in milliseconds,
 * sizes in bytes.
 */
export const AGENT_DEFAULTS = Object.freeze({
  /** Longest wait for servers to let go of a slot, before a copy and after a publish. */
  drainTimeoutMs: DRAIN_DEFAULTS.drainTimeoutMs,
  /** A server whose heartbeat is older than this is dead; also the lease written into the epoch file. */
  serverTtlMs: DRAIN_DEFAULTS.serverTtlMs,
  /** Sync this often when master has changes (0: never). */
  intervalMs: 0,
  /** Sync once changes to master have settled for `settleMs`. */
  auto: false,
  settleMs: 1000,
  /** Watch master for changes made by tools writing to it directly. */
  watchMaster: true,
  /** fsync copied files before publishing them. */
  durable: TREE_DEFAULTS.durable,
  /** Compare master with the mounted copy this often, to catch changes the journal missed (0: never). */
  verifyIntervalMs: 10 * 60_000,
  /** Make precompressed variants (and the content index) of what each sync copies. */
  variants: TREE_DEFAULTS.variants,
  /** Codings of the variants made. */
  variantEncodings: TREE_DEFAULTS.variantSettings.encodings,
  brotliQuality: TREE_DEFAULTS.variantSettings.brotliQuality,
  gzipLevel: TREE_DEFAULTS.variantSettings.gzipLevel,
  /** Files smaller than this get no variant. */
  variantMinSize: TREE_DEFAULTS.variantSettings.minSize,
  /** A variant is kept only when it is this many percent smaller than its original. */
  variantMinSaving: TREE_DEFAULTS.variantSettings.minSavingPercent,
  /** Extensions of the files compressed. */
  variantTypes: TREE_DEFAULTS.variantSettings.types,
  /** Walk threads that may compress at once (0: all): the cores a full copy's compression may take. */
  variantThreads: TREE_DEFAULTS.variantSettings.threads,
  /** Compress variants as files land in master, not at sync. */
  precompress: true,
  /** Releases kept, one copy each: the seed's two. */
  keep: 2,
  /** How long a replaced release stays servable to pinned requests (0: until its copy is reused). */
  skewMaxAgeMs: RETENTION_DEFAULTS.skewMaxAgeMs,
});

/**
 * The range of each whole-number variant option, inclusive: what
 * `Agent.start` and the flags (`--brotli-quality`, …) both take.
 */
export const VARIANT_RANGES = Object.freeze({
  brotliQuality: [0, 11],
  gzipLevel: [1, 9],
  variantMinSize: [0, Number.MAX_SAFE_INTEGER],
  variantMinSaving: [0, 99],
  variantThreads: [0, 64],
} as const);

/** The smallest values taken, where a smaller one would be a mistake rather than a choice. */
export const AGENT_MINIMUMS = Object.freeze({
  intervalMs: 100,
  drainTimeoutMs: 1,
  serverTtlMs: 100,
});

/** The agent's HTTP API. */
export const API_DEFAULTS = Object.freeze({
  listen: '127.0.0.1:7070',
  /** Largest body the write API takes. */
  maxBodyBytes: 64 * 1024 * 1024,
});
