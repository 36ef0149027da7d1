/**
 * How a walk thread tells the pool how far it has got within the chunk of
 * units it runs (a chunk can take seconds on a large tree): the unit code
 * calls `reportWalked` after each directory, and the thread passes the sum
 * on about every 100 ms. Outside a walk thread (tests, small trees walked
 * in the calling thread) nobody listens and it costs a null check.
 */
let reporter: ((entries: number) => void) | null = null;

/** Entries of the source tree looked at (compared, or copied) since the last report. */
export function reportWalked(entries: number): void {
  reporter?.(entries);
}

/** Install the listener of this thread (the walk worker). */
export function setWalkReporter(listener: (entries: number) => void): void {
  reporter = listener;
}
