import { MirrorswapError } from '../../core/errors.js';

/**
 * What a pull under way has placed, for the peers pulling the same snapshot
 * from this host before it holds the whole of it (pipelining: the rounds of
 * pulls overlap instead of following each other). A path is ready once the
 * pull has placed it (checked against the manifest, renamed into place), or
 * when the pull does not fetch it at all (the slot held it already); a path
 * it still fetches is waited for. Once the pull has failed or was given up,
 * every wait fails: the peer sees a cut answer and asks another.
 */
export class PullProgress {
  /** Paths still to place; null until the pull knows what it fetches. */
  #pending: Set<string> | null = null;
  readonly #waiters = new Map<string, Set<Waiter>>();
  #failed: Error | null = null;

  /** The pull knows what it fetches: `paths`, placed one by one from now on. */
  begin(paths: Iterable<string>): void {
    this.#pending = new Set(paths);
  }

  /** `path` is in place. */
  placed(path: string): void {
    this.#pending?.delete(path);
    const waiters = this.#waiters.get(path);
    if (!waiters) return;
    this.#waiters.delete(path);
    for (const w of [...waiters]) w.resolve();
  }

  /** The pull placed everything: no path is waited for any more. */
  finish(): void {
    this.#pending = new Set();
    for (const path of [...this.#waiters.keys()]) this.placed(path);
  }

  /** The pull failed or was given up: every wait, now or later, fails with `err`. */
  fail(err: Error): void {
    this.#failed ??= err;
    const waiters = [...this.#waiters.values()];
    this.#waiters.clear();
    for (const set of waiters) for (const w of [...set]) w.reject(this.#failed);
  }

  /**
   * True once `path` may be read from the slot, false if it still may not
   * after `waitMs` (or never, without it); rejects once the pull failed, or
   * when `signal` aborts (the peer hung up: its wait is dropped). One timer
   * and one listener a wait, both let go when it ends: a peer asks for
   * thousands of files.
   */
  ready(path: string, waitMs: number | null = null, signal?: AbortSignal): Promise<boolean> {
    if (this.#failed) return Promise.reject(this.#failed);
    if (this.#pending === null)
      return Promise.reject(new MirrorswapError('FLEET_PULL', 'this host does not know yet what its pull fetches'));
    if (!this.#pending.has(path)) return Promise.resolve(true);
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise<boolean>((resolve, reject) => {
      const waiters = this.#waiters.get(path) ?? new Set<Waiter>();
      this.#waiters.set(path, waiters);
      let timer: NodeJS.Timeout | undefined;
      const end = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        waiters.delete(waiter);
        if (waiters.size === 0 && this.#waiters.get(path) === waiters) this.#waiters.delete(path);
      };
      const onAbort = () => {
        end();
        reject(signal?.reason);
      };
      const waiter: Waiter = {
        resolve: () => {
          end();
          resolve(true);
        },
        reject: (err) => {
          end();
          reject(err);
        },
      };
      waiters.add(waiter);
      signal?.addEventListener('abort', onAbort, { once: true });
      if (waitMs !== null)
        timer = setTimeout(() => {
          end();
          resolve(false);
        }, waitMs);
    });
  }
}

interface Waiter {
  resolve(): void;
  reject(err: Error): void;
}
