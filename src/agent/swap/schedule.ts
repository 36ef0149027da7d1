/** What the schedule asks of the agent. */
export interface ScheduledWork {
  /** Ask for a sync for `reason` ("auto" or "interval"). */
  sync(reason: 'auto' | 'interval'): void;
  /** Compare master with the mounted copy (`--verify-interval`). */
  verify(): void;
  /** Whether master has changes the mounted copy lacks (unknown counts as yes). */
  hasChanges(): boolean;
  /** Whether scheduled syncs are paused (after a rollback). */
  paused(): boolean;
}

/**
 * The agent's own clock: a sync once changes settle (`--auto`, `--settle`),
 * one every `--interval` while master has changes, and a comparison of
 * master every `--verify-interval`. Nothing here swaps by itself: it only
 * asks the queue, which decides.
 */
export class Schedule {
  readonly #work: ScheduledWork;
  readonly #auto: boolean;
  readonly #settleMs: number;
  #settleTimer: NodeJS.Timeout | undefined;
  #interval: NodeJS.Timeout | undefined;
  #verify: NodeJS.Timeout | undefined;
  #stopped = false;

  constructor(
    work: ScheduledWork,
    opts: { auto: boolean; settleMs: number; intervalMs: number; verifyIntervalMs: number },
  ) {
    this.#work = work;
    this.#auto = opts.auto;
    this.#settleMs = opts.settleMs;
    if (opts.intervalMs > 0) {
      this.#interval = setInterval(() => {
        if (!work.paused() && work.hasChanges()) work.sync('interval');
      }, opts.intervalMs);
    }
    if (opts.verifyIntervalMs > 0) {
      this.#verify = setInterval(() => work.verify(), opts.verifyIntervalMs);
      this.#verify.unref();
    }
  }

  /** Master changed: with `--auto`, sync once no change came for `--settle`. */
  changed(): void {
    if (!this.#auto || this.#stopped || this.#work.paused()) return;
    if (this.#settleTimer) clearTimeout(this.#settleTimer);
    this.#settleTimer = setTimeout(() => {
      this.#settleTimer = undefined;
      // a rollback may have paused scheduled syncs while this one settled
      if (!this.#work.paused()) this.#work.sync('auto');
    }, this.#settleMs);
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#settleTimer);
    clearInterval(this.#interval);
    clearInterval(this.#verify);
  }
}
