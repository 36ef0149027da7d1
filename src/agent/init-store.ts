import { mkdir } from 'node:fs/promises';
import { type EpochRecord, readEpochFile } from '../epoch-file.js';
import { SLOTS, type StoreLayout } from '../store-layout.js';
import type { Journal } from './journal.js';
import { publishEpoch } from './publish.js';
import type { SlotState } from './slot-state.js';
import { type CopyStats, TreeCopier } from './tree-copy.js';

/**
 * Create the store's directories and, when no epoch is published yet, mirror
 * master into both slots and publish epoch 1 mounting slot a: all three
 * start as mirror images. Does nothing more on a store already initialised.
 */
export async function initStore(
  layout: StoreLayout,
  journal: Journal,
  slots: SlotState,
  opts: { durable?: boolean; onProgress?: (slot: string, stats: CopyStats) => void } = {},
): Promise<{ created: boolean; record: EpochRecord }> {
  for (const dir of [layout.master, layout.slots.a, layout.slots.b, layout.stateDir, layout.serversDir]) {
    await mkdir(dir, { recursive: true });
  }
  const existing = await readEpochFile(layout.epochFile);
  if (existing) return { created: false, record: existing };
  const seq = journal.lastSeq;
  for (const slot of SLOTS) {
    const copier = new TreeCopier(layout.master, layout.slots[slot], {
      durable: opts.durable ?? true,
      onProgress: opts.onProgress && ((s) => opts.onProgress?.(slot, s)),
    });
    await copier.clearTemp();
    await slots.set(slot, { seq: null, syncing: true });
    await copier.mirrorAll();
    await slots.set(slot, { seq, syncing: false });
  }
  return { created: true, record: await publishEpoch(layout, 1, 'a') };
}
