import { relative, sep } from 'node:path';
import {
  EPOCH_FORMAT,
  type EpochRecord,
  type PreviousRelease,
  type RetainedRelease,
  releaseEpochOf,
  writeEpochFile,
} from './epoch-file.js';
import { ALL_SLOTS, type SlotMap, type SlotName, type StoreLayout, isSeed, keptSlots } from './store-layout.js';

/**
 * Slot roots as written into the epoch file: relative to the state directory
 * when the slot lives inside the store (so a store mounted at another path on
 * another host still resolves), absolute otherwise.
 */
export function epochRoots(layout: StoreLayout, keep = 2): SlotMap<string> {
  const rel = (p: string) => {
    const r = relative(layout.stateDir, p);
    return relative(layout.root, p).startsWith('..') ? p : r.split(sep).join('/');
  };
  return Object.fromEntries(keptSlots(keep).map((s) => [s, rel(layout.slots[s])])) as SlotMap<string>;
}

/** What a publish says besides the epoch and slot. */
export interface PublishOptions {
  /** The agent's server lease, in ms (the epoch file's `lease`). */
  lease?: number | undefined;
  /** The release id of what `slot` holds. */
  release?: string | undefined;
  /** The record published before (null: none): the other slot's release is named from it. */
  current?: EpochRecord | null | undefined;
  /** How many releases the store keeps (`--keep`, default 2): more than two adds `retained`. */
  keep?: number | undefined;
  /** Keeping more than two: the releases other copies hold that pinned requests may still be served from. */
  retained?: readonly RetainedRelease[] | undefined;
  /** Keeping more than two: the epoch that published what `slot` holds, when it is mounted again as it was (a retirement). */
  since?: number | undefined;
}

/**
 * What the other slot holds once `slot` is mounted, as far as `current`
 * says: the release mounted until now when the publish switches slots; the
 * one it named when the same slot is published again.
 */
export function previousRelease(current: EpochRecord | null | undefined, slot: SlotName): PreviousRelease | undefined {
  if (!current) return undefined;
  if (current.mounted === slot) return current.previous;
  // the epoch that published it (a retirement republishes the same release under a new epoch)
  return { epoch: releaseEpochOf(current), ...(current.release !== undefined ? { release: current.release } : {}) };
}

/** Publish `epoch` mounting `slot`: the one moment web servers are told to switch. */
export async function publishEpoch(
  layout: StoreLayout,
  epoch: number,
  slot: SlotName,
  opts: PublishOptions = {},
): Promise<EpochRecord> {
  const previous = previousRelease(opts.current, slot);
  const keep = opts.keep ?? 2;
  // the fields of a store keeping more releases, only there: a store of two writes what it always did
  const more = keep > 2 || !isSeed(slot);
  const record: EpochRecord = {
    format: EPOCH_FORMAT,
    epoch,
    mounted: slot,
    // every slot the record names: those kept, the mounted one, and any retained (a --keep lowered)
    roots: epochRoots(
      layout,
      Math.max(keep, ...[slot, ...(opts.retained ?? []).map((r) => r.slot)].map((s) => ALL_SLOTS.indexOf(s) + 1)),
    ),
    publishedAt: new Date().toISOString(),
    ...(opts.lease !== undefined ? { lease: opts.lease } : {}),
    ...(opts.release !== undefined ? { release: opts.release } : {}),
    ...(previous !== undefined ? { previous } : {}),
    ...(keep > 2 ? { retained: opts.retained ?? [] } : {}),
    ...(more && opts.since !== undefined && opts.since !== epoch ? { since: opts.since } : {}),
  };
  await writeEpochFile(layout.epochFile, record);
  return record;
}
