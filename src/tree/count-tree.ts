import { walkPool } from './walk-pool.js';
import { WALK_THREADS } from './walk-threads.js';
import { type WalkUnit, planUnits } from './walk-units.js';

/**
 * The files and bytes under `root` (its temp directory left out), counted
 * by the walk threads: the total a first copy's progress needs for an ETA.
 * One `lstat` per entry, which also warms the caches the copy then reads.
 */
export async function countTree(root: string): Promise<{ files: number; bytes: number }> {
  const total = { files: 0, bytes: 0 };
  await walkPool.run<WalkUnit, { files: number; bytes: number }>(
    'count',
    { root },
    planUnits(root, [''], WALK_THREADS),
    (parts) => {
      for (const p of parts) {
        total.files += p.files;
        total.bytes += p.bytes;
      }
      return true;
    },
  );
  return total;
}
