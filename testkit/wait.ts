import { setTimeout as delay } from 'node:timers/promises';

/**
 * Wait until `check` returns a truthy value (or stops throwing); fail with
 * `what` after `timeout` ms. Tests wait with this for a condition to hold
 * rather than sleep for a guessed time. With a `step`, it checks every `step`
 * ms (a caller waiting for a state that holds only briefly gives one); without,
 * every 5 ms at first, then less often (the pause doubles up to 20 ms): a
 * check is often an HTTP request, and seconds of waiting at 5 ms were a large
 * part of some tests' CPU.
 */
export async function waitFor<T>(
  what: string,
  check: () => T | Promise<T>,
  { timeout = 5000, step }: { timeout?: number; step?: number } = {},
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeout;
  let last: unknown;
  let pause = step ?? 5;
  for (;;) {
    try {
      const value = await check();
      if (value) return value as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    }
    await delay(pause);
    if (step === undefined) pause = Math.min(pause * 2, 20);
  }
}

/**
 * Check that `check` stays true for `ms`, polling every `step` ms, for the
 * few assertions that something does *not* happen and that no event can
 * confirm (a schedule that must not fire). Polling catches a change that
 * comes and goes, which one look after a sleep would miss.
 */
export async function holdsFor(
  what: string,
  check: () => boolean | Promise<boolean>,
  ms: number,
  step = 20,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (!(await check())) throw new Error(`${what} stopped holding`);
    await delay(step);
  }
}

/** Reject after `ms` if `p` has not settled: what hangs fails the test, never the run. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  const timer = new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${what} hangs`)), ms).unref());
  return Promise.race([p, timer]);
}
