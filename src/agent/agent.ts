import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { type EpochRecord, readEpochFile } from '../epoch-file.js';
import { MirrorswapError } from '../errors.js';
import { type Heartbeat, isLive, readHeartbeats } from '../heartbeat.js';
import { compareTrees } from './compare-trees.js';
import { type SlotName, type StoreLayout, otherSlot } from '../store-layout.js';
import { type WaitForServersOptions, waitForServers } from './drain.js';
import { runHook } from './hooks.js';
import { initStore } from './init-store.js';
import { Journal } from './journal.js';
import { MasterWatcher } from './master-watcher.js';
import { MasterWriter } from './master-writer.js';
import { AgentMetrics, type SwapPhase, type SwapResult } from './metrics.js';
import { pathLimitsFor } from '../path-limits.js';
import { publishEpoch } from './publish.js';
import { SlotState } from './slot-state.js';
import { StoreLock } from './store-lock.js';
import { type CopyStats, type Difference, TreeCopier, emptyStats } from './tree-copy.js';

/** A pino-compatible logger. */
export interface AgentLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface AgentOptions {
  layout: StoreLayout;
  logger: AgentLogger;
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
  /** Watch master for changes made by tools writing to it directly (default true). */
  watchMaster?: boolean;
  /** fsync copied files before publishing them (default true). */
  durable?: boolean;
  /**
   * Compare master with the mounted copy this often, in the background, to
   * catch changes the journal missed (0: never). Each one found is logged,
   * counted and synced like any other change.
   */
  verifyIntervalMs?: number;
}

type ResolvedAgentOptions = Required<Omit<AgentOptions, 'onMount' | 'onUnmount'>> &
  Pick<AgentOptions, 'onMount' | 'onUnmount'>;

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
  error?: { code: string; message: string };
  /** Servers dropped from a drain because their heartbeat went stale. */
  dropped: string[];
}

/** The swap under way: its phase, and during the copy the files and bytes copied so far. */
export interface SwapProgress {
  kind: SwapKind;
  phase: SwapPhase;
  copied?: CopyStats;
}

export interface ServerStatus extends Heartbeat {
  live: boolean;
}

export interface AgentStatus {
  ready: boolean;
  epoch: number;
  mounted: SlotName | null;
  publishedAt: string | null;
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
  servers: ServerStatus[];
  lastSwaps: SwapRecord[];
}

/** What made the agent compare master with the mounted copy. */
export type ReconcileTrigger = 'start' | 'verify' | 'incomplete';
/** What found changes the journal missed: a comparison, or a full sync. */
type RepairTrigger = ReconcileTrigger | 'full_sync';

type QueueItem =
  | { kind: SwapKind; full: boolean; resolve: (r: SwapRecord) => void }
  | { kind: 'reconcile'; trigger: ReconcileTrigger; resolve: () => void };

/** Whether `path` or one of its ancestors is in `paths` (a directory path stands for its whole tree). */
function coveredBy(paths: ReadonlySet<string>, path: string): boolean {
  if (paths.has(path)) return true;
  for (let i = path.indexOf('/'); i >= 0; i = path.indexOf('/', i + 1)) if (paths.has(path.slice(0, i))) return true;
  return false;
}

const HISTORY = 20;

/**
 * The sync agent: sole writer of master and of the epoch file. It copies
 * master into the standby slot, publishes the epoch that mounts it, and waits
 * until every live server has switched and drained the old slot.
 */
export class Agent {
  readonly layout: StoreLayout;
  readonly metrics: AgentMetrics;
  readonly writer: MasterWriter;
  readonly #opts: ResolvedAgentOptions;
  readonly #log: AgentLogger;
  readonly #lock: StoreLock;
  readonly #journal: Journal;
  readonly #slots: SlotState;
  #epoch: EpochRecord;
  #watcher: MasterWatcher | undefined;
  #interval: NodeJS.Timeout | undefined;
  #settle: NodeJS.Timeout | undefined;
  #queue: QueueItem[] = [];
  #reconcileQueued = false;
  #reconcileTimer: NodeJS.Timeout | undefined;
  #verifyTimer: NodeJS.Timeout | undefined;
  #pumping = false;
  #swapping: SwapProgress | null = null;
  #paused = false;
  #history: SwapRecord[] = [];
  #lastReconcile: AgentStatus['changeTracking']['lastReconcile'] = null;
  /** Called when the queue runs dry: close() waits on it. */
  #idle: (() => void) | undefined;
  #closed = false;

  private constructor(
    opts: ResolvedAgentOptions,
    lock: StoreLock,
    journal: Journal,
    slots: SlotState,
    writer: MasterWriter,
    epoch: EpochRecord,
  ) {
    this.layout = opts.layout;
    this.#opts = opts;
    this.#log = opts.logger;
    this.#lock = lock;
    this.#journal = journal;
    this.#slots = slots;
    this.#epoch = epoch;
    this.writer = writer;
    this.metrics = new AgentMetrics({
      pendingChanges: () => this.pendingChanges() ?? -1,
      servers: async () => {
        const hbs = await readHeartbeats(this.layout.serversDir);
        const live = hbs.filter((h) => isLive(h, this.#opts.serverTtlMs)).length;
        return { live, stale: hbs.length - live };
      },
    });
    this.metrics.epoch.set(epoch.epoch);
  }

  /**
   * Take the store (one agent per store), finish whatever a crash left
   * half-done, initialise the store if needed, and start watching.
   */
  static async start(options: AgentOptions): Promise<Agent> {
    const opts = {
      drainTimeoutMs: 30_000,
      serverTtlMs: 10_000,
      intervalMs: 0,
      auto: false,
      settleMs: 1000,
      watchMaster: true,
      durable: true,
      verifyIntervalMs: 10 * 60_000,
      ...options,
    };
    const { layout, logger } = opts;
    await mkdir(layout.stateDir, { recursive: true });
    const lock = await StoreLock.acquire(layout.lockFile);
    try {
      const { journal, unfinished, created } = await Journal.open(layout.journalFile);
      const writer = new MasterWriter(layout.master, journal, {
        onDropped: (path, err) =>
          logger.error(
            { path: path.slice(0, 200), err: err.message },
            'dropped an entry of an unfinished write batch that the file system cannot hold',
          ),
      });
      await mkdir(layout.master, { recursive: true });
      if (unfinished) {
        logger.warn(
          { seq: unfinished.seq, ops: unfinished.ops.length },
          'finishing a write batch interrupted by a crash',
        );
        await writer.redo(unfinished.seq, unfinished.ops);
      }
      await writer.clearTemp();
      const slots = await SlotState.load(layout.slotStateFile, journal.id);
      if (created && (await readEpochFile(layout.epochFile))) {
        logger.warn(
          { journal: layout.journalFile },
          'change journal was missing: the next sync of each slot compares whole trees',
        );
      }
      const {
        created: initialised,
        recovered,
        record,
      } = await initStore(layout, journal, slots, {
        durable: opts.durable,
      });
      if (initialised) logger.info({ epoch: record.epoch, mounted: record.mounted }, 'store initialised');
      if (recovered) {
        logger.warn(
          { epoch: record.epoch, mounted: record.mounted, recoveredFrom: recovered },
          `the epoch file was missing: published epoch ${record.epoch} mounting slot ${record.mounted} again, without writing into either copy`,
        );
      }
      writer.limits = await pathLimitsFor([layout.master, layout.slots.a, layout.slots.b]);
      const agent = new Agent(opts, lock, journal, slots, writer, record);
      // Whatever happened to master while no agent watched it is unknown: until master is
      // compared with the mounted copy (queued below), each slot's next sync compares trees.
      if (!initialised) await journal.logGap('agent started: master may have changed while no agent watched it');
      await agent.#startWatching();
      if (!initialised) agent.#enqueueReconcile('start');
      return agent;
    } catch (err) {
      await lock.release();
      throw err;
    }
  }

  async #startWatching(): Promise<void> {
    if (this.#opts.watchMaster) {
      this.#watcher = new MasterWatcher({
        root: this.layout.master,
        own: this.writer.ownWrites,
        fenceDir: join(this.layout.stateDir, 'watch-fence'),
        onChanges: (paths) =>
          this.#journal.logTouched(paths).then(
            () => this.changed(),
            (err: Error) => {
              // the paths are known in memory; a restart would not know them, and logs a gap anyway
              this.#log.error({ err: err.message }, 'could not record changes seen in master');
            },
          ),
        onIncomplete: (reason) => this.#incomplete(reason),
      });
      await this.#watcher.start();
    }
    if (this.#opts.intervalMs > 0) {
      this.#interval = setInterval(() => {
        if (!this.#paused && this.pendingChanges() !== 0) void this.requestSync({ reason: 'interval' });
      }, this.#opts.intervalMs);
    }
    if (this.#opts.verifyIntervalMs > 0) {
      this.#verifyTimer = setInterval(() => this.#enqueueReconcile('verify'), this.#opts.verifyIntervalMs);
      this.#verifyTimer.unref();
    }
  }

  /**
   * Changes to master may have been missed: log a gap, so that no slot is
   * synced from the journal alone until master is compared again (soon, in
   * the background).
   */
  #incomplete(reason: string): void {
    if (this.#closed) return;
    this.metrics.knowledgeGaps.inc();
    this.#log.warn(
      { reason },
      'changes to master may have been missed: syncs compare whole trees until master is compared again',
    );
    this.#journal
      .logGap(reason)
      .catch((err: Error) => this.#log.error({ err: err.message }, 'could not log a gap in the journal'));
    this.#reconcileTimer ??= setTimeout(() => {
      this.#reconcileTimer = undefined;
      this.#enqueueReconcile('incomplete');
    }, 1000);
  }

  /** Queue a comparison of master with the mounted copy, unless one is queued already. */
  #enqueueReconcile(trigger: ReconcileTrigger): Promise<void> {
    if (this.#reconcileQueued || this.#closed) return Promise.resolve();
    this.#reconcileQueued = true;
    return new Promise((resolve) => {
      this.#queue.push({ kind: 'reconcile', trigger, resolve });
      void this.#pump();
    });
  }

  /**
   * Compare master with the mounted copy and log every difference the journal
   * does not name, so both copies get it by their next sync: the journal is a
   * hint, and this makes it whole again. Covers the gaps logged before it.
   */
  async #reconcile(trigger: ReconcileTrigger): Promise<void> {
    const slot = this.#epoch.mounted;
    const pos = this.#slots.get(slot);
    if (pos.seq === null || pos.syncing) {
      this.#log.warn(
        { slot },
        `slot ${slot} is mounted at no known position: the next sync of each slot compares trees`,
      );
      return;
    }
    const position = pos.seq;
    const through = this.#journal.lastSeq;
    const started = performance.now();
    const diffs = await compareTrees(this.layout.master, this.layout.slots[slot]);
    // Changes made during the walk reach the journal by the watcher; wait for them to be recorded.
    if (this.#watcher && !(await this.#watcher.settle())) {
      this.#incomplete('the master watcher could not confirm it saw every change during a comparison');
      return;
    }
    const found = await this.#logUnknown(
      diffs.map((d) => d.path),
      position,
      trigger,
    );
    await this.#journal.logReconciled(position, through);
    this.#lastReconcile = { at: new Date().toISOString(), trigger, found };
    this.metrics.reconcileSeconds.observe((performance.now() - started) / 1000);
    this.changed();
  }

  /** Tell the agent master changed (the write API calls this after each write). */
  changed(): void {
    if (!this.#opts.auto || this.#paused || this.#closed) return;
    if (this.#settle) clearTimeout(this.#settle);
    this.#settle = setTimeout(() => {
      this.#settle = undefined;
      void this.requestSync({ reason: 'auto' });
    }, this.#opts.settleMs);
  }

  get epoch(): EpochRecord {
    return this.#epoch;
  }

  /** Master changes the mounted slot lacks; null if unknown. */
  pendingChanges(): number | null {
    const seq = this.#slots.get(this.#epoch.mounted).seq;
    return seq === null || !this.#journal.trusts(seq) ? null : this.#journal.countSince(seq);
  }

  /**
   * Ask for a sync. Requests made while a swap runs coalesce into one more
   * swap; every caller gets the record of the swap that covered its request.
   * An explicit request (not auto or interval) lifts a pause left by rollback.
   */
  requestSync(opts: { reason: string; full?: boolean }): Promise<SwapRecord> {
    const explicit = opts.reason !== 'auto' && opts.reason !== 'interval';
    if (explicit) this.#paused = false;
    const last = this.#queue.at(-1);
    if (last?.kind === 'sync') {
      last.full ||= opts.full ?? false;
      return new Promise((resolve) => {
        const previous = last.resolve;
        last.resolve = (r) => {
          previous(r);
          resolve(r);
        };
      });
    }
    return this.#enqueue('sync', opts.full ?? false);
  }

  /**
   * Mount the standby again, when it still holds an older release than the
   * mounted copy, and pause automatic syncs. Refused (NO_ROLLBACK, pausing
   * nothing) when nothing older is retained: right after another rollback
   * the standby holds the release just rolled back from.
   */
  rollback(): Promise<SwapRecord> {
    return this.#enqueue('rollback', false);
  }

  #enqueue(kind: SwapKind, full: boolean): Promise<SwapRecord> {
    return new Promise((resolve) => {
      this.#queue.push({ kind, full, resolve });
      void this.#pump();
    });
  }

  async #pump(): Promise<void> {
    if (this.#pumping) return;
    this.#pumping = true;
    try {
      for (let item = this.#queue.shift(); item; item = this.#queue.shift()) {
        if (item.kind === 'reconcile') {
          this.#reconcileQueued = false;
          try {
            await this.#reconcile(item.trigger);
          } catch (err) {
            this.#log.error(
              { err: (err as Error).message },
              'comparing master with the mounted copy failed; tried again later',
            );
          }
          item.resolve();
        } else {
          item.resolve(await this.#swap(item.kind, item.full));
        }
      }
    } finally {
      this.#pumping = false;
      this.#idle?.();
    }
  }

  async #phase<T>(record: SwapRecord, phase: SwapPhase, work: () => Promise<T>): Promise<T> {
    if (this.#swapping) this.#swapping.phase = phase;
    const start = performance.now();
    try {
      return await work();
    } finally {
      const seconds = (performance.now() - start) / 1000;
      record.phases[phase] = seconds;
      this.metrics.phaseSeconds.observe({ phase }, seconds);
    }
  }

  /**
   * Take the epoch file's word over memory before a swap: a publish whose
   * rename landed but whose directory fsync failed has servers on an epoch
   * the agent did not record. Going on from memory would copy into the copy
   * they mount.
   */
  async #readEpochTruth(): Promise<void> {
    let onDisk: EpochRecord | null;
    try {
      onDisk = await readEpochFile(this.layout.epochFile);
    } catch (err) {
      this.#log.warn({ err: (err as Error).message }, 'cannot read the epoch file before a swap; going on from memory');
      return;
    }
    const known = this.#epoch;
    if (!onDisk || (onDisk.epoch === known.epoch && onDisk.mounted === known.mounted)) return;
    if (onDisk.epoch > known.epoch) {
      this.#log.warn(
        {
          file: { epoch: onDisk.epoch, mounted: onDisk.mounted },
          memory: { epoch: known.epoch, mounted: known.mounted },
        },
        'the epoch file is ahead of what the agent recorded (a publish that failed after its rename?): following the file',
      );
      this.#epoch = onDisk;
      this.metrics.epoch.set(onDisk.epoch);
    } else {
      this.#log.error(
        {
          file: { epoch: onDisk.epoch, mounted: onDisk.mounted },
          memory: { epoch: known.epoch, mounted: known.mounted },
        },
        'the epoch file was rewritten behind the agent with an older epoch, which servers ignore: the next publish supersedes it',
      );
    }
  }

  async #swap(kind: SwapKind, full: boolean): Promise<SwapRecord> {
    await this.#readEpochTruth();
    const current = this.#epoch;
    const from = current.mounted;
    const to = otherSlot(from);
    const record: SwapRecord = {
      kind,
      result: 'failed',
      epoch: current.epoch + 1,
      from,
      to,
      mode: 'none',
      startedAt: new Date().toISOString(),
      phases: {},
      copied: emptyStats(),
      dropped: [],
    };
    this.#swapping = { kind, phase: 'wait' };
    let published = false;
    try {
      if (kind === 'rollback') {
        const pos = this.#slots.get(to);
        if (pos.syncing || pos.seq === null) {
          throw new MirrorswapError(
            'NO_ROLLBACK',
            `slot ${to} does not hold a complete earlier copy (a sync into it was interrupted or it was never synced); nothing to roll back to`,
          );
        }
        const mountedAt = this.#slots.get(from).seq;
        if (mountedAt !== null && pos.seq >= mountedAt) {
          throw new MirrorswapError(
            'NO_ROLLBACK',
            `slot ${to} holds no release older than the mounted one (it holds the release last rolled back from, or the same one); nothing older is retained, so there is nothing to roll back to`,
          );
        }
      }
      // 1. the standby must be free: no live server still mounts it or has requests on it
      const waited = await this.#phase(record, 'wait', () =>
        this.#waitForServers(
          {
            what: `slot ${to} to be free before copying into it`,
            done: (hb) => hb.inflight[to] === 0 && hb.mounted !== to,
            describe: (hb) =>
              hb.mounted === to
                ? `still mounts slot ${to} (epoch ${hb.epoch})`
                : `still has ${hb.inflight[to]} requests in flight on slot ${to}`,
          },
          'server heartbeat went stale; no longer waiting for it',
        ),
      );
      record.dropped.push(...waited.dropped);
      // 2. copy master into it (a sync) — under the master lock, so no batch is split
      if (kind === 'sync') {
        await this.#phase(record, 'copy', () => this.#copyInto(to, full, record));
      }
      // 3. publish the epoch that mounts it, once its recorded state says it holds what was meant
      const next = await this.#phase(record, 'publish', async () => {
        await this.#vouchFor(to);
        try {
          return await publishEpoch(this.layout, current.epoch + 1, to, this.#opts.serverTtlMs);
        } catch (err) {
          // The rename may have landed before what failed (the directory's fsync): then servers
          // follow the new epoch, and so must the agent.
          const onDisk = await readEpochFile(this.layout.epochFile).catch(() => null);
          if (onDisk?.epoch !== current.epoch + 1 || onDisk.mounted !== to) throw err;
          this.#log.error(
            { err: (err as Error).message },
            `epoch ${onDisk.epoch} is in place but could not be made durable; servers follow it, and so does the swap`,
          );
          return onDisk;
        }
      });
      published = true;
      if (kind === 'rollback') this.#paused = true;
      this.#epoch = next;
      this.metrics.epoch.set(next.epoch);
      await this.#hook('mount', this.#opts.onMount, next, to);
      // 4. wait until every live server has switched and drained the old slot
      const drained = await this.#phase(record, 'drain', () =>
        this.#waitForServers(
          {
            what: `servers to switch to epoch ${next.epoch} and drain slot ${from}`,
            done: (hb) => hb.epoch >= next.epoch && hb.inflight[from] === 0,
            describe: (hb) =>
              hb.epoch < next.epoch
                ? `is still at epoch ${hb.epoch}`
                : `still has ${hb.inflight[from]} requests in flight on slot ${from}`,
          },
          'server died during the drain; no longer waiting for it',
        ),
      );
      record.dropped.push(...drained.dropped);
      await this.#hook('unmount', this.#opts.onUnmount, next, from);
      record.result = 'ok';
      this.metrics.lastSuccess.set(Date.now() / 1000);
    } catch (err) {
      const e = err as MirrorswapError;
      record.result = published && e.code === 'DRAIN_TIMEOUT' ? 'drain_timeout' : 'failed';
      record.error = { code: e.code ?? 'INTERNAL', message: e.message };
    } finally {
      this.#swapping = null;
    }
    this.metrics.swaps.inc({ result: record.result, kind });
    this.#history = [record, ...this.#history].slice(0, HISTORY);
    const level = record.result === 'ok' ? 'info' : 'error';
    this.#log[level](
      {
        swap: {
          ...record,
          phases: Object.fromEntries(Object.entries(record.phases).map(([k, v]) => [k, Math.round(v * 1e6) / 1e6])),
        },
      },
      record.result === 'ok'
        ? `swap to epoch ${record.epoch} done`
        : `swap to epoch ${record.epoch} ${record.result}: ${record.error?.message}`,
    );
    return record;
  }

  /**
   * Refuse to mount a slot whose recorded state does not say it holds a
   * complete copy at the position the agent meant: a copy that did not finish,
   * a positions file rewritten or lost behind the agent's back.
   */
  async #vouchFor(slot: SlotName): Promise<void> {
    const meant = this.#slots.get(slot);
    const recorded = await this.#slots.recorded(slot);
    if (meant.seq !== null && !meant.syncing && recorded?.seq === meant.seq && !recorded.syncing) return;
    throw new MirrorswapError(
      'SLOT_NOT_VOUCHED',
      `slot ${slot} is not mounted: its recorded state (${recorded ? JSON.stringify(recorded) : 'unreadable'}) does not say it holds the complete copy meant (journal position ${meant.seq}${meant.syncing ? ', copy unfinished' : ''}); run mirrorswap sync --full`,
    );
  }

  /** Wait on the live servers' heartbeats, bounded by --drain-timeout, logging each server dropped as dead. */
  #waitForServers(
    check: Pick<WaitForServersOptions, 'what' | 'done' | 'describe'>,
    droppedMessage: string,
  ): Promise<{ waitedMs: number; dropped: string[] }> {
    return waitForServers({
      ...check,
      serversDir: this.layout.serversDir,
      ttlMs: this.#opts.serverTtlMs,
      timeoutMs: this.#opts.drainTimeoutMs,
      onDropped: (hb) => this.#log.warn({ server: hb.id, host: hb.host, pid: hb.pid }, droppedMessage),
    });
  }

  async #copyInto(slot: SlotName, full: boolean, record: SwapRecord): Promise<void> {
    // never a copy of half a batch: the writer finishes one a failure left first
    await this.writer.exclusive(async () => {
      // Every change made to master before this point must be in the journal before it is read.
      if (this.#watcher && !(await this.#watcher.settle())) {
        this.#incomplete('the master watcher could not confirm it saw every change before a sync');
      }
      const pos = this.#slots.get(slot);
      const seq = this.#journal.lastSeq;
      const copier = new TreeCopier(this.layout.master, this.layout.slots[slot], { durable: this.#opts.durable });
      if (this.#swapping) this.#swapping.copied = copier.stats;
      // The journal is trusted only from positions no gap came after; else the trees are compared.
      const incremental = !full && pos.seq !== null && this.#journal.trusts(pos.seq);
      const changed = incremental ? this.#journal.changedSince(pos.seq as number) : [];
      record.mode = incremental ? 'incremental' : 'full';
      if (incremental && changed.length === 0 && !pos.syncing) {
        // Nothing to copy: the slot's content stands, so it is never marked as
        // mixed; its position is written only if the journal moved on.
        if (pos.seq !== seq) await this.#slots.set(slot, { seq, syncing: false });
      } else {
        await this.#slots.set(slot, { seq: pos.seq, syncing: true });
        await copier.clearTemp();
        if (incremental) await copier.copyPaths(changed);
        else await this.#passOn(slot, await copier.mirrorAll());
        await this.#slots.set(slot, { seq, syncing: false });
      }
      if (copier.skipped.length > 0) {
        this.#log.error(
          { slot, skipped: copier.skipped.slice(0, 20), count: copier.skipped.length },
          `left out ${copier.skipped.length} entries of master that slot ${slot}'s file system cannot hold (a name or path too long): rename them in master`,
        );
      }
      record.copied = { ...copier.stats };
      this.metrics.copiedFiles.inc(copier.stats.files);
      this.metrics.copiedBytes.inc(copier.stats.bytes);
      this.metrics.deletedFiles.inc(copier.stats.deleted);
      const a = this.#slots.get('a').seq;
      const b = this.#slots.get('b').seq;
      if (a === null || b === null) return;
      try {
        await this.#journal.compact(Math.min(a, b));
      } catch (err) {
        // housekeeping: the copy stands, and the journal is rewritten compact on a later try
        this.#log.warn({ err: (err as Error).message }, 'journal compaction failed; it is tried again later');
      }
    });
  }

  /**
   * A full compare of `slot` found `found` different. Whatever of it the
   * journal did not name since the other slot's position is logged, so the
   * other slot gets it too by its next sync (when it syncs from the journal;
   * otherwise it is compared whole anyway).
   */
  async #passOn(slot: SlotName, found: string[]): Promise<void> {
    const other = this.#slots.get(otherSlot(slot)).seq;
    if (found.length === 0 || other === null || !this.#journal.trusts(other)) return;
    await this.#logUnknown(found, other, 'full_sync');
  }

  /**
   * Log, among `paths` found different by a comparison, those the journal
   * does not name since `position` (a directory named stands for its tree):
   * they are changes it missed, so every slot gets them by its next sync.
   * Counted and said; returns how many there were.
   */
  async #logUnknown(paths: string[], position: number, trigger: RepairTrigger): Promise<number> {
    const known = new Set(this.#journal.changedSince(position));
    const unknown = paths.filter((p) => !coveredBy(known, p));
    if (unknown.length === 0) return 0;
    await this.#journal.logTouched(unknown);
    this.metrics.repairs.inc({ trigger }, unknown.length);
    const details = { trigger, changes: unknown.length, sample: unknown.slice(0, 20) };
    const msg = `master had ${unknown.length} changes the journal did not know; logged, so the next sync of each slot copies them`;
    // at start they are what changed while no agent ran; at any other time a missed event
    if (trigger === 'start') this.#log.info(details, msg);
    else this.#log.warn(details, msg);
    return unknown.length;
  }

  async #hook(
    name: 'mount' | 'unmount',
    command: string | undefined,
    epoch: EpochRecord,
    slot: SlotName,
  ): Promise<void> {
    if (!command) return;
    try {
      await runHook(`on-${name}`, command, {
        MIRRORSWAP_EPOCH: String(epoch.epoch),
        MIRRORSWAP_SLOT: slot,
        MIRRORSWAP_ROOT: this.layout.slots[slot],
        MIRRORSWAP_STORE: this.layout.root,
      });
    } catch (err) {
      this.metrics.hookFailures.inc({ hook: name });
      this.#log.error({ hook: name, err: (err as Error).message }, `on-${name} hook failed`);
    }
  }

  /** Compare master with the mounted slot (or the given one) without changing anything. */
  async verify(slot: SlotName = this.#epoch.mounted, limit = 1000): Promise<Difference[]> {
    return compareTrees(this.layout.master, this.layout.slots[slot], { limit });
  }

  async status(): Promise<AgentStatus> {
    const epoch = this.#epoch;
    const standby = otherSlot(epoch.mounted);
    const now = Date.now();
    const servers = (await readHeartbeats(this.layout.serversDir)).map((hb) => ({
      ...hb,
      live: isLive(hb, this.#opts.serverTtlMs, now),
    }));
    return {
      ready: true,
      epoch: epoch.epoch,
      mounted: epoch.mounted,
      publishedAt: epoch.publishedAt,
      standby: { slot: standby, ...this.#slots.get(standby) },
      journalSeq: this.#journal.lastSeq,
      pendingChanges: this.pendingChanges(),
      changeTracking: {
        complete: this.#journal.trusts(this.#slots.get(epoch.mounted).seq ?? -1) && !this.#watcher?.degraded,
        watching: this.#watcher !== undefined,
        lastReconcile: this.#lastReconcile,
      },
      paused: this.#paused,
      swapping: this.#swapping
        ? { ...this.#swapping, ...(this.#swapping.copied ? { copied: { ...this.#swapping.copied } } : {}) }
        : null,
      servers,
      lastSwaps: this.#history,
    };
  }

  /** Stop watching and timers, let a running swap finish, release the store. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#interval) clearInterval(this.#interval);
    if (this.#settle) clearTimeout(this.#settle);
    if (this.#verifyTimer) clearInterval(this.#verifyTimer);
    if (this.#reconcileTimer) clearTimeout(this.#reconcileTimer);
    // queued comparisons are dropped; a swap under way (and those queued behind it) runs to its end
    this.#queue = this.#queue.filter((item) => {
      if (item.kind !== 'reconcile') return true;
      item.resolve();
      return false;
    });
    if (this.#pumping) await new Promise<void>((resolve) => (this.#idle = resolve));
    await this.#watcher?.close();
    await this.#journal.close();
    await this.#lock.release();
  }
}
