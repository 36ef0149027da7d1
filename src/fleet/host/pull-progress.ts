import { MirrorswapError } from '../../core/errors.js';
import { indexOfPrint, pathPrint } from '../../core/path-print.js';

/**
 * What a pull under way has placed, for the peers pulling the same snapshot
 * from this host before it holds the whole of it (pipelining: the rounds of
 * pulls overlap instead of following each other). A path is ready once the
 * pull has placed it (checked against the manifest, renamed into place), or
 * when the pull does not fetch it at all (the slot held it already); a path
 * it still fetches is waited for. Once the pull has failed or was given up,
 * every wait fails: the peer sees a cut answer and asks another.
 *
 * The paths to place are held as prints (`pathPrint`, 52 bits), sorted, each
 * with a count of the paths still to place that have it: 12 bytes a file, not
 * the paths themselves (a pull of a million files held a set of a million
 * strings). Two paths of one print are both waited for until both are
 * placed: a print can make a peer wait, never read a file before it is placed.
 */
export class PullProgress {
  /** The prints of the paths to place, sorted and distinct; null until the pull knows what it fetches. */
  #prints: Float64Array | null = null;
  /** Of each print, the paths not placed yet. */
  #left: Uint32Array = new Uint32Array(0);
  /** Waits, by the print of the path waited for. */
  readonly #waiters = new Map<number, Set<Waiter>>();
  #failed: Error | null = null;

  /**
   * The pull knows what it fetches: `paths`, or the paths of `prints`
   * (`pathPrint`, any order), placed one by one from now on.
   */
  begin(paths: Float64Array | Iterable<string>): void {
    const sorted = paths instanceof Float64Array ? Float64Array.from(paths) : Float64Array.from(paths, pathPrint);
    sorted.sort();
    let distinct = 0;
    const left = new Uint32Array(sorted.length);
    for (let i = 0; i < sorted.length; i++) {
      if (distinct === 0 || sorted[distinct - 1] !== sorted[i]) sorted[distinct++] = sorted[i] as number;
      (left[distinct - 1] as number)++;
    }
    this.#prints = sorted.slice(0, distinct);
    this.#left = left.slice(0, distinct);
  }

  /** `path`, one of those begun with, is in place (once: each path is placed once). */
  placed(path: string): void {
    const print = pathPrint(path);
    const at = this.#find(print);
    if (at < 0 || this.#left[at] === 0) return;
    this.#left[at] = (this.#left[at] as number) - 1;
    if (this.#left[at] !== 0) return;
    const waiters = this.#waiters.get(print);
    if (!waiters) return;
    this.#waiters.delete(print);
    for (const w of [...waiters]) w.resolve();
  }

  /** The pull placed everything: no path is waited for any more. */
  finish(): void {
    this.#left.fill(0);
    const waiters = [...this.#waiters.values()];
    this.#waiters.clear();
    for (const set of waiters) for (const w of [...set]) w.resolve();
  }

  /** The pull failed or was given up: every wait, now or later, fails with `err`. */
  fail(err: Error): void {
    this.#failed ??= err;
    const waiters = [...this.#waiters.values()];
    this.#waiters.clear();
    for (const set of waiters) for (const w of [...set]) w.reject(this.#failed);
  }

  /** Where `print` is among the prints; -1 when it is not. */
  #find(print: number): number {
    return this.#prints === null ? -1 : indexOfPrint(this.#prints, print);
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
    if (this.#prints === null)
      return Promise.reject(new MirrorswapError('FLEET_PULL', 'this host does not know yet what its pull fetches'));
    const print = pathPrint(path);
    const at = this.#find(print);
    if (at < 0 || this.#left[at] === 0) return Promise.resolve(true);
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise<boolean>((resolve, reject) => {
      const waiters = this.#waiters.get(print) ?? new Set<Waiter>();
      this.#waiters.set(print, waiters);
      let timer: NodeJS.Timeout | undefined;
      const end = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        waiters.delete(waiter);
        if (waiters.size === 0 && this.#waiters.get(print) === waiters) this.#waiters.delete(print);
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
