import { type Stats, lstatSync } from 'node:fs';
import { lstat } from 'node:fs/promises';

/**
 * Errors that mean nothing can be found at a path now: no such entry, a
 * parent that is not a directory, or a path too long for any call to reach
 * (such an entry cannot be published, nor stand in a copy).
 */
const NOTHING_THERE = new Set(['ENOENT', 'ENOTDIR', 'ENAMETOOLONG']);

function nothingThere(err: unknown): boolean {
  return NOTHING_THERE.has((err as NodeJS.ErrnoException).code ?? '');
}

/** lstat(2), or null when nothing is at `path`. */
export async function lstatOrNull(path: string): Promise<Stats | null> {
  try {
    return await lstat(path);
  } catch (err) {
    if (nothingThere(err)) return null;
    throw err;
  }
}

/** lstat(2), or null when nothing is at `path`; for the tree walks of worker threads. */
export function lstatOrNullSync(path: string): Stats | null {
  try {
    return lstatSync(path);
  } catch (err) {
    if (nothingThere(err)) return null;
    throw err;
  }
}
