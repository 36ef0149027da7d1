import { openStore } from '../../agent/open-store.js';
import type { Logger } from '../../core/logger.js';
import type { CopyStats } from '../../tree/tree-copy.js';
import { SWAP_FLAGS } from '../agent-flags.js';
import { STORE_FLAGS, layoutFrom } from '../common.js';
import type { FlagSpecs, FlagValues } from '../flags.js';
import { progressLine } from '../progress.js';

export const INIT_FLAGS: FlagSpecs = { ...STORE_FLAGS, variants: SWAP_FLAGS.variants as FlagSpecs[string] };

/**
 * init reports what it did on its own lines (unreadable entries included);
 * the store's recovery notes (a batch finished, a lost journal) go to stderr.
 */
const quietLogger: Logger = {
  info: () => {},
  warn: (_obj, msg) => console.error(msg),
  error: (obj, msg) => {
    if (!('unreadable' in obj)) console.error(msg);
  },
};

/** `mirrorswap init`: create the store, mirror master into both slots, publish epoch 1. Idempotent. */
export async function initCommand(values: FlagValues): Promise<number> {
  const layout = layoutFrom(values);
  const progress = progressLine();
  // On a terminal, master is counted first (one walk more) so the first copy shows an ETA too; the
  // second slot's copy is as large as the first's.
  let current = '';
  let lastBytes = 0;
  let firstSlotBytes: number | undefined;
  if (progress.shown) progress.update('opening the store…');
  // the agent's own start-up order: a batch a crash interrupted is finished, leftovers cleared, the lock held
  const store = await openStore(layout, quietLogger, {
    durable: true,
    withTotal: progress.shown,
    // the copies get the agent's default variants, or none
    ...(values.variants === false ? { variants: null } : {}),
    onProgress: (slot: string, s: CopyStats, counted?: { files: number; bytes: number }) => {
      if (slot !== current) {
        if (current) firstSlotBytes ??= lastBytes;
        current = slot;
        progress.restart();
      }
      lastBytes = s.bytes;
      const total = firstSlotBytes ?? counted?.bytes;
      progress.count(`slot ${slot}`, {
        ...s,
        ...(total !== undefined ? { totalBytes: total } : {}),
        ...(counted ? { totalFiles: counted.files } : {}),
      });
    },
  });
  try {
    const { created, recovered, record, unreadable } = store.init;
    progress.done();
    console.log(
      created
        ? `initialised ${layout.root}: master mirrored into slots a and b, epoch ${record.epoch} mounts slot ${record.mounted}`
        : recovered
          ? `${layout.root} had lost its epoch file: published epoch ${record.epoch} mounting slot ${record.mounted} again (${recovered}), without writing into either copy; the next sync of each compares it whole`
          : `${layout.root} is already initialised (epoch ${record.epoch}, slot ${record.mounted} mounted)`,
    );
    if (unreadable.length > 0) {
      // left out, never a failed init: the first sync after its mode lets it be read copies it
      console.error(
        `cannot read ${unreadable.length} entries of master (left out of both copies): ${unreadable.slice(0, 20).join(', ')}`,
      );
    }
    return 0;
  } finally {
    await store.journal.close();
    await store.lock.release();
  }
}
