import { closeSync, constants, openSync, readSync, readlinkSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { isGone } from './source-tree.js';

/** Flags that open an entry without following a final link, and without blocking on a FIFO. */
export const NO_FOLLOW = constants.O_NOFOLLOW | constants.O_NONBLOCK;

/** The path naming an open descriptor, for calls that take a path. */
export const fdPath = (fd: number) => `/proc/self/fd/${fd}`;

const realSources = new Map<string, string>();

/** The real path of a source root, looked up once per thread. */
function realSourceOf(source: string): string {
  let real = realSources.get(source);
  if (real === undefined) {
    real = realpathSync(source);
    realSources.set(source, real);
  }
  return real;
}

/**
 * Open `rel` below the source root with blocking calls, without following a
 * final link, and check it is where the kernel says it is (none of its
 * parents a link): the descriptor, or null when there is no such entry
 * reached without a link now. The caller closes it.
 */
export function openCheckedSync(source: string, rel: string, flags: number): number | null {
  let fd: number;
  try {
    fd = openSync(join(source, rel), flags | NO_FOLLOW);
  } catch (err) {
    if (isGone(err)) return null;
    throw err;
  }
  try {
    if (readlinkSync(fdPath(fd)) === join(realSourceOf(source), rel)) return fd;
  } catch (err) {
    closeSync(fd);
    throw err;
  }
  closeSync(fd);
  return null;
}

/**
 * The bytes of the opened regular file `fd`, whose size was `size` when
 * looked at: fewer when it shrank since (a file grown since is read up to
 * `size`). For a file held whole in memory: the caller bounds `size`.
 */
export function readOpenedSync(fd: number, size: number): Buffer {
  const bytes = Buffer.allocUnsafe(size);
  let got = 0;
  while (got < size) {
    const n = readSync(fd, bytes, got, size - got, got);
    if (n === 0) break;
    got += n;
  }
  return got === size ? bytes : bytes.subarray(0, got);
}
