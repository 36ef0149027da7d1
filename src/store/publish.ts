import { relative, sep } from 'node:path';
import { type EpochRecord, type PreviousRelease, writeEpochFile } from './epoch-file.js';
import type { SlotName, StoreLayout } from './store-layout.js';

/**
 * Slot roots as written into the epoch file: relative to the state directory
 * when the slot lives inside the store (so a store mounted at another path on
 * another host still resolves), absolute otherwise.
 */
export function epochRoots(layout: StoreLayout): Record<SlotName, string> {
  const rel = (p: string) => {
    const r = relative(layout.stateDir, p);
    return relative(layout.root, p).startsWith('..') ? p : r.split(sep).join('/');
  };
  return { a: rel(layout.slots.a), b: rel(layout.slots.b) };
}

/** What a publish says besides the epoch and slot. */
export interface PublishOptions {
  /** The agent's server lease, in ms (the epoch file's `lease`). */
  lease?: number | undefined;
  /** The release id of what `slot` holds. */
  release?: string | undefined;
  /** The record published before (null: none): the other slot's release is named from it. */
  current?: EpochRecord | null | undefined;
}

/**
 * What the other slot holds once `slot` is mounted, as far as `current`
 * says: the release mounted until now when the publish switches slots; the
 * one it named when the same slot is published again.
 */
export function previousRelease(current: EpochRecord | null | undefined, slot: SlotName): PreviousRelease | undefined {
  if (!current) return undefined;
  if (current.mounted === slot) return current.previous;
  return { epoch: current.epoch, ...(current.release !== undefined ? { release: current.release } : {}) };
}

/** Publish `epoch` mounting `slot`: the one moment web servers are told to switch. */
export async function publishEpoch(
  layout: StoreLayout,
  epoch: number,
  slot: SlotName,
  opts: PublishOptions = {},
): Promise<EpochRecord> {
  const previous = previousRelease(opts.current, slot);
  const record: EpochRecord = {
    format: 1,
    epoch,
    mounted: slot,
    roots: epochRoots(layout),
    publishedAt: new Date().toISOString(),
    ...(opts.lease !== undefined ? { lease: opts.lease } : {}),
    ...(opts.release !== undefined ? { release: opts.release } : {}),
    ...(previous !== undefined ? { previous } : {}),
  };
  await writeEpochFile(layout.epochFile, record);
  return record;
}
