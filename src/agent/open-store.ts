import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { type EpochRecord, readEpochFile } from '../store/epoch-file.js';
import type { Logger } from '../core/logger.js';
import { pathLimitsFor } from '../core/path-limits.js';
import { ALL_SLOTS, type StoreLayout, TEMP_DIR_NAME } from '../store/store-layout.js';
import { unlockTree } from '../tree/tree-mode.js';
import { type InitResult, initStore } from './init-store.js';
import type { VariantSettings } from '../tree/compressible.js';
import { Journal } from './master/journal.js';
import { MasterWriter } from './master/master-writer.js';
import { FLOCK, SYNC, checkRuntimeTools } from '../store/runtime-tools.js';
import { SlotPositions } from '../store/slot-positions.js';
import { StoreLock } from '../store/store-lock.js';

/** A store taken by this agent, with whatever a crash left half-done finished. */
export interface OpenedStore {
  readonly lock: StoreLock;
  readonly journal: Journal;
  readonly slots: SlotPositions;
  readonly writer: MasterWriter;
  readonly epoch: EpochRecord;
  /** The store was new: master was mirrored into both slots and epoch 1 published. */
  readonly initialised: boolean;
  /** What initialising (or finding the store already made) found: `mirrorswap init` reports it. */
  readonly init: InitResult;
}

export interface OpenStoreOptions {
  durable: boolean;
  lease?: number;
  /** Progress of each slot's copy when the store is new (see `initStore`). */
  onProgress?: Parameters<typeof initStore>[3] extends infer O
    ? O extends { onProgress?: infer P }
      ? P
      : never
    : never;
  /** Count master first, so a new store's first copy shows a total. */
  withTotal?: boolean;
  /** How a new store's copies get their variants (null: none); default the agent's. */
  variants?: VariantSettings | null;
  /** A new store's second copy links the first's files (`--share-files`). */
  share?: boolean;
}

/**
 * The one start-up order of a store, for the agent and for `mirrorswap init`.
 * Take the store (one agent per store), then recover in this order: redo a
 * write batch a crash interrupted, clear staging left in master and the
 * slots' temp directories, load the
 * slot positions, and initialise the store (or publish its lost epoch file
 * again). On any failure the store is released.
 */
export async function openStore(layout: StoreLayout, logger: Logger, opts: OpenStoreOptions): Promise<OpenedStore> {
  await checkRuntimeTools(opts.durable ? [FLOCK, SYNC] : [FLOCK]);
  await mkdir(layout.stateDir, { recursive: true });
  const lock = await StoreLock.acquire(layout.lockFile);
  let journal: Journal | undefined;
  try {
    const opened = await Journal.open(layout.journalFile);
    journal = opened.journal;
    const { unfinished, created } = opened;
    const writer = new MasterWriter(layout.master, journal, {
      onDropped: (path, err) =>
        logger.error(
          { path: path.slice(0, 200), err: err.message },
          'dropped an entry of an unfinished write batch that the file system cannot hold',
        ),
    });
    await mkdir(layout.master, { recursive: true });
    if (unfinished) {
      logger.warn(
        { seq: unfinished.seq, ops: unfinished.ops.length },
        'finishing a write batch interrupted by a crash',
      );
      await writer.redo(unfinished.seq, unfinished.ops);
    }
    await writer.clearTemp();
    // what a swap killed before it freed it: entries a copy set aside, in either slot (never served);
    // a clone cut short may have left read-only directories there, made writable first
    await Promise.all(
      ALL_SLOTS.map(async (slot) => {
        const tmp = join(layout.slots[slot], TEMP_DIR_NAME);
        await unlockTree(tmp);
        await rm(tmp, { recursive: true, force: true });
      }),
    );
    const slots = await SlotPositions.load(layout.slotPositionsFile, journal.id);
    if (created && (await readEpochFile(layout.epochFile))) {
      logger.warn(
        { journal: layout.journalFile },
        'change journal was missing: the next sync of each slot compares whole trees',
      );
    }
    const init = await initStore(layout, journal, slots, opts);
    const { created: initialised, recovered, record, unreadable } = init;
    if (initialised) logger.info({ epoch: record.epoch, mounted: record.mounted }, 'store initialised');
    if (unreadable.length > 0) {
      logger.error(
        { unreadable: unreadable.slice(0, 20), count: unreadable.length },
        `cannot read ${unreadable.length} entries of master (their mode, or a parent directory's, shuts the agent out): left out of both copies; give the agent's user read access`,
      );
    }
    if (recovered) {
      logger.warn(
        { epoch: record.epoch, mounted: record.mounted, recoveredFrom: recovered },
        `the epoch file was missing: published epoch ${record.epoch} mounting slot ${record.mounted} again, without writing into either copy`,
      );
    }
    writer.limits = await pathLimitsFor([layout.master, layout.slots.a, layout.slots.b]);
    return { lock, journal, slots, writer, epoch: record, initialised, init };
  } catch (err) {
    // a library caller that goes on after a failed start must not keep the store's descriptors
    await journal?.close().catch(() => {});
    await lock.release();
    throw err;
  }
}
