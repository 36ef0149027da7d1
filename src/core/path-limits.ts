import { lstat } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * The longest path a system call takes, in bytes, without the terminating
 * NUL (PATH_MAX is 4096 on Linux). A longer path cannot be used at all.
 */
export const SYSTEM_PATH_BYTES = 4095;

/** The longest name of one directory entry on the usual file systems (NAME_MAX). */
export const SYSTEM_SEGMENT_BYTES = 255;

/**
 * Room kept beyond a path for the copier's staging names (a temp directory
 * and a random name stand where the first segment of a copied tree will be).
 */
const STAGING_ROOM = 48;

/** How long a relative path (and each of its segments) may be, in bytes, so that every tree can hold it. */
export interface PathLimits {
  readonly pathBytes: number;
  readonly segmentBytes: number;
}

/** The limits of the system alone, before any tree is looked at. */
export const SYSTEM_LIMITS: PathLimits = { pathBytes: SYSTEM_PATH_BYTES, segmentBytes: SYSTEM_SEGMENT_BYTES };

/**
 * The longest entry name `dir`'s file system takes. Found by looking names
 * up, never by creating anything: a lookup of a name that is too long fails
 * with ENAMETOOLONG, one that fits with ENOENT.
 */
async function segmentLimit(dir: string): Promise<number> {
  const fits = async (n: number) => {
    try {
      await lstat(join(dir, `.mirrorswap-probe-${'n'.repeat(n - 18)}`));
      return true; // a file by that name exists: it fits
    } catch (err) {
      return (err as NodeJS.ErrnoException).code !== 'ENAMETOOLONG';
    }
  };
  if (await fits(SYSTEM_SEGMENT_BYTES)) return SYSTEM_SEGMENT_BYTES;
  let lo = 19; // the probe prefix plus one byte
  let hi = SYSTEM_SEGMENT_BYTES;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (await fits(mid)) lo = mid;
    else hi = mid;
  }
  return lo;
}

/**
 * The limits a path below every one of `roots` must keep: each segment within
 * the smallest NAME_MAX of their file systems, the whole within PATH_MAX once
 * joined to the longest root (and the copier's staging room).
 */
export async function pathLimitsFor(roots: readonly string[]): Promise<PathLimits> {
  const longest = Math.max(...roots.map((r) => Buffer.byteLength(r)));
  const segments = await Promise.all(roots.map(segmentLimit));
  return {
    pathBytes: SYSTEM_PATH_BYTES - longest - 1 - STAGING_ROOM,
    segmentBytes: Math.min(SYSTEM_SEGMENT_BYTES, ...segments),
  };
}

/** Why `rel` does not fit the limits, or null when it does. */
export function pathTooLong(rel: string, limits: PathLimits): string | null {
  const bytes = Buffer.byteLength(rel);
  if (bytes > limits.pathBytes) {
    return `path is ${bytes} bytes long; the store's file systems take at most ${limits.pathBytes} below master and each copy`;
  }
  for (const segment of rel.split('/')) {
    const n = Buffer.byteLength(segment);
    if (n > limits.segmentBytes) {
      return `a path segment is ${n} bytes long; the store's file systems take at most ${limits.segmentBytes}`;
    }
  }
  return null;
}
