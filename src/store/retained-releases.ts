import { type EpochRecord, type RetainedRelease, releaseEpochOf } from './epoch-file.js';
import type { SlotName } from './store-layout.js';

/**
 * The epoch file's `retained` list, as every writer of it changes it: the
 * sync agent on a single host, and each host agent of a fleet at a commit.
 */

/** How long a replaced release stays servable to pinned requests, by default (`--skew-max-age`). */
export const RETENTION_DEFAULTS = Object.freeze({ skewMaxAgeMs: 24 * 60 * 60_000 });

/** The retained list once `slot` leaves it. */
export function without(retained: readonly RetainedRelease[] | undefined, slot: SlotName): RetainedRelease[] {
  return (retained ?? []).filter((r) => r.slot !== slot);
}

/**
 * The retained list once `to` is mounted in place of what `current` mounts:
 * the release mounted until now joins it (servable for `maxAgeMs` more, 0:
 * until its copy is reused), and `to` leaves it. Newest first.
 */
export function retainedAfter(
  current: EpochRecord,
  to: SlotName,
  maxAgeMs: number,
  now = Date.now(),
): RetainedRelease[] {
  const replaced: RetainedRelease = {
    slot: current.mounted,
    epoch: releaseEpochOf(current),
    ...(current.release !== undefined ? { release: current.release } : {}),
    replacedAt: new Date(now).toISOString(),
    ...(maxAgeMs > 0 ? { until: new Date(now + maxAgeMs).toISOString() } : {}),
  };
  const list = current.mounted === to ? without(current.retained, to) : [replaced, ...without(current.retained, to)];
  return list.sort((x, y) => y.epoch - x.epoch);
}
