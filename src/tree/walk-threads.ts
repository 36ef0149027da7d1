import { availableParallelism } from 'node:os';

/**
 * How many worker threads a tree walk or copy uses: one per core, at most 4.
 * The work is mostly small system calls, which run in parallel on the
 * thread pool; past 4 threads they only contend for the same disk and locks.
 */
export const WALK_THREADS = Math.max(1, Math.min(availableParallelism(), 4));
