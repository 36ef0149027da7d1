import { setTimeout as delay } from 'node:timers/promises';

/**
 * Wait until `check` returns a truthy value (or stops throwing), polling every
 * `step` ms; fail with `what` after `timeout` ms. Tests wait on conditions,
 * never on bare sleeps.
 */
export async function waitFor<T>(
  what: string,
  check: () => T | Promise<T>,
  { timeout = 5000, step = 5 }: { timeout?: number; step?: number } = {},
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeout;
  let last: unknown;
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
    await delay(step);
  }
}
