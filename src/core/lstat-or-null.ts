import { isNothingThere } from './nothing-there.js';
import { type Stats, lstatSync } from 'node:fs';
import { lstat } from 'node:fs/promises';

/** lstat(2), or null when nothing is at `path`. */
export async function lstatOrNull(path: string): Promise<Stats | null> {
  try {
    return await lstat(path);
  } catch (err) {
    if (isNothingThere(err)) return null;
    throw err;
  }
}

/** lstat(2), or null when nothing is at `path`; for the tree walks of worker threads. */
export function lstatOrNullSync(path: string): Stats | null {
  try {
    // no exception for what is most often missing (a thrown ENOENT costs four times the call)
    return lstatSync(path, { throwIfNoEntry: false }) ?? null;
  } catch (err) {
    if (isNothingThere(err)) return null;
    throw err;
  }
}
