import { mkdir } from 'node:fs/promises';
import { type EpochRecord, readEpochFile } from '../epoch-file.js';
import { MirrorswapError } from '../errors.js';
import { type Heartbeat, isLive, readHeartbeats } from '../heartbeat.js';
import { type SlotName, type StoreLayout, otherSlot } from '../store-layout.js';
import { type WaitForServersOptions, waitForServers } from './drain.js';
import { runHook } from './hooks.js';
import { initStore } from './init-store.js';
import { Journal } from './journal.js';
import { MasterWatcher } from './master-watcher.js';
import { MasterWriter } from './master-writer.js';
import { AgentMetrics, type SwapPhase, type SwapResult } from './metrics.js';
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
  paused: boolean;
  swapping: SwapProgress | null;
  servers: ServerStatus[];
  lastSwaps: SwapRecord[];
}

interface Request {
  kind: SwapKind;
  full: boolean;
  resolve: (r: SwapRecord) => void;
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
  #queue: Request[] = [];
  #pumping = false;
  #swapping: SwapProgress | null = null;
  #paused = false;
  #history: SwapRecord[] = [];
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
      ...options,
    };
    const { layout, logger } = opts;
    await mkdir(layout.stateDir, { recursive: true });
    const lock = await StoreLock.acquire(layout.lockFile);
    try {
      const { journal, unfinished, created } = await Journal.open(layout.journalFile);
      const writer = new MasterWriter(layout.master, journal);
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
      const { created: initialised, record } = await initStore(layout, journal, slots, { durable: opts.durable });
      if (initialised) logger.info({ epoch: record.epoch, mounted: record.mounted }, 'store initialised');
      const agent = new Agent(opts, lock, journal, slots, writer, record);
      await agent.#startWatching();
      return agent;
    } catch (err) {
      await lock.release();
      throw err;
    }
  }

  async #startWatching(): Promise<void> {
    if (this.#opts.watchMaster) {
      this.#watcher = new MasterWatcher(
        this.layout.master,
        this.writer.ownWrites,
        (paths) => {
          this.#journal.logTouched(paths).then(
            () => this.changed(),
            (err: Error) => this.#log.error({ err: err.message }, 'could not record changes seen in master'),
          );
        },
        (err) =>
          this.#log.error(
            { err: err.message },
            'cannot watch a directory of master (inotify limits?); direct writes there are seen only by sync --full',
          ),
      );
      await this.#watcher.start();
    }
    if (this.#opts.intervalMs > 0) {
      this.#interval = setInterval(() => {
        if (!this.#paused && this.pendingChanges() !== 0) void this.requestSync({ reason: 'interval' });
      }, this.#opts.intervalMs);
    }
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
    return seq === null ? null : this.#journal.countSince(seq);
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

  /** Mount the standby again (it still holds the previous epoch) and pause automatic syncs. */
  rollback(): Promise<SwapRecord> {
    this.#paused = true;
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
      for (let req = this.#queue.shift(); req; req = this.#queue.shift()) {
        req.resolve(await this.#swap(req.kind, req.full));
      }
    } finally {
      this.#pumping = false;
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

  async #swap(kind: SwapKind, full: boolean): Promise<SwapRecord> {
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
      // 3. publish the epoch that mounts it
      const next = await this.#phase(record, 'publish', () => publishEpoch(this.layout, current.epoch + 1, to));
      published = true;
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
      const pos = this.#slots.get(slot);
      const seq = this.#journal.lastSeq;
      const copier = new TreeCopier(this.layout.master, this.layout.slots[slot], { durable: this.#opts.durable });
      if (this.#swapping) this.#swapping.copied = copier.stats;
      const incremental = !full && pos.seq !== null;
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
        else await copier.mirrorAll();
        await this.#slots.set(slot, { seq, syncing: false });
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
    return new TreeCopier(this.layout.master, this.layout.slots[slot]).compare(limit);
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
    await this.#watcher?.close();
    while (this.#pumping) await new Promise((r) => setTimeout(r, 10));
    await this.#journal.close();
    await this.#lock.release();
  }
}
