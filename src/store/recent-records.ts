import { type Stats, rmSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { MirrorswapError } from '../core/errors.js';
import { lstatOrNullSync } from '../core/lstat-or-null.js';
import { isDenied, isNothingThere } from '../core/nothing-there.js';
import {
  type DirectoryIndex,
  type FileRecord,
  readDirectoryIndex,
  replaceMetaFileSync,
  validRecord,
} from './content-index.js';
import { readSmallFile, readSmallFileSync } from './read-small-file.js';
import { META_DIR_NAME, isReservedPath } from './store-layout.js';

/**
 * The recent records of a copy: what the derive of a small sync learnt of
 * the files it changed, in one file for the whole copy, where a larger one
 * rewrites each directory's content index (content-index.ts). A journal sync
 * of ten files in ten directories then writes one small file, not ten
 * indexes of a hundred records each (read, parsed, written whole and
 * renamed: about 1 ms a directory, most of what variants added to such a
 * sync).
 *
 * The rule every reader follows: the record of the path `dir/name` is the
 * recent one when the recent records name the path (null there: it has
 * none), else what the index of `dir` says. A recent entry replaces the
 * index's record whatever it holds: the index's is older, and may name an
 * inode number a new file has taken since.
 *
 * Kept small (`RECENT_RECORDS_MAX`): a derive that would grow it past that,
 * and every derive that is not a small sync's, folds the recent records into
 * the indexes of their directories and removes the file. Written as indexes
 * are (by rename, never in place, not made durable: a lost or torn file
 * costs ETags and variants, never a wrong answer, as records carry their
 * files' stamps), only into a copy that is not mounted.
 */

/** At most this many paths are kept in a copy's recent records. */
export const RECENT_RECORDS_MAX = 256;

/** Version of the format; a reader ignores a file of another. */
const RECENT_RECORDS_VERSION = 1;

/** The records by path in the copy (no leading slash); null: the path has no record (the index's is void). */
export type RecentRecords = Readonly<Record<string, FileRecord | null>>;

/** The same records by directory ('' for the root), then by name: how a directory's reader looks them up. */
export type RecentByDirectory = Readonly<Record<string, Readonly<Record<string, FileRecord | null>>>>;

/** Where the recent records of the copy at `slotRoot` live. */
export function recentRecordsPath(slotRoot: string): string {
  return join(slotRoot, META_DIR_NAME, 'recent.json');
}

/** A path a copy's record may be kept under: relative, no empty, `.` or `..` segment, not in or at a reserved root entry. */
function recordablePath(path: string): boolean {
  if (path === '' || path.startsWith('/') || isReservedPath(path)) return false;
  return path.split('/').every((s) => s !== '' && s !== '.' && s !== '..');
}

/**
 * The records parsed from `text`, or null when it is not a file of this
 * version (torn, hand-edited). An entry of a path no record may be kept
 * under is left out (no lookup names it). A malformed record of a path is
 * none (a tombstone): the entry still says the index's record of the path
 * is replaced, and that one may name an inode number a new file has taken.
 */
export function parseRecentRecords(text: string): RecentRecords | null {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return null;
  }
  const file = parsed as { v?: unknown; files?: unknown };
  if (typeof file !== 'object' || file === null || file.v !== RECENT_RECORDS_VERSION) return null;
  if (typeof file.files !== 'object' || file.files === null) return null;
  const files: Record<string, FileRecord | null> = Object.create(null);
  for (const [path, record] of Object.entries(file.files)) {
    if (recordablePath(path)) files[path] = record === null || validRecord(record) ? record : null;
  }
  return files;
}

/**
 * The recent records of the copy at `slotRoot`: none (an empty set) when
 * there is no file, 'torn' when there is one that cannot be parsed.
 */
export async function readRecentRecords(slotRoot: string): Promise<RecentRecords | 'torn'> {
  // never followed through a link, nor waited on (a FIFO there would hold every server's lookups
  // and the agent's derive), nor read past what RECENT_RECORDS_MAX records can take
  return readSmallFile(recentRecordsPath(slotRoot), RECENT_RECORDS_MAX_BYTES).then(recordsRead, unreadRecords);
}

/** The records in what a read of the file found (null: no file). */
function recordsRead(bytes: Buffer | null): RecentRecords | 'torn' {
  return bytes === null ? Object.create(null) : (parseRecentRecords(bytes.toString('utf8')) ?? 'torn');
}

/** What a read of the file that failed says: none there, or something that is no file written here (torn). */
function unreadRecords(err: unknown): RecentRecords | 'torn' {
  if (isNothingThere(err)) return Object.create(null);
  if (err instanceof MirrorswapError) return 'torn'; // not a regular file, or too large
  throw err;
}

/** What identifies one version of a file: a rename or a write changes it. */
function versionOf(st: Stats): string {
  return `${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
}

/** The recent records this process last read or wrote, by file, with the version of the file they are. */
const known = new Map<string, { version: string; records: RecentRecords }>();
/** Files remembered at most: one per copy a store may have. */
const KNOWN_FILES = 8;

function remember(path: string, version: string, records: RecentRecords): void {
  known.delete(path);
  known.set(path, { version, records });
  for (const old of known.keys()) {
    if (known.size <= KNOWN_FILES) break;
    known.delete(old);
  }
}

/**
 * As `readRecentRecords`, for the agent, which reads the same files sync
 * after sync (its standby's, and the mounted copy's for reuse): parsed again
 * only when the file is not the version last read or written (parsing 256
 * records costs 0.5 to 1 ms of the event loop, a look at the file 50 µs).
 * The records returned are never changed by anyone: they are shared.
 *
 * Blocking calls, as `writeRecentRecordsSync`: the derive that needs them
 * runs while the copy's files are fsynced, which hold libuv's pool; a call
 * through it waited behind them, 2 to 5 ms where the call itself takes tens
 * of microseconds.
 */
export function loadRecentRecordsSync(slotRoot: string): RecentRecords | 'torn' {
  const path = recentRecordsPath(slotRoot);
  const st = lstatOrNullSync(path);
  if (st === null) return Object.create(null);
  const kept = known.get(path);
  if (kept !== undefined && kept.version === versionOf(st)) return kept.records;
  let records: RecentRecords | 'torn';
  try {
    records = recordsRead(readSmallFileSync(path, RECENT_RECORDS_MAX_BYTES));
  } catch (err) {
    return unreadRecords(err);
  }
  if (records === 'torn') return 'torn';
  // the version looked at before the read: the agent is the copy's only writer, so they are one
  remember(path, versionOf(st), records);
  return records;
}

/** The most a file of `RECENT_RECORDS_MAX` records can take: each a path of at most 4096 bytes (PATH_MAX), escaped, and a record. */
const RECENT_RECORDS_MAX_BYTES = RECENT_RECORDS_MAX * (6 * 4096 + 1024);

/**
 * The recent records a server goes by; null when the file is there but
 * cannot be read or parsed (torn by a crash, hand-edited): then no record
 * of the copy is known, as any index record may be one they replaced (a
 * tombstone hid it: ext4 hands its inode number to a new file with other
 * bytes under the same size and time).
 */
export async function recentForReaders(slotRoot: string): Promise<RecentByDirectory | null> {
  return recentForServers(slotRoot).catch(() => null);
}

/**
 * As `recentForReaders`, for a server, which keeps what it reads for the
 * whole epoch: a read that failed for a reason that may pass (out of file
 * descriptors, an I/O error) is thrown, so that nothing is kept of it and
 * the next lookup reads again. A mode denying the read (drift) lasts while
 * the copy is mounted: torn, as there.
 */
export async function recentForServers(slotRoot: string): Promise<RecentByDirectory | null> {
  const records = await readRecentRecords(slotRoot).catch((err: unknown) => {
    if (isDenied(err)) return 'torn' as const;
    throw err;
  });
  return records === 'torn' ? null : byDirectory(records);
}

/**
 * The index of `relDir` as a reader takes it through the copy's recent
 * records (`recentForReaders`): none at all when they are void (null).
 */
export function throughRecent(
  index: DirectoryIndex | null,
  relDir: string,
  recent: RecentByDirectory | null,
): DirectoryIndex | null {
  if (recent === null) return null;
  return withRecent(index, relDir, Object.hasOwn(recent, relDir) ? recent[relDir] : undefined);
}

/**
 * `records` grouped by directory. With `only`, those of its paths alone and
 * of any path below one of `below` (the paths a small sync names, and what a
 * directory found at one of them holds).
 */
export function byDirectory(
  records: RecentRecords,
  only?: ReadonlySet<string>,
  below: readonly string[] = [],
): RecentByDirectory {
  const out: Record<string, Record<string, FileRecord | null>> = Object.create(null);
  const under = below.map((p) => `${p}/`);
  const take = (path: string) => only === undefined || only.has(path) || under.some((u) => path.startsWith(u));
  for (const [path, record] of Object.entries(records)) {
    if (!take(path)) continue;
    const cut = path.lastIndexOf('/');
    const dir = cut === -1 ? '' : path.slice(0, cut);
    out[dir] ??= Object.create(null);
    (out[dir] as Record<string, FileRecord | null>)[path.slice(cut + 1)] = record;
  }
  return out;
}

/**
 * The index of `relDir` as a reader takes it: `index` (null: none) with the
 * recent records of its directory in place of its own. Null when nothing
 * is left.
 */
export function withRecent(
  index: DirectoryIndex | null,
  relDir: string,
  recent: Readonly<Record<string, FileRecord | null>> | undefined,
): DirectoryIndex | null {
  if (recent === undefined) return index;
  const files: Record<string, FileRecord> = Object.assign(Object.create(null), index?.files ?? {});
  for (const [name, record] of Object.entries(recent)) {
    if (record === null) delete files[name];
    else files[name] = record;
  }
  return { v: 1, dir: relDir, files };
}

/**
 * Write `records` as the recent records of the copy at `slotRoot` (through
 * its temp directory, which must exist), or remove the file when there are
 * none. The file replaced is first linked as `setAside()` when given (to be
 * freed after the publish: freeing a cold inode costs up to a millisecond).
 * Blocking calls (`loadRecentRecordsSync` says why): a few, of tens of
 * microseconds each, in a sync's derive.
 */
export function writeRecentRecordsSync(slotRoot: string, records: RecentRecords, setAside?: () => string): void {
  const path = recentRecordsPath(slotRoot);
  const paths = Object.keys(records).sort();
  if (paths.length === 0) {
    rmSync(path, { recursive: true, force: true });
    return;
  }
  const sorted = Object.fromEntries(paths.map((p) => [p, records[p] ?? null]));
  // set aside by link (replaceMetaFileSync): until the rename the old file stays in place, as a
  // failure between the two must not leave none (its tombstones hide index records a new file's
  // stamp may match)
  replaceMetaFileSync(
    slotRoot,
    path,
    'recent',
    (tmp) =>
      writeFileSync(tmp, JSON.stringify({ v: RECENT_RECORDS_VERSION, files: sorted }), { flag: 'wx', mode: 0o644 }),
    setAside,
  );
  // the next derive of this copy finds them parsed (a rename changes the file's ctime: looked at after it)
  const st = lstatOrNullSync(path);
  if (st !== null) remember(path, versionOf(st), records);
}

/** Remove the recent records of the copy at `slotRoot`, if any (whatever stands there: one not written here is torn). */
export async function removeRecentRecords(slotRoot: string): Promise<void> {
  await rm(recentRecordsPath(slotRoot), { recursive: true, force: true });
}

/**
 * The index of `relDir` in the copy at `slotRoot` as its servers read it:
 * through the copy's recent records. Null when it says nothing.
 */
export async function readCopyIndex(slotRoot: string, relDir: string): Promise<DirectoryIndex | null> {
  const [index, recent] = await Promise.all([
    readDirectoryIndex(slotRoot, relDir).catch(() => null),
    recentForReaders(slotRoot),
  ]);
  return throughRecent(index, relDir, recent);
}
