import { MirrorswapError } from '../../core/errors.js';
import type { SlotName } from '../../store/store-layout.js';
import type { ReconcileTrigger, SwapKind, SwapRecord } from '../agent-types.js';
import type { SlotPosition } from '../../store/slot-positions.js';
import type { EpochRecord } from '../../store/epoch-file.js';

/** What the queue runs, one job at a time. */
export interface QueueWork {
  /** Run one swap, calling `onPublished` the moment its epoch is published. */
  swap(kind: SwapKind, full: boolean, onPublished: () => void, asked: SwapAsked): Promise<SwapRecord>;
  /** Compare master with the mounted copy; a failure is the work's to report. */
  reconcile(trigger: ReconcileTrigger): Promise<void>;
}

/** What a swap was asked for besides its kind. */
export interface SwapAsked {
  /** A sync's release id (`sync --release ID`). */
  release?: string | undefined;
  /** A rollback's target: the release id or epoch number it must mount (`rollback --to`). */
  to?: string | undefined;
}

type Job =
  | { kind: SwapKind; full: boolean; asked: SwapAsked; resolve: (r: SwapRecord) => void }
  | { kind: 'reconcile'; trigger: ReconcileTrigger; resolve: () => void };

/** Requests that come from the agent's own schedule, not from an operator. */
const SCHEDULED = new Set(['auto', 'interval']);

/**
 * The agent's one line of work: swaps and comparisons of master, run one at a
 * time in order. Its rules:
 *
 * - Sync requests made while a sync waits coalesce into that one (a `full`
 *   request makes it full); every caller gets the record of the swap that
 *   covered its request.
 * - A rollback that mounts the older copy pauses scheduled syncs (auto and
 *   interval), so the release just rolled back from does not come straight
 *   back; an explicit sync request lifts the pause.
 * - At most one comparison waits at a time; closing drops those that wait,
 *   and lets a swap under way (and those queued behind it) run to their end.
 */
export class SwapQueue {
  readonly #work: QueueWork;
  #jobs: Job[] = [];
  #reconcileWaiting = false;
  #running: Promise<void> | null = null;
  #paused = false;
  #closed = false;

  constructor(work: QueueWork) {
    this.#work = work;
  }

  /** Scheduled syncs are paused (after a rollback). */
  get paused(): boolean {
    return this.#paused;
  }

  /** Ask for a sync; `reason` is "auto" or "interval" for the schedule's own requests. */
  requestSync(opts: { reason: string; full?: boolean; release?: string | undefined }): Promise<SwapRecord> {
    if (!SCHEDULED.has(opts.reason)) this.#paused = false;
    const last = this.#jobs.at(-1);
    if (last?.kind === 'sync') {
      last.full ||= opts.full ?? false;
      // one swap covers both requests: it publishes master as of the later one, so its release
      if (opts.release !== undefined) last.asked.release = opts.release;
      return new Promise((resolve) => {
        const previous = last.resolve;
        last.resolve = (r) => {
          previous(r);
          resolve(r);
        };
      });
    }
    return this.#enqueueSwap('sync', opts.full ?? false, { release: opts.release });
  }

  /** Ask for a rollback, to `to` if given (see `rollbackRefusal` for when one is refused). */
  rollback(to?: string): Promise<SwapRecord> {
    return this.#enqueueSwap('rollback', false, { to });
  }

  /** Queue a comparison of master, unless one waits already. Resolves when it ran (or was dropped). */
  reconcile(trigger: ReconcileTrigger): Promise<void> {
    if (this.#reconcileWaiting || this.#closed) return Promise.resolve();
    this.#reconcileWaiting = true;
    return new Promise((resolve) => this.#push({ kind: 'reconcile', trigger, resolve }));
  }

  #enqueueSwap(kind: SwapKind, full: boolean, asked: SwapAsked): Promise<SwapRecord> {
    return new Promise((resolve) => this.#push({ kind, full, asked, resolve }));
  }

  #push(job: Job): void {
    this.#jobs.push(job);
    this.#running ??= this.#runAll();
  }

  async #runAll(): Promise<void> {
    try {
      for (let job = this.#jobs.shift(); job; job = this.#jobs.shift()) {
        if (job.kind === 'reconcile') {
          this.#reconcileWaiting = false;
          await this.#work.reconcile(job.trigger);
          job.resolve();
          continue;
        }
        // A rollback pauses from its publish on, so no scheduled sync comes in during its drain.
        const onPublished = job.kind === 'rollback' ? () => (this.#paused = true) : () => {};
        job.resolve(await this.#work.swap(job.kind, job.full, onPublished, job.asked));
      }
    } finally {
      // cleared in the same tick as the last look at the jobs: a job pushed after it starts a new run
      this.#running = null;
    }
  }

  /** Drop waiting comparisons and wait for the swaps queued to finish. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#jobs = this.#jobs.filter((job) => {
      if (job.kind !== 'reconcile') return true;
      job.resolve();
      return false;
    });
    await this.#running;
  }
}

/**
 * Why mounting `standby` again would not be a rollback, or null when it
 * would: it must hold a complete copy, of a release older than the mounted
 * one. Right after another rollback the standby holds the release just
 * rolled back from, so a second rollback in a row is refused.
 */
export function rollbackRefusal(
  standbySlot: SlotName,
  standby: SlotPosition,
  mounted: SlotPosition,
): MirrorswapError | null {
  if (standby.copying || standby.seq === null) {
    return new MirrorswapError(
      'NO_ROLLBACK',
      `slot ${standbySlot} does not hold a complete earlier copy (a sync into it was interrupted or it was never synced); nothing to roll back to`,
    );
  }
  if (mounted.seq !== null && standby.seq >= mounted.seq) {
    return new MirrorswapError(
      'NO_ROLLBACK',
      `slot ${standbySlot} holds no release older than the mounted one (it holds the release last rolled back from, or the same one); nothing older is retained, so there is nothing to roll back to`,
    );
  }
  return null;
}

/** How a release is named in messages: its epoch, and its id when it has one. */
function nameOf(r: { epoch: number; release?: string | undefined }): string {
  return r.release === undefined ? `epoch ${r.epoch}` : `epoch ${r.epoch} (release ${r.release})`;
}

/**
 * Why a rollback to `target` (a release id, or an epoch number) would not
 * mount it, or null when the standby holds it: the release mounted before
 * the current one. A store keeps two copies, so that is the only one.
 */
export function rollbackTargetRefusal(target: string, current: EpochRecord): MirrorswapError | null {
  const names = (r: { epoch: number; release?: string | undefined }) =>
    r.release === target || (/^[1-9][0-9]*$/.test(target) && Number(target) === r.epoch);
  if (names(current)) {
    return new MirrorswapError('NO_ROLLBACK', `${nameOf(current)} is the one mounted; nothing to roll back to`);
  }
  if (current.previous && names(current.previous)) return null;
  return new MirrorswapError(
    'NO_ROLLBACK',
    `${target} is not retained: this store keeps two copies, ${nameOf(current)} mounted${current.previous ? ` and ${nameOf(current.previous)} before it` : ''}; roll back to the one before, or publish the release again with sync`,
  );
}
