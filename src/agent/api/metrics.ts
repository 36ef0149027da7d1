import type { RetainedRelease } from '../../store/epoch-file.js';
import { type Heartbeat, retainedRequests } from '../../store/heartbeat.js';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export const SWAP_RESULTS = ['ok', 'failed', 'drain_timeout'] as const;
export type SwapResult = (typeof SWAP_RESULTS)[number];
export const SWAP_PHASES = ['retire', 'wait', 'copy', 'prepare', 'publish', 'drain'] as const;
export type SwapPhase = (typeof SWAP_PHASES)[number];

/** The agent's metrics, in their own registry. */
export class AgentMetrics {
  readonly registry = new Registry();
  readonly epoch: Gauge;
  readonly swaps: Counter<'result' | 'kind'>;
  readonly phaseSeconds: Histogram<'phase'>;
  readonly copiedFiles: Counter;
  readonly copiedBytes: Counter;
  readonly deletedFiles: Counter;
  readonly unreadable: Gauge;
  readonly lastSuccess: Gauge;
  readonly writes: Counter<'op' | 'result'>;
  readonly hookFailures: Counter<'hook'>;
  readonly release: Gauge<'release' | 'epoch'>;
  readonly repairs: Counter<'trigger'>;
  readonly knowledgeGaps: Counter;
  readonly reconcileSeconds: Histogram;
  readonly earlyReuse: Counter;
  /** The retained releases of the epoch published last (skew protection). */
  #retained: readonly RetainedRelease[] = [];

  /** What the metrics say of the epoch published: its number, its release as an info metric, the releases retained. */
  mounted(record: { epoch: number; release?: string | undefined; retained?: readonly RetainedRelease[] }): void {
    this.epoch.set(record.epoch);
    this.release.reset();
    this.release.set({ release: record.release ?? '', epoch: String(record.epoch) }, 1);
    this.#retained = record.retained ?? [];
  }

  constructor(sources: {
    pendingChanges: () => number;
    servers: () => Promise<{ live: Heartbeat[]; stale: number }>;
    /** What was compressed as files landed in master (master/precompress.ts); undefined when it is off. */
    precompress?: () => { files: number; dropped: number; failed: number; entries: number; bytes: number } | undefined;
  }) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'mirrorswap_agent_' });
    this.epoch = new Gauge({ name: 'mirrorswap_agent_epoch', help: 'Epoch currently published', registers });
    this.release = new Gauge({
      name: 'mirrorswap_agent_release_info',
      help: 'The release mounted (1): its id (empty when its sync named none) and epoch',
      labelNames: ['release', 'epoch'],
      registers,
    });
    this.swaps = new Counter({
      name: 'mirrorswap_agent_swaps_total',
      help: 'Swaps attempted, by result (ok, failed, drain_timeout) and kind (sync, rollback)',
      labelNames: ['result', 'kind'],
      registers,
    });
    this.phaseSeconds = new Histogram({
      name: 'mirrorswap_agent_swap_phase_seconds',
      help: 'Duration of each swap phase: wait (standby free), copy, prepare (fleet mode: every host pulls and answers, then the commit), publish, drain',
      labelNames: ['phase'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300],
      registers,
    });
    this.copiedFiles = new Counter({
      name: 'mirrorswap_agent_copied_files_total',
      help: 'Files copied into a standby slot',
      registers,
    });
    this.copiedBytes = new Counter({
      name: 'mirrorswap_agent_copied_bytes_total',
      help: 'Bytes copied into a standby slot',
      registers,
    });
    this.deletedFiles = new Counter({
      name: 'mirrorswap_agent_deleted_files_total',
      help: 'Entries deleted from a standby slot',
      registers,
    });
    this.unreadable = new Gauge({
      name: 'mirrorswap_agent_unreadable_entries',
      help: 'Entries of master the agent may not read (their mode shuts it out), as the last copy found them: left as they were in the copy',
      registers,
    });
    this.lastSuccess = new Gauge({
      name: 'mirrorswap_agent_last_success_timestamp_seconds',
      help: 'Unix time of the last swap that completed with every server drained',
      registers,
    });
    this.writes = new Counter({
      name: 'mirrorswap_agent_writes_total',
      help: 'Write API operations by op (put, delete, batch) and result (ok, or the HTTP status refused with)',
      labelNames: ['op', 'result'],
      registers,
    });
    this.hookFailures = new Counter({
      name: 'mirrorswap_agent_hook_failures_total',
      help: 'Mount and unmount hooks that failed',
      labelNames: ['hook'],
      registers,
    });
    this.repairs = new Counter({
      name: 'mirrorswap_agent_master_repairs_total',
      help: 'Master paths found changed that the change journal did not know, by what found them (start, verify, full_sync, incomplete)',
      labelNames: ['trigger'],
      registers,
    });
    this.knowledgeGaps = new Counter({
      name: 'mirrorswap_agent_journal_gaps_total',
      help: 'Moments the agent may have missed changes to master (lost events, unwatchable directories); each makes the next syncs compare trees',
      registers,
    });
    this.reconcileSeconds = new Histogram({
      name: 'mirrorswap_agent_master_compare_seconds',
      help: 'Duration of each background comparison of master with the mounted copy (at start, after a lost event, every --verify-interval)',
      buckets: [0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
      registers,
    });
    this.earlyReuse = new Counter({
      name: 'mirrorswap_agent_early_reuses_total',
      help: 'Syncs that reused the copy of a retained release younger than --skew-max-age (every copy held one): requests pinned to it get the mounted release from then on',
      registers,
    });
    const self = this;
    new Gauge({
      name: 'mirrorswap_agent_retained_release_age_seconds',
      help: 'Releases other copies hold, servable to requests pinned to them (--keep above 2): seconds since each was replaced, by slot, epoch and release id',
      labelNames: ['slot', 'epoch', 'release'],
      registers,
      collect() {
        this.reset();
        const now = Date.now();
        for (const r of self.#retained) {
          this.set(
            { slot: r.slot, epoch: String(r.epoch), release: r.release ?? '' },
            (now - Date.parse(r.replacedAt)) / 1000,
          );
        }
      },
    });
    new Gauge({
      name: 'mirrorswap_agent_retained_release_requests',
      help: 'Requests of each retained release, summed over the live servers\' heartbeats, by slot, epoch, release id and kind: "inflight" now, "pinned" and "fallback" served since each server started (nginx counts only in flight)',
      labelNames: ['slot', 'epoch', 'release', 'kind'],
      registers,
      async collect() {
        this.reset();
        if (self.#retained.length === 0) return;
        const { live } = await sources.servers();
        for (const r of self.#retained) {
          const labels = { slot: r.slot, epoch: String(r.epoch), release: r.release ?? '' };
          for (const [kind, n] of Object.entries(retainedRequests(live, r))) this.set({ ...labels, kind }, n);
        }
      },
    });
    // counters read from the precompress's own counts (monotonic since the agent started)
    const counted: Record<string, number> = { compressed: 0, dropped: 0, failed: 0 };
    new Counter({
      name: 'mirrorswap_agent_precompress_files_total',
      help: 'Files of master whose variants were to be compressed as they landed, by result: "compressed" into the variant cache, "dropped" (left to the sync: the cache full, or a sync began), "failed" (a full disk, say)',
      labelNames: ['result'],
      registers,
      collect() {
        const status = sources.precompress?.();
        if (!status) return;
        const now: Record<string, number> = {
          compressed: status.files,
          dropped: status.dropped,
          failed: status.failed,
        };
        for (const [result, n] of Object.entries(now)) {
          // every result shown, 0 included, so a rate of failures has a series to start from
          this.inc({ result }, Math.max(0, n - (counted[result] ?? 0)));
          counted[result] = n;
        }
      },
    });
    new Gauge({
      name: 'mirrorswap_agent_variant_cache_entries',
      help: 'Variants the variant cache holds, compressed as their files landed in master and not yet taken by both copies',
      registers,
      collect() {
        const status = sources.precompress?.();
        if (status) this.set(status.entries);
      },
    });
    new Gauge({
      name: 'mirrorswap_agent_variant_cache_bytes',
      help: 'Bytes of the variant cache\'s entries, against its budget: a full cache leaves changes to the sync (precompress_files_total{result="dropped"})',
      registers,
      collect() {
        const status = sources.precompress?.();
        if (status) this.set(status.bytes);
      },
    });
    new Gauge({
      name: 'mirrorswap_agent_pending_changes',
      help: 'Master paths changed since the mounted slot was synced',
      registers,
      collect() {
        this.set(sources.pendingChanges());
      },
    });
    new Gauge({
      name: 'mirrorswap_agent_servers',
      help: 'Web servers with a heartbeat, by state (live, stale)',
      labelNames: ['state'],
      registers,
      async collect() {
        const { live, stale } = await sources.servers();
        this.set({ state: 'live' }, live.length);
        this.set({ state: 'stale' }, stale);
      },
    });
  }
}
