import { MirrorswapError } from '../../core/errors.js';
import { type EpochRecord, type RetainedRelease, releaseEpochOf } from '../../store/epoch-file.js';
import type { SlotPosition } from '../../store/slot-positions.js';
import { type SlotName, keptSlots } from '../../store/store-layout.js';

/**
 * Which copies hold which releases, for a store keeping `keep` of them
 * (`--keep`). The epoch file is the record: the mounted release, and the
 * `retained` ones other copies hold, servable to requests pinned to them.
 * Every other copy of the store is free: the standby. With two copies there
 * is never a retained one (the old copy drains at once, as it always has).
 */

/** The copy a sync writes into, and whether a retained release must leave the epoch file first. */
export interface StandbyChoice {
  slot: SlotName;
  /** The retained release the copy holds: retired (published away, then drained) before the copy. */
  retire: RetainedRelease | null;
  /** Retired while younger than `--skew-max-age`: a sync never waits on skew, so it is logged and counted. */
  early: boolean;
}

/**
 * The copy a sync copies into: a free one (neither mounted nor retained),
 * preferring the one the journal can bring up to date from furthest along;
 * when every copy holds a release, the oldest retained one.
 */
export function chooseStandby(
  current: EpochRecord,
  keep: number,
  position: (slot: SlotName) => SlotPosition,
  now = Date.now(),
): StandbyChoice {
  const retained = current.retained ?? [];
  const free = keptSlots(keep).filter((s) => s !== current.mounted && !retained.some((r) => r.slot === s));
  if (free.length > 0) {
    const seqOf = (s: SlotName) => position(s).seq ?? -1;
    const slot = free.reduce((x, y) => (seqOf(y) > seqOf(x) ? y : x));
    return { slot, retire: null, early: false };
  }
  const oldest = retained.reduce((x, y) => (y.epoch < x.epoch ? y : x));
  const until = oldest.until === undefined ? Number.POSITIVE_INFINITY : Date.parse(oldest.until);
  return { slot: oldest.slot, retire: oldest, early: until > now };
}

/**
 * The copy the next sync writes into, as `chooseStandby` picks it once
 * releases retained on slots past `--keep` (it was lowered) are set aside:
 * they are retired, never reused in place. With two copies nothing is
 * retained: the other copy, or, for a store back to two from more that
 * mounts c or later, a or b, whichever is further along.
 */
export function nextStandby(
  current: EpochRecord,
  keep: number,
  position: (slot: SlotName) => SlotPosition,
): StandbyChoice {
  const retained = keep > 2 ? inKept(current.retained, keep) : [];
  return chooseStandby({ ...current, retained }, keep, position);
}

/** The releases of `retained` on slots a store keeping `keep` uses. */
export function inKept(retained: readonly RetainedRelease[] | undefined, keep: number): RetainedRelease[] {
  const kept = keptSlots(keep);
  return (retained ?? []).filter((r) => kept.includes(r.slot));
}

/**
 * The retained release a rollback mounts: the one `to` names (its id, or the
 * epoch that published it), else the newest. Refused, naming what is kept,
 * when there is none.
 */
export function rollbackChoice(current: EpochRecord, to: string | undefined): RetainedRelease {
  const retained = [...(current.retained ?? [])].sort((x, y) => y.epoch - x.epoch);
  const names = (r: { epoch: number; release?: string | undefined }) =>
    to === undefined || r.release === to || (/^[1-9][0-9]*$/.test(to) && Number(to) === r.epoch);
  if (
    to !== undefined &&
    (current.release === to || (/^[1-9][0-9]*$/.test(to) && Number(to) === releaseEpochOf(current)))
  ) {
    throw new MirrorswapError('NO_ROLLBACK', `${to} is the release mounted; nothing to roll back to`);
  }
  const found = retained.find(names);
  if (found) return found;
  const kept = retained.map((r) => (r.release === undefined ? `epoch ${r.epoch}` : `${r.release} (epoch ${r.epoch})`));
  throw new MirrorswapError(
    'NO_ROLLBACK',
    to === undefined
      ? 'no earlier release is retained (the copies that held them were reused, or none was kept yet); nothing to roll back to'
      : `${to} is not retained; the retained releases are: ${kept.length > 0 ? kept.join(', ') : 'none'}; publish it again with sync`,
  );
}
