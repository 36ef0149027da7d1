import { walkPool } from './walk-pool.js';
import { WALK_THREADS } from './walk-threads.js';
import { type WalkUnit, planUnits } from './walk-units.js';
import { type ManifestEntry, type WalkedEntry, same } from './manifest-entry.js';
import { MirrorswapError } from '../core/errors.js';
import { isReservedRootName } from '../store/store-layout.js';
import { pathCharacterProblem } from '../store/write-path.js';
import { PULL_LIMITS, type PullLimits } from './fleet-limits.js';

/** Walk units a thread walks and answers at a time: each is a directory, or one with its tree. */
const MANIFEST_CHUNK_UNITS = 4;

export type { ManifestEntry } from './manifest-entry.js';

/** A file as last hashed: one with the same inode, change time and size still has that content. */
export interface HashedFile {
  ino: number;
  ctimeMs: number;
  size: number;
  hash: string;
}

/** Where a file's content was last seen hashed, by path. */
export interface HashCache {
  get(path: string): HashedFile | undefined;
}

/** A whole tree: every entry, sorted by path. */
export type Manifest = ManifestEntry[];

/** What turns one tree into another: entries to make or replace, paths to remove. */
export interface ManifestDelta {
  /** Entries new or different in the target (a directory whose mode or time changed included). */
  changed: ManifestEntry[];
  /** Paths in the base that the target no longer has (or has as another type), deepest first. */
  removed: string[];
}

/**
 * Walk `root` (its temp directory left out) into a manifest. Links are
 * recorded, never followed. With `hashes`, every file gets its SHA-256:
 * carried over from the cache when the file is the one hashed before (same
 * inode, change time and size: a copy never writes a file in place, so new
 * content is a new inode), read and hashed otherwise. `seen` collects what
 * the next walk's cache needs.
 */
export async function readManifest(
  root: string,
  hashes?: { cache: HashCache; seen: Map<string, HashedFile> },
): Promise<Manifest> {
  // the walk in the walk threads, with blocking calls: an lstat through the thread pool costs
  // several times its own work (2,000 files: 150 ms one by one, 18 ms blocking)
  const walked: WalkedEntry[] = [];
  try {
    await walkPool.run<WalkUnit, WalkedEntry[]>(
      'manifest',
      { root },
      planUnits(root, [''], WALK_THREADS),
      (parts) => {
        for (const part of parts) for (const e of part) walked.push(e);
        return true;
      },
      undefined,
      { maxChunk: MANIFEST_CHUNK_UNITS },
    );
  } catch (err) {
    throw new MirrorswapError('FLEET_MANIFEST', `cannot read ${root}: ${(err as Error).message}`, { cause: err });
  }
  const entries: Manifest = [];
  const unknown: number[] = [];
  for (const { ino, ctimeMs, ...entry } of walked) {
    if (hashes && entry.type === 'file') {
      const known = hashes.cache.get(entry.path);
      if (known && known.ino === ino && known.ctimeMs === ctimeMs && known.size === entry.size) entry.hash = known.hash;
      else unknown.push(entries.length);
      hashes.seen.set(entry.path, { ino, ctimeMs, size: entry.size, hash: entry.hash ?? '' });
    }
    entries.push(entry);
  }
  // what is not known is hashed in the walk threads too
  if (hashes && unknown.length > 0) {
    const hashed = await hashInThreads(
      root,
      unknown.map((i) => entries[i].path),
    );
    unknown.forEach((i, k) => {
      const entry = entries[i];
      entry.hash = hashed[k];
      const seen = hashes.seen.get(entry.path);
      if (seen) seen.hash = hashed[k] as string;
    });
  }
  // a path sorts before every path under it: parents come first
  return entries.sort((x, y) => (x.path < y.path ? -1 : x.path > y.path ? 1 : 0));
}

/** The SHA-256 of each of `paths` under `root`, hashed in the walk threads. */
async function hashInThreads(root: string, paths: readonly string[]): Promise<string[]> {
  const out: string[] = new Array(paths.length);
  await walkPool.run<{ i: number; path: string }, { i: number; hash: string }>(
    'hash',
    { root },
    paths.map((path, i) => ({ i, path })),
    (results) => {
      for (const r of results) out[r.i] = r.hash;
      return true;
    },
  );
  return out;
}

/** What turns the tree `base` describes into the one `target` describes. */
export function diffManifests(base: Manifest, target: Manifest): ManifestDelta {
  const before = new Map(base.map((e) => [e.path, e]));
  const after = new Set<string>();
  const changed: ManifestEntry[] = [];
  const removed: string[] = [];
  for (const entry of target) {
    after.add(entry.path);
    const old = before.get(entry.path);
    if (old && old.type !== entry.type) removed.push(entry.path);
    // a made mark changed alone is a change too (manifest-merge.ts, writeAnswerSync)
    if (!old || !same(old, entry) || old.made !== entry.made) changed.push(entry);
  }
  for (const entry of base) if (!after.has(entry.path)) removed.push(entry.path);
  // deepest first, so a directory is emptied before it goes
  removed.sort((x, y) => y.split('/').length - x.split('/').length || (x < y ? 1 : -1));
  return { changed, removed };
}

/**
 * Why `path` may not be written into a slot (characters the write API
 * refuses too: a lone surrogate, a control character, a backslash; absolute,
 * climbing, the temp directory, longer or deeper than a tree can hold:
 * `PULL_LIMITS`), or null.
 */
export function badPath(path: unknown, limits: Readonly<PullLimits> = PULL_LIMITS): string | null {
  if (typeof path !== 'string' || path === '') return 'empty';
  // before anything is keyed on it: a well-formed string is its UTF-8 bytes one to one
  const chars = pathCharacterProblem(path);
  if (chars) return chars;
  if (path.startsWith('/')) return 'absolute';
  const bytes = Buffer.byteLength(path);
  if (bytes > limits.pathBytes) return `${bytes} bytes long, over the bound of ${limits.pathBytes}`;
  const segments = path.split('/');
  if (segments.length > limits.pathDepth)
    return `${segments.length} segments deep, over the bound of ${limits.pathDepth}`;
  if (segments.some((s) => s === '' || s === '.' || s === '..')) return 'an empty, "." or ".." segment';
  if (segments.some((s) => Buffer.byteLength(s) > limits.segmentBytes))
    return `a segment over the bound of ${limits.segmentBytes} bytes`;
  if (isReservedRootName(segments[0] as string)) return `"${segments[0]}" is reserved`;
  return null;
}
