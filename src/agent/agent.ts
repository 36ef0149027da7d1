import { join } from 'node:path';
import type { EpochRecord } from '../store/epoch-file.js';
import { FleetCoordinator } from '../fleet/coordinator/coordinator.js';
import { type FleetApi, fleetRouter } from '../fleet/coordinator/fleet-api.js';
import { isLive, readHeartbeats, retainedRequests } from '../store/heartbeat.js';
import { MAX_KEEP, type SlotName, type StoreLayout, keptSlots } from '../store/store-layout.js';
import { copiesDiskUsage } from '../tree/copies-disk-usage.js';
import { existsSync } from 'node:fs';
import { nextStandby } from './swap/retention.js';
import type { AgentContext } from './agent-context.js';
import { AGENT_DEFAULTS } from './agent-defaults.js';
import type {
  AgentOptions,
  AgentStatus,
  ReconcileTrigger,
  ResolvedAgentOptions,
  RetainedStatus,
  SwapRecord,
} from './agent-types.js';
import { compareTrees } from '../tree/compare-trees.js';
import type { Journal } from './master/journal.js';
import { MasterWatcher } from './master/master-watcher.js';
import { MasterWalks } from './master/master-walks.js';
import { Precompress } from './master/precompress.js';
import type { MasterWriter } from './master/master-writer.js';
import { AgentMetrics } from './api/metrics.js';
import { type OpenedStore, openStore } from './open-store.js';
import { type ReconcileResult, reconcileMaster } from './swap/reconcile.js';
import { followCommitted } from './swap/fleet-truth.js';
import { Schedule } from './swap/schedule.js';
import type { StoreLock } from '../store/store-lock.js';
import { runSwap } from './swap/swap.js';
import { SwapQueue, rollbackRefusal } from './swap/swap-queue.js';
import type { Difference } from '../tree/tree-copy.js';
import { variantOptionsRefusal, variantSettings } from './variant-settings.js';

export type {
  AgentOptions,
  AgentStatus,
  ReconcileTrigger,
  ServerStatus,
  SwapKind,
  SwapProgress,
  SwapRecord,
} from './agent-types.js';

/** How many swaps status lists. */
const HISTORY = 20;

/** How long after a lost event the comparison of master starts: events of one burst come together. */
const RECONCILE_DELAY_MS = 1000;

/**
 * The sync agent: sole writer of master and of the epoch file. It copies
 * master into the standby slot, publishes the epoch that mounts it, and waits
 * until every live server has switched and drained the old slot.
 *
 * The parts, one file each: crash recovery (`open-store.ts`), the queue and
 * its rules (`swap-queue.ts`), the swap's phases (`swap.ts`), the copy step
 * (`copy-into-slot.ts`), the comparison of master (`reconcile.ts`) and the
 * agent's own clock (`schedule.ts`). This class wires them and reports status.
 */
export class Agent {
  readonly layout: StoreLayout;
  readonly metrics: AgentMetrics;
  readonly writer: MasterWriter;
  /** The fleet content endpoints (`/v1/fleet`), in fleet mode. */
  readonly fleetApi: FleetApi | undefined;
  readonly #ctx: AgentContext;
  readonly #lock: StoreLock;
  readonly #journal: Journal;
  readonly #queue: SwapQueue;
  readonly #schedule: Schedule;
  #history: SwapRecord[] = [];
  #lastReconcile: ReconcileResult | null = null;
  #reconcileTimer: NodeJS.Timeout | undefined;
  #closed = false;

  private constructor(opts: ResolvedAgentOptions, store: OpenedStore) {
    this.layout = opts.layout;
    this.writer = store.writer;
    this.#lock = store.lock;
    this.#journal = store.journal;
    this.metrics = new AgentMetrics({
      pendingChanges: () => this.pendingChanges() ?? -1,
      precompress: () => this.#ctx?.precompress?.status(),
      servers: async () => {
        const hbs = await readHeartbeats(this.layout.serversDir);
        const live = hbs.filter((h) => isLive(h, opts.serverTtlMs));
        return { live, stale: hbs.length - live.length };
      },
    });
    this.metrics.mounted(store.epoch);
    const fleet = opts.fleet
      ? new FleetCoordinator({
          ...opts.fleet,
          slotRoots: opts.layout.slots,
          manifestsDir: opts.layout.fleetManifestsDir,
          log: opts.logger,
        })
      : undefined;
    fleet?.registerMetrics(this.metrics.registry);
    this.fleetApi = fleet && opts.fleet ? fleetRouter(fleet.snapshots, opts.fleet.token, opts.logger) : undefined;
    const settings = variantSettings(opts);
    const precompress =
      settings && opts.precompress
        ? new Precompress({
            master: opts.layout.master,
            cache: opts.layout.variantCacheDir,
            settings,
            log: opts.logger,
          })
        : undefined;
    if (precompress) store.writer.onApplied = (paths) => precompress.add(paths);
    this.#ctx = {
      fleet,
      precompress,
      layout: opts.layout,
      opts,
      log: opts.logger,
      metrics: this.metrics,
      journal: store.journal,
      slots: store.slots,
      writer: store.writer,
      watcher: undefined,
      epoch: store.epoch,
      swapping: null,
      walks: new MasterWalks(),
      incomplete: (reason) => this.#incomplete(reason),
    };
    this.#queue = new SwapQueue({
      swap: async (kind, full, onPublished, asked) => {
        const record = await runSwap(this.#ctx, kind, full, onPublished, asked);
        this.#history = [record, ...this.#history].slice(0, HISTORY);
        // the entries the copy took are its own now; off the swap's path
        this.#ctx.precompress?.prune().catch((err: Error) => {
          this.#ctx.log.warn({ err: err.message }, 'could not prune the variant cache');
        });
        return record;
      },
      reconcile: (trigger) => this.#reconcile(trigger),
    });
    this.#schedule = new Schedule(
      {
        sync: (reason) => void this.requestSync({ reason }),
        verify: () => void this.#queue.reconcile('verify'),
        hasChanges: () => this.pendingChanges() !== 0,
        paused: () => this.#queue.paused,
      },
      opts,
    );
  }

  /**
   * Take the store (one agent per store), finish whatever a crash left
   * half-done, initialise the store if needed, and start watching.
   */
  static async start(options: AgentOptions): Promise<Agent> {
    const given = withoutUndefined(options);
    const keep = given.keep ?? AGENT_DEFAULTS.keep;
    const opts: ResolvedAgentOptions = { ...AGENT_DEFAULTS, shareFiles: keep > 2, ...given };
    keepRefusal(opts);
    variantOptionsRefusal(opts);
    const store = await openStore(opts.layout, opts.logger, {
      durable: opts.durable,
      lease: opts.serverTtlMs,
      variants: variantSettings(opts),
      share: opts.shareFiles,
    });
    const agent = new Agent(opts, store);
    try {
      // Whatever happened to master while no agent watched it is unknown: until master is
      // compared with the mounted copy (queued below), each slot's next sync compares trees.
      if (!store.initialised)
        await store.journal.logGap('agent started: master may have changed while no agent watched it');
      if (opts.watchMaster) await agent.#watchMaster();
      agent.#ctx.fleet?.start((committed) => followCommitted(agent.#ctx, committed));
      if (!store.initialised) void agent.#queue.reconcile('start');
      return agent;
    } catch (err) {
      await agent.close();
      throw err;
    }
  }

  async #watchMaster(): Promise<void> {
    const watcher = new MasterWatcher({
      root: this.layout.master,
      own: this.writer.ownWrites,
      fenceDir: join(this.layout.stateDir, 'watch-fence'),
      onChanges: (paths) =>
        this.#journal.logTouched(paths).then(
          () => {
            this.#ctx.precompress?.add(paths);
            this.changed();
          },
          (err: Error) => {
            // the paths are known in memory; a restart would not know them, and logs a gap anyway
            this.#ctx.log.error({ err: err.message }, 'could not record changes seen in master');
          },
        ),
      onIncomplete: (reason) => this.#incomplete(reason),
    });
    this.#ctx.watcher = watcher;
    await watcher.start();
    // master's size as the watcher listed it: what the first whole walk's progress is measured against
    this.#ctx.walks.entries ??= watcher.entriesAtStart;
  }

  /**
   * Changes to master may have been missed: log a gap, so that no slot is
   * synced from the journal alone until master is compared again (soon, in
   * the background).
   */
  #incomplete(reason: string): void {
    if (this.#closed) return;
    this.metrics.knowledgeGaps.inc();
    this.#ctx.log.warn(
      { reason },
      'changes to master may have been missed: syncs compare whole trees until master is compared again',
    );
    this.#journal
      .logGap(reason)
      .catch((err: Error) => this.#ctx.log.error({ err: err.message }, 'could not log a gap in the journal'));
    this.#reconcileTimer ??= setTimeout(() => {
      this.#reconcileTimer = undefined;
      void this.#queue.reconcile('incomplete');
    }, RECONCILE_DELAY_MS);
  }

  async #reconcile(trigger: ReconcileTrigger): Promise<void> {
    try {
      const result = await reconcileMaster(this.#ctx, trigger);
      if (!result) return;
      this.#lastReconcile = result;
      this.changed();
    } catch (err) {
      this.#ctx.log.error(
        { err: (err as Error).message },
        'comparing master with the mounted copy failed; tried again later',
      );
    }
  }

  /** Tell the agent master changed (the write API calls this after each write). */
  changed(): void {
    if (!this.#closed) this.#schedule.changed();
  }

  get epoch(): EpochRecord {
    return this.#ctx.epoch;
  }

  /** Master changes the mounted slot lacks; null if unknown. */
  pendingChanges(): number | null {
    const seq = this.#ctx.slots.get(this.#ctx.epoch.mounted).seq;
    return seq === null || !this.#journal.trusts(seq) ? null : this.#journal.countSince(seq);
  }

  /**
   * Ask for a sync. Requests made while a swap runs coalesce into one more
   * swap; every caller gets the record of the swap that covered its request.
   * An explicit request (not auto or interval) lifts a pause left by rollback.
   */
  requestSync(opts: { reason: string; full?: boolean; release?: string | undefined }): Promise<SwapRecord> {
    return this.#queue.requestSync(opts);
  }

  /**
   * Mount the standby again, when it still holds an older release than the
   * mounted copy, and pause automatic syncs. Refused (NO_ROLLBACK, pausing
   * nothing) when nothing older is retained: right after another rollback
   * the standby holds the release just rolled back from. With `to` (a
   * release id or an epoch number), refused too unless that is what the
   * standby holds.
   */
  rollback(to?: string): Promise<SwapRecord> {
    return this.#queue.rollback(to);
  }

  /** Compare master with the mounted slot (or the given one) without changing anything. */
  async verify(slot: SlotName = this.#ctx.epoch.mounted, limit = 1000): Promise<Difference[]> {
    return this.#ctx.walks.track(
      'verify',
      slot,
      (onWalked) =>
        compareTrees(this.layout.master, this.layout.slots[slot], {
          limit,
          onWalked,
          variants: variantSettings(this.#ctx.opts) !== null,
        }),
      (found) => found.length < limit,
    );
  }

  /**
   * Each copy's disk bytes, split into what it shares with the store's other
   * copies (files linked into several, `--share-files`) and what it owns, and
   * all of them together, each inode once. Walks every copy: on demand.
   */
  diskUsage(): ReturnType<typeof copiesDiskUsage> {
    const slots = keptSlots(this.#ctx.opts.keep).filter((s) => existsSync(this.layout.slots[s]));
    return copiesDiskUsage(slots.map((s) => ({ name: s, root: this.layout.slots[s] })));
  }

  async status(): Promise<AgentStatus> {
    const { epoch, slots, swapping, watcher, opts } = this.#ctx;
    const keeping = opts.keep > 2;
    // the copy the next sync writes into
    const standby = nextStandby(epoch, opts.keep, (s) => slots.get(s)).slot;
    const standbyAt = slots.get(standby);
    const now = Date.now();
    const servers = (await readHeartbeats(this.layout.serversDir)).map((hb) => ({
      ...hb,
      live: isLive(hb, opts.serverTtlMs, now),
    }));
    const live = servers.filter((hb) => hb.live);
    const retained: RetainedStatus[] = (epoch.retained ?? []).map((r) => {
      const { inflight, pinned, fallback } = retainedRequests(live, r);
      return {
        slot: r.slot,
        epoch: r.epoch,
        ...(r.release !== undefined ? { release: r.release } : {}),
        replacedAt: r.replacedAt,
        ageSeconds: Math.max(0, Math.round((now - Date.parse(r.replacedAt)) / 1000)),
        until: r.until ?? null,
        inflight,
        served: { pinned, fallback },
      };
    });
    return {
      ready: true,
      epoch: epoch.epoch,
      mounted: epoch.mounted,
      publishedAt: epoch.publishedAt,
      ...(epoch.release !== undefined ? { release: epoch.release } : {}),
      ...(epoch.previous
        ? {
            previous: {
              ...epoch.previous,
              retained: keeping
                ? retained.some((r) => r.epoch === epoch.previous?.epoch)
                : rollbackRefusal(standby, standbyAt, slots.get(epoch.mounted)) === null,
            },
          }
        : {}),
      keep: opts.keep,
      retained,
      standby: { slot: standby, seq: standbyAt.seq, syncing: standbyAt.copying },
      journalSeq: this.#journal.lastSeq,
      pendingChanges: this.pendingChanges(),
      changeTracking: {
        complete: this.#journal.trusts(slots.get(epoch.mounted).seq ?? -1) && !watcher?.degraded,
        watching: watcher !== undefined,
        lastReconcile: this.#lastReconcile,
      },
      paused: this.#queue.paused,
      swapping: swapping ? { ...swapping, ...(swapping.copied ? { copied: { ...swapping.copied } } : {}) } : null,
      walks: this.#ctx.walks.list(),
      servers,
      lastSwaps: this.#history,
      ...(this.#ctx.precompress ? { precompress: this.#ctx.precompress.status() } : {}),
      ...(this.#ctx.fleet
        ? { fleet: await this.#ctx.fleet.status().catch((err: Error) => ({ error: err.message })) }
        : {}),
    };
  }

  /** Stop watching and timers, let a running swap finish, release the store. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#schedule.stop();
    clearTimeout(this.#reconcileTimer);
    // queued comparisons are dropped; a swap under way (and those queued behind it) runs to its end
    await this.#queue.close();
    await this.#ctx.fleet?.close();
    await this.#ctx.watcher?.close();
    await this.#ctx.precompress?.close();
    await this.#journal.close();
    await this.#lock.release();
  }
}

/**
 * The options given, without those set to undefined (they take their
 * default), each list copied: the agent checks them once, at its start, and
 * keeps what it checked, whatever the caller does to its own lists after.
 */
function withoutUndefined<T extends object>(options: T): T {
  return Object.fromEntries(
    Object.entries(options)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => [k, Array.isArray(v) ? [...v] : v]),
  ) as T;
}

/** Refuse what keeping more than two releases does not go with yet, naming the way out. */
function keepRefusal(opts: ResolvedAgentOptions): void {
  if (!Number.isInteger(opts.keep) || opts.keep < 2 || opts.keep > MAX_KEEP) {
    throw new TypeError(`keep option must be an integer from 2 to ${MAX_KEEP}, not ${opts.keep}`);
  }
  if (opts.keep > 2 && opts.fleet) {
    throw new TypeError(
      'the fleet coordinator keeps two copies: give --keep to each host agent (mirrorswap host --keep K), which serve the pins; drop --keep here',
    );
  }
  if (!Number.isInteger(opts.skewMaxAgeMs) || opts.skewMaxAgeMs < 0) {
    throw new TypeError(`skewMaxAgeMs option must be a whole number of ms, 0 or more, not ${opts.skewMaxAgeMs}`);
  }
}
