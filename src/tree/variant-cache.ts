import { randomBytes } from 'node:crypto';
import { type Stats, constants } from 'node:fs';
import { lstat, mkdir, open, readdir, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { lstatOrNullSync } from '../core/lstat-or-null.js';
import { isNothingThere } from '../core/nothing-there.js';
import { type VariantEncoding, hasOriginalTime } from '../store/content-index.js';
import type { VariantSettings } from './compressible.js';
import { msInside } from './copy-times.js';

/**
 * The variant cache: variants compressed as files land in master, before
 * any sync asks for them, so that a sync links them into the copy instead of
 * compressing on its way to the publish (derive-variants.ts looks here
 * first). One file per original's content and coding, named by the
 * original's SHA-256 and the coding's level (`<sha256>.br5`, `<sha256>.gz6`):
 * what a name holds is fixed by the name, so an entry is never written
 * twice, never changed, and a copy may share its inode.
 *
 * An entry is written whole to a temp name, made durable, then renamed in:
 * a crash leaves a whole entry or none (a stray temp file is removed by the
 * next prune). An entry made from bytes a writer was still writing is named
 * by those bytes' hash, matches no file of any copy, and is pruned.
 *
 * It lives in the store's state directory. A copy on another file system
 * (a slot that is its own disk) gets a copy of the entry, not a link.
 */

/** The prefix of an entry being written (never a valid entry's name: hashes are base64url). */
const TEMP_PREFIX = '.tmp-';

/** A temp file older than this was left by a crash (an entry's write takes milliseconds). */
const TEMP_MAX_AGE_MS = 60_000;

/**
 * An entry linked into two copies (its own name and theirs) has done its
 * work: a release's changes land in the standby copy, then, a sync later,
 * in the other one, and after that a copy takes its variants from a copy
 * that holds them.
 */
const TAKEN_LINKS = 3;

/** The name of the entry for an original of hash `sha256` in `encoding` at the settings' level. */
export function cacheEntryName(sha256: string, encoding: VariantEncoding, settings: VariantSettings): string {
  return encoding === 'br' ? `${sha256}.br${settings.brotliQuality}` : `${sha256}.gz${settings.gzipLevel}`;
}

/** What an entry holds: its size, and the SHA-256 of its bytes (base64url), as the one who made it computed them. */
export interface CacheEntry {
  size: number;
  sha256: string;
  /**
   * The mtime it was written with (its original's, floored to the
   * millisecond). An entry is linked into copies, so a copy's variant
   * rewritten in place (drift) rewrites the entry too, and gives it a time
   * of its own: then it is not taken.
   */
  mtimeMs: number;
}

/**
 * The cache as a copy's derive sees it: its directory, and its entries by
 * name as the agent made them. An entry the agent does not know of (made
 * by an agent before a restart: the next prune removes it) is not taken,
 * and a name not among them costs no system call.
 */
export interface CacheView {
  dir: string;
  entries: Readonly<Record<string, CacheEntry>>;
}

/**
 * The entry of the cache for that content and coding, with its status;
 * null when there is none, the file under its name is not the one made
 * (another size, another time), or the cache cannot be looked into.
 */
export function cachedVariantSync(
  cache: CacheView,
  sha256: string,
  encoding: VariantEncoding,
  settings: VariantSettings,
): (CacheEntry & { path: string; st: Stats }) | null {
  const name = cacheEntryName(sha256, encoding, settings);
  if (!Object.hasOwn(cache.entries, name)) return null;
  const entry = cache.entries[name] as CacheEntry;
  const path = join(cache.dir, name);
  let st: Stats | null;
  try {
    st = lstatOrNullSync(path);
  } catch {
    // a cache that cannot be looked into (ELOOP, EACCES, EIO: its directory replaced or shut) costs a
    // compression, as a missing entry does; it never fails the copy that asked
    return null;
  }
  // the time it was written with, its original's (CacheEntry.mtimeMs): the rule a made variant keeps
  return st?.isFile() && st.size === entry.size && hasOriginalTime(st, entry) ? { ...entry, path, st } : null;
}

/**
 * Write `bytes` as the entry `name` of the cache at `dir`, with the mode and
 * times its original has in master (a copy links it only when they are the
 * ones its own original has). An entry already there is replaced by the
 * rename, with the same bytes (its name says which). A cache directory
 * removed meanwhile is made again (its parent, the state directory, never
 * is).
 */
export async function putCacheEntry(
  dir: string,
  name: string,
  bytes: Uint8Array,
  like: { mode: number; atimeMs: number; mtimeMs: number },
): Promise<void> {
  const path = join(dir, name);
  const tmp = join(dir, `${TEMP_PREFIX}${randomBytes(8).toString('hex')}`);
  const create = () => open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
  const handle = await create().catch(async (err: unknown) => {
    // the directory removed under a running agent (an operator clearing a cache): made again, not
    // failed for every file until a restart; only the cache itself, inside a state directory still there
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    await mkdir(dir, { mode: 0o700 }).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'EEXIST') throw e;
    });
    return create();
  });
  try {
    try {
      await handle.writeFile(bytes);
      await handle.chmod(like.mode & 0o666);
      await handle.utimes(msInside(like.atimeMs), msInside(like.mtimeMs));
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => {}); // a full disk leaves no temp file behind
    throw err;
  }
}

/** Make the cache directory (the state directory's own mode keeps strangers out of it). */
export async function ensureCache(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
}

/**
 * Remove what the cache no longer serves: entries two copies have taken
 * (links to them exist: later syncs reuse a copy's), entries not taken
 * within `maxAgeMs` of being made (their file changed again, or no sync
 * came), entries not `known` (made by an agent before a restart), and temp
 * files left by a crash. Returns the names of the entries left. Removing an
 * entry never changes a copy: a copy's link is a name of its own.
 */
export async function pruneCache(
  dir: string,
  maxAgeMs: number,
  known: (name: string) => boolean,
  now = Date.now(),
  /** Entries every copy has taken, by a copy rather than a link (another file system): as good as TAKEN_LINKS. */
  takenByAll: (name: string) => boolean = () => false,
): Promise<Set<string>> {
  const left = new Set<string>();
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if (isNothingThere(err)) return left;
    throw err;
  }
  for (const name of names) {
    const path = join(dir, name);
    const st = await lstat(path).catch(() => null);
    if (!st) continue;
    // ctime: when the entry was made (or last linked); its mtime is its original's
    const age = now - st.ctimeMs;
    const temp = name.startsWith(TEMP_PREFIX);
    const gone = temp
      ? age > TEMP_MAX_AGE_MS // a write cut short; one under way is younger
      : !known(name) || !st.isFile() || st.nlink >= TAKEN_LINKS || takenByAll(name) || age > maxAgeMs;
    if (gone) await unlink(path).catch(() => {});
    else if (!temp) left.add(name);
  }
  return left;
}
