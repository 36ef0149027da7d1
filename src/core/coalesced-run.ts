/**
 * Runs an async task so that runs never overlap: a call made while a run is
 * under way is folded into one more run after it (however many calls came),
 * so the last run always starts after the last call. Used where each run
 * reads or writes the latest state: re-reading the epoch file, rewriting
 * the heartbeat.
 */
export class CoalescedRun {
  readonly #task: () => Promise<void>;
  readonly #stopped: () => boolean;
  #running: Promise<void> | undefined;
  #again = false;

  /** `task` must not throw (it reports its own failures); no run starts once `stopped()` is true. */
  constructor(task: () => Promise<void>, stopped: () => boolean) {
    this.#task = task;
    this.#stopped = stopped;
  }

  /** Run now, or once more after the run under way; resolves when that run ends. */
  run(): Promise<void> {
    if (this.#running) {
      this.#again = true;
      return this.#running;
    }
    if (this.#stopped()) return Promise.resolve();
    this.#running = this.#loop();
    return this.#running;
  }

  /** Resolves once no run is under way. */
  settled(): Promise<void> {
    return this.#running ?? Promise.resolve();
  }

  async #loop(): Promise<void> {
    try {
      do {
        this.#again = false;
        await this.#task();
      } while (this.#again && !this.#stopped());
    } finally {
      // cleared in the same tick as the last look at #again: a call after it starts a new run
      this.#running = undefined;
    }
  }
}
