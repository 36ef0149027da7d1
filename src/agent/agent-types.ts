import type { CoordinatorOptions, FleetStatus } from '../fleet/coordinator/coordinator.js';
import type { Heartbeat, ServedCounts } from '../store/heartbeat.js';
import type { Logger } from '../core/logger.js';
import type { SlotName, StoreLayout } from '../store/store-layout.js';
import type { SwapPhase, SwapResult } from './api/metrics.js';
import type { CopyStats } from '../tree/tree-copy.js';
import type { VariantEncoding } from '../store/content-index.js';
import type { DeriveStats } from '../tree/derive-variants.js';
import type { WalkProgress } from './master/master-walks.js';

/** `Agent.start`'s options; each default is in `AGENT_DEFAULTS`. */
export interface AgentOptions {
  layout: StoreLayout;
  logger: Logger;
  /** Longest wait for servers to let go of a slot, before a copy and after a publish. */
  drainTimeoutMs?: number;
  /** A server whose heartbeat is older than this is dead. */
  serverTtlMs?: number;
  /** Sync this often when master has changes (0: never). */
  intervalMs?: number;
  /** Sync automatically once master changes have settled for `settleMs`. */
  auto?: boolean;
  settleMs?: number;
  onMount?: string | undefined;
  onUnmount?: string | undefined;
  /** Watch master for changes made by tools writing to it directly. */
  watchMaster?: boolean;
  /** fsync copied files before publishing them. */
  durable?: boolean;
  /**
   * Compare master with the mounted copy this often, in the background, to
   * catch changes the journal missed (0: never). Each one found is logged,
   * counted and synced like any other change.
   */
  verifyIntervalMs?: number;
  /** Make precompressed variants of the files each sync copies, and their content index (docs/CONTRACT.md). */
  variants?: boolean;
  /** Codings of the variants, among `VARIANT_ENCODINGS`. */
  variantEncodings?: readonly VariantEncoding[];
  /** Brotli quality, 0 to 11. */
  brotliQuality?: number;
  /** gzip level, 1 to 9. */
  gzipLevel?: number;
  /** Files smaller than this many bytes get no variant. */
  variantMinSize?: number;
  /** Keep a variant only when it is at least this many percent smaller. */
  variantMinSaving?: number;
  /** Extensions (no dot) of the files to compress. */
  variantTypes?: readonly string[];
  /** Walk threads that may compress at once (0: all of them): a CPU budget for full copies. */
  variantThreads?: number;
  /**
   * Compress the variants of what the write API and the watcher see land in
   * master as it lands, into the variant cache, so a sync links them
   * instead of compressing on its way to the publish (master/precompress.ts).
   */
  precompress?: boolean;
  /**
   * Releases kept, one copy each (`--keep`, 2 to 8): the mounted one and the
   * ones before it, servable to requests pinned to them (skew protection) and
   * for rollback. 2, the default: the seed's two copies, as ever.
   */
  keep?: number;
  /** How long a replaced release stays servable to pinned requests, in ms (`--skew-max-age`; 0: until its copy is reused). */
  skewMaxAgeMs?: number;
  /** Copies share unchanged files by hard link (`--share-files`); default: when keeping more than two releases. */
  shareFiles?: boolean;
  /** Coordinate a fleet of hosts through etcd (`--etcd`, `--fleet`): see docs/FLEET.md. */
  fleet?: FleetAgentOptions | undefined;
}

/** The coordinator's options; the agent adds its slots and logger. */
export type FleetAgentOptions = Omit<CoordinatorOptions, 'slotRoots' | 'manifestsDir' | 'log'> & {
  /** The token hosts give to pull content. */
  token: string;
};

export type ResolvedAgentOptions = Required<Omit<AgentOptions, 'onMount' | 'onUnmount' | 'fleet'>> &
  Pick<AgentOptions, 'onMount' | 'onUnmount' | 'fleet'>;

/** A swap copies master into the standby and mounts it (`sync`), or mounts the older copy again (`rollback`). */
export type SwapKind = 'sync' | 'rollback';

/** What one swap did, as `/v1/sync?wait` returns it and status lists it. */
export interface SwapRecord {
  kind: SwapKind;
  result: SwapResult;
  /** Epoch published (or that would have been, for a failed swap). */
  epoch: number;
  from: SlotName;
  to: SlotName;
  mode: 'incremental' | 'full' | 'none';
  startedAt: string;
  phases: Partial<Record<SwapPhase, number>>;
  copied: CopyStats;
  /** With `--share-files`: how many of `copied.files` were hard-linked from the mounted copy instead of copied. */
  shared?: number;
  /** What the copy's derive step did (variants made, reused, removed), when variants are on. */
  variants?: DeriveStats;
  /** Paths of master the agent may not read (at most 100 of `copied.unreadable`): left as they were in the copy. */
  unreadable?: string[];
  error?: { code: string; message: string };
  /** Servers dropped from a drain because their heartbeat went stale. */
  dropped: string[];
  /** In a fleet: the hosts that switched with it, and those evicted from it. */
  fleet?: { members: string[]; evicted: string[] };
  /** The release id of what it mounts: given at sync, or the earlier release a rollback mounts again. */
  release?: string;
  /**
   * Keeping more than two releases: the retained release whose copy this
   * sync reused (retired from the epoch file, then drained, before the copy),
   * and whether it was younger than `--skew-max-age` (reused early).
   */
  reused?: { epoch: number; release?: string; early: boolean };
}

/** What the agent compressed as files landed in master (master/precompress.ts), since it started. */
export interface PrecompressStatus {
  /** Files whose variants were made. */
  files: number;
  /** Variants made into the cache. */
  variants: number;
  /** Paths left to the sync's own compression: the queue was full, or a sync began. */
  dropped: number;
  /** Files that could not be compressed (a full disk, say). */
  failed: number;
  /** Entries the cache holds now. */
  entries: number;
  /** Their bytes, counted against the cache's budget (a full cache leaves changes to the syncs: `dropped`). */
  bytes: number;
  /** Paths waiting. */
  queued: number;
}

/** The swap under way: its phase, and during the copy the files and bytes copied so far. */
export interface SwapProgress {
  kind: SwapKind;
  phase: SwapPhase;
  copied?: CopyStats;
}

/** A retained release, as status shows it. */
export interface RetainedStatus {
  slot: SlotName;
  epoch: number;
  release?: string;
  replacedAt: string;
  /** Seconds since it was replaced. */
  ageSeconds: number;
  /** When pinned requests stop being served from it (null: when its copy is reused). */
  until: string | null;
  /** Requests in flight on its copy, summed over the live servers' heartbeats. */
  inflight: number;
  /**
   * Requests served from it, pinned to it or as an asset fallback, summed over
   * the live servers' heartbeats: each counts from its own start, or from when
   * it first held the release retained (nginx counts none).
   */
  served: ServedCounts;
}

export interface ServerStatus extends Heartbeat {
  live: boolean;
}

/** What made the agent compare master with the mounted copy. */
export type ReconcileTrigger = 'start' | 'verify' | 'incomplete';
/** What found changes the journal missed: a comparison, or a full copy. */
export type RepairTrigger = ReconcileTrigger | 'full_sync';

export interface AgentStatus {
  ready: boolean;
  epoch: number;
  mounted: SlotName | null;
  publishedAt: string | null;
  /** The mounted release's id, when its sync named one. */
  release?: string;
  /**
   * The release mounted before (its epoch and id), and whether the standby
   * still holds it: what `rollback` (or `rollback --to` it) mounts again.
   */
  previous?: { epoch: number; release?: string; retained: boolean };
  /** Releases kept (`--keep`). */
  keep: number;
  /** Keeping more than two: the releases other copies hold, servable to pinned requests, newest first. */
  retained: RetainedStatus[];
  /** `syncing` is true while a copy into the standby is unfinished (its content is mixed). */
  standby: { slot: SlotName; seq: number | null; syncing: boolean } | null;
  journalSeq: number;
  /** Master paths changed since the mounted slot was synced; null when unknown (a full compare is due). */
  pendingChanges: number | null;
  /**
   * Whether the journal is known to name every change since the mounted copy
   * was synced (false after a restart or a lost event, until master is
   * compared again), and the last such comparison.
   */
  changeTracking: {
    complete: boolean;
    watching: boolean;
    lastReconcile: { at: string; trigger: ReconcileTrigger; found: number } | null;
  };
  paused: boolean;
  swapping: SwapProgress | null;
  /** Whole walks of master under way (a full sync's, a verify's, a comparison's), with how far each has got. */
  walks: WalkProgress[];
  servers: ServerStatus[];
  lastSwaps: SwapRecord[];
  /** With `--precompress` (the default with variants): what was compressed as files landed in master. */
  precompress?: PrecompressStatus;
  /** In fleet mode: every host, the proposal under way and the committed epoch. */
  fleet?: FleetStatus | { error: string };
}
