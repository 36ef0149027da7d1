import { relative, sep } from 'node:path';
import { type EpochRecord, writeEpochFile } from './epoch-file.js';
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

/** Publish `epoch` mounting `slot`: the one moment web servers are told to switch. */
export async function publishEpoch(
  layout: StoreLayout,
  epoch: number,
  slot: SlotName,
  lease?: number,
): Promise<EpochRecord> {
  const record: EpochRecord = {
    format: 1,
    epoch,
    mounted: slot,
    roots: epochRoots(layout),
    publishedAt: new Date().toISOString(),
    ...(lease !== undefined ? { lease } : {}),
  };
  await writeEpochFile(layout.epochFile, record);
  return record;
}
