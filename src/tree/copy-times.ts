/**
 * A time in seconds, for utimes, that lands inside the millisecond of `ms`
 * whichever way it is read back: floored (comparisons, Stats.mtimeMs) or
 * rounded (Stats.mtime, hence ETags). utimes takes a double, whose rounding
 * moves a time by a few nanoseconds: aiming a quarter into the millisecond
 * keeps both readings on master's millisecond, so a copy's ETag is always
 * the same, and the same in both copies.
 */
export function msInside(ms: number): number {
  return (Math.floor(ms) + 0.25) / 1000;
}
