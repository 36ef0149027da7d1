import { createHash, randomBytes } from 'node:crypto';
import {
  closeSync,
  constants,
  fstatSync,
  linkSync,
  lstatSync,
  mkdirSync,
  openSync,
  readSync,
  renameSync,
  rmSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { lstat, readdir, rm, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { constants as bufferConstants } from 'node:buffer';
import { MirrorswapError } from '../core/errors.js';
import { forEachLimited } from '../core/limiter.js';
import { isDenied, isNotOfThatKind } from '../core/nothing-there.js';
import { readSmallFile, readSmallFileSync } from './read-small-file.js';
import { META_DIR_NAME, TEMP_DIR_NAME, isReservedRootName } from './store-layout.js';

/**
 * The content index of a copy: for each directory of a slot, what the agent
 * learnt of its files when it copied them: a hash of the content (for strong
 * ETags that are the same for the same bytes in every copy, release and
 * host) and the precompressed variants beside each file (`app.js.br`,
 * `app.js.gz`), made by the agent or found in master.
 *
 * Written into a copy only while it is the standby, before it is published,
 * and only by rename (a reader sees a whole index or the one before); read by
 * the servers. Every record carries the stamp of the file it describes
 * (inode, size, mtime), and of each variant (inode, size): a reader uses a
 * record only when the stamps match what it opened. Files in a copy are never
 * written in place, so a stale index (a crash between a file's rename and its
 * index's) costs a strong ETag or a variant, never a wrong answer.
 *
 * One index per directory, at `<slot>/.mirrorswap-meta/index/<hash of the
 * directory's path>.json`: a sync that changes ten files rewrites the indexes
 * of their directories only, and a lookup reads one small file.
 */

/** Directory at the root of each slot holding what the agent derives from a copy (store-layout.ts reserves it). */
export { META_DIR_NAME };

/** Version of the index format; a reader ignores (treats as absent) an index of another. */
export const CONTENT_INDEX_VERSION = 1;

/** Content codings a variant may have, in the server's order of preference when the client weighs them equally. */
export const VARIANT_ENCODINGS = ['br', 'gzip'] as const;
export type VariantEncoding = (typeof VARIANT_ENCODINGS)[number];

/** A variant's file name is its original's plus this suffix, as nginx's `gzip_static` and `brotli_static` expect. */
export const VARIANT_SUFFIX: Readonly<Record<VariantEncoding, string>> = Object.freeze({ br: '.br', gzip: '.gz' });

/** What identifies one file of a copy: a file replaced by rename gets a new inode. */
export interface FileStamp {
  readonly ino: number;
  readonly size: number;
  readonly mtimeMs: number;
}

/** A variant beside a file: its stamp, the hash of its own bytes, and who made it. */
export interface VariantRecord {
  readonly ino: number;
  readonly size: number;
  /** base64url SHA-256 of the variant's bytes (its ETag). */
  readonly sha256: string;
  /** True when the agent made it; false for a sibling master holds itself (then it is master's file, kept on delete). */
  readonly made: boolean;
}

/** What the index says of one file. */
export interface FileRecord extends FileStamp {
  /** base64url SHA-256 of the file's bytes. */
  readonly sha256: string;
  readonly variants?: Readonly<Partial<Record<VariantEncoding, VariantRecord>>>;
}

/** One directory's index. `dir` is the directory's path in the copy ('' for the root, no leading or trailing slash). */
export interface DirectoryIndex {
  readonly v: typeof CONTENT_INDEX_VERSION;
  readonly dir: string;
  readonly files: Readonly<Record<string, FileRecord>>;
}

/** Where the index of `relDir` ('' for the root) lives in the copy at `slotRoot`. */
export function directoryIndexPath(slotRoot: string, relDir: string): string {
  const name = createHash('sha256').update(relDir).digest('hex').slice(0, 32);
  return join(slotRoot, META_DIR_NAME, 'index', `${name}.json`);
}

/** The SHA-256 of `bytes`, base64url: how the index writes hashes. */
export function contentHash(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('base64url');
}

/**
 * A strong ETag from a base64url SHA-256: its first 22 characters (132 bits),
 * quoted. The same bytes give the same tag in every copy, release and host.
 */
export function strongEtag(sha256: string): string {
  return `"${sha256.slice(0, 22)}"`;
}

/** True when `record` describes the file whose status is `st`. */
export function stampMatches(record: FileStamp, st: FileStamp): boolean {
  return record.ino === st.ino && record.size === st.size && record.mtimeMs === st.mtimeMs;
}

/** True when `variant` describes the file whose status is `st`. */
export function variantMatches(variant: VariantRecord, st: { ino: number; size: number }): boolean {
  return variant.ino === st.ino && variant.size === st.size;
}

/**
 * Whether a made variant (status `vst`) has its original's mtime (`st`), to
 * the millisecond, as the agent gives every variant it makes: one with
 * another was written over in place (drift), and holds bytes its record
 * does not name. The one reading of that rule, for servers, the derive and
 * the full compare.
 */
export function hasOriginalTime(vst: { mtimeMs: number }, st: { mtimeMs: number }): boolean {
  return Math.floor(vst.mtimeMs) === Math.floor(st.mtimeMs);
}

/**
 * True when the variant whose status is `vst`, named `vname` beside the
 * original of status `st` (whose record stands), is the one `variant`
 * records, its time included: inode and size alone do not tell a variant
 * rewritten in place, which would then be sent under the strong tag of the
 * bytes it had. A made variant has its original's mtime (to the
 * millisecond); master's own (`made: false`) is a file of the copy with a
 * record of its own in `files`, stamped and hashed as any file.
 */
export function variantCurrent(
  variant: VariantRecord,
  vst: FileStamp,
  vname: string,
  st: FileStamp,
  files: Readonly<Record<string, FileRecord>>,
): boolean {
  if (!variantMatches(variant, vst)) return false;
  if (variant.made) return hasOriginalTime(vst, st);
  const own = Object.hasOwn(files, vname) ? files[vname] : undefined;
  return own !== undefined && stampMatches(own, vst) && own.sha256 === variant.sha256;
}

const HASH = /^[A-Za-z0-9_-]{43}$/;

function isNumber(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0;
}

function validVariant(v: unknown): v is VariantRecord {
  const r = v as VariantRecord;
  return (
    typeof r === 'object' &&
    r !== null &&
    isNumber(r.ino) &&
    isNumber(r.size) &&
    typeof r.sha256 === 'string' &&
    HASH.test(r.sha256) &&
    typeof r.made === 'boolean'
  );
}

/** Whether `v` is a well-formed file record (what a reader keeps of an index it parses). */
export function validRecord(v: unknown): v is FileRecord {
  const r = v as FileRecord;
  if (typeof r !== 'object' || r === null) return false;
  if (!isNumber(r.ino) || !isNumber(r.size) || !isNumber(r.mtimeMs)) return false;
  if (typeof r.sha256 !== 'string' || !HASH.test(r.sha256)) return false;
  if (r.variants === undefined) return true;
  if (typeof r.variants !== 'object' || r.variants === null) return false;
  for (const [encoding, variant] of Object.entries(r.variants)) {
    if (!(VARIANT_ENCODINGS as readonly string[]).includes(encoding) || !validVariant(variant)) return false;
  }
  return true;
}

/**
 * The index parsed from `text`, or null when it is not one of this version
 * for `relDir` (torn, hand-edited, another directory's): a reader then knows
 * nothing of the directory, which is safe. Records that are malformed are
 * left out, one by one.
 */
export function parseDirectoryIndex(text: string, relDir: string): DirectoryIndex | null {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return null;
  }
  return indexFrom(parsed, relDir);
}

/** The index in `parsed` (what JSON.parse gave), or null when it is not one of this version for `relDir`. */
function indexFrom(parsed: unknown, relDir: string): DirectoryIndex | null {
  const index = parsed as DirectoryIndex;
  if (typeof index !== 'object' || index === null || index.v !== CONTENT_INDEX_VERSION || index.dir !== relDir) {
    return null;
  }
  if (typeof index.files !== 'object' || index.files === null) return null;
  const files: Record<string, FileRecord> = Object.create(null);
  for (const [name, record] of Object.entries(index.files)) {
    if (name !== '' && !name.includes('/') && validRecord(record)) files[name] = record;
  }
  return { v: CONTENT_INDEX_VERSION, dir: relDir, files };
}

/**
 * The most of an index that is read: what a string can hold (a larger one
 * could not be parsed anyway).
 */
const INDEX_MAX_BYTES = bufferConstants.MAX_STRING_LENGTH;

/**
 * The index of `relDir` in the copy at `slotRoot`; null when there is none
 * (or none readable). For servers. Never followed through a link, nor waited
 * on (a FIFO there would hold an open in each thread of libuv's pool, and
 * with them every file read of the server), nor read past what a string holds
 * (a link to a device): anything but a regular file there is no index.
 */
export async function readDirectoryIndex(slotRoot: string, relDir: string): Promise<DirectoryIndex | null> {
  let bytes: Buffer | null;
  try {
    bytes = await readSmallFile(directoryIndexPath(slotRoot, relDir), INDEX_MAX_BYTES);
  } catch (err) {
    if (isNotOfThatKind(err) || err instanceof MirrorswapError) return null;
    throw err;
  }
  return bytes === null ? null : parseDirectoryIndex(bytes.toString('utf8'), relDir);
}

/** As `readDirectoryIndex`, with blocking calls: for the agent's walk threads (a FIFO would hold one forever). */
export function readDirectoryIndexSync(slotRoot: string, relDir: string): DirectoryIndex | null {
  let bytes: Buffer | null;
  try {
    bytes = readSmallFileSync(directoryIndexPath(slotRoot, relDir), INDEX_MAX_BYTES);
  } catch (err) {
    if (isNotOfThatKind(err) || err instanceof MirrorswapError) return null;
    throw err;
  }
  return bytes === null ? null : parseDirectoryIndex(bytes.toString('utf8'), relDir);
}

/**
 * Link `to` (a new name) to the file at `path` when it holds exactly `data`;
 * false (nothing made) otherwise. Indexes are only ever replaced by rename,
 * never written in place, so two copies may share one.
 */
function linkSameSync(path: string, data: Buffer, to: string): boolean {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return false;
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile() || st.size !== data.length) return false;
    const there = Buffer.allocUnsafe(data.length);
    if (readSync(fd, there, 0, data.length, 0) !== data.length || !there.equals(data)) return false;
    linkSync(path, to);
    // the name linked is the file compared
    if (lstatSync(to).ino === st.ino) return true;
    unlinkSync(to);
    return false;
  } catch {
    return false;
  } finally {
    closeSync(fd);
  }
}

/**
 * Remove the index of `relDir` in the copy at `slotRoot`, if there is one: a
 * directory a copy makes has no record yet. One left there by an earlier
 * directory at that path (removed since: its index stays; or copied by a
 * clone cut short) names inode numbers that new files take again, with
 * other bytes under the same size and time.
 */
export function dropDirectoryIndexSync(slotRoot: string, relDir: string): void {
  dropMetaFileSync(slotRoot, directoryIndexPath(slotRoot, relDir));
}

/** As `dropDirectoryIndexSync`, without blocking. */
export async function dropDirectoryIndex(slotRoot: string, relDir: string): Promise<void> {
  const path = directoryIndexPath(slotRoot, relDir);
  if (!(await metaDirectoriesInPlace(slotRoot, dirname(path)))) return;
  try {
    await unlink(path);
  } catch (err) {
    if (!isNotOfThatKind(err)) throw err;
  }
}

/**
 * The names the root index of the copy at `slotRoot` records that are not
 * among `present` (the root's entries now): a whole derive of the root goes
 * name by name, never listing it, so a removal a copy cut short placed
 * before its derive would leave the record (a later file of the same size
 * and time may take its inode number). Malformed names are left out.
 */
export async function rootRecordsGone(slotRoot: string, present: ReadonlySet<string>): Promise<string[]> {
  const index = await readDirectoryIndex(slotRoot, '').catch(() => null);
  return Object.keys(index?.files ?? {}).filter(
    (name) => !present.has(name) && !isReservedRootName(name) && name !== '.' && name !== '..',
  );
}

/**
 * Remove every index of the copy at `slotRoot`: when what stood over them
 * is lost (torn recent records, recent-records.ts), any record of theirs
 * may be one replaced since, naming an inode number a new file took.
 */
export async function dropEveryIndex(slotRoot: string): Promise<void> {
  // never through a link at the meta directory (removed instead); one at `index` itself is removed by rm
  if (!(await metaDirectoriesInPlace(slotRoot, join(slotRoot, META_DIR_NAME)))) return;
  await rm(join(slotRoot, META_DIR_NAME, 'index'), { recursive: true, force: true });
}

/**
 * Call `each` with every content index of the copy at `slotRoot`, up to
 * `concurrency` at a time, in no order. An index counts only as the index of
 * the directory it names when its file is the one `directoryIndexPath` gives
 * for that directory (a file copied or renamed there names another); one
 * that cannot be read or parsed is left out, as a reader leaves it. Never
 * through a link at the meta directory or its `index` (removed instead, as
 * by every meta operation). For the agent, when variants are turned off.
 */
export async function forEachDirectoryIndex(
  slotRoot: string,
  concurrency: number,
  each: (index: DirectoryIndex) => Promise<void>,
): Promise<void> {
  const dir = join(slotRoot, META_DIR_NAME, 'index');
  if (!(await metaDirectoriesInPlace(slotRoot, dir))) return;
  const names = await readdir(dir).catch((err: unknown) => {
    if (isNotOfThatKind(err)) return [];
    throw err;
  });
  await forEachLimited(names, concurrency, async (name) => {
    const path = join(dir, name);
    // one its mode denies is left out too, as a reader leaves it: it must not stop the sync that drops it
    const bytes = await readSmallFile(path, INDEX_MAX_BYTES).catch((err: unknown) => {
      if (isNotOfThatKind(err) || err instanceof MirrorswapError || isDenied(err)) return null;
      throw err;
    });
    if (bytes === null) return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(bytes.toString('utf8'));
    } catch {
      return;
    }
    const relDir = (parsed as { dir?: unknown } | null)?.dir;
    if (typeof relDir !== 'string' || directoryIndexPath(slotRoot, relDir) !== path) return;
    const index = indexFrom(parsed, relDir);
    if (index !== null) await each(index);
  });
}

/**
 * Whether moving a file aside into a copy's temp directory failed for want
 * of what removing it does not need: another file system (a directory of
 * the copy that is a mount point of its own), or no room for one more name
 * there (a full disk, a quota). The caller then frees it in place.
 */
export function cannotSetAside(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'EXDEV' || code === 'ENOSPC' || code === 'EDQUOT';
}

/**
 * Replace the index of `relDir` in the copy at `slotRoot` by rename (through
 * the slot's temp directory, which must exist), or remove it when `files` is
 * empty. Not made durable here, nor need it be: a stale, torn or lost index
 * costs an ETag or a variant, never a wrong answer (a large copy's syncfs
 * covers it anyway). Blocking calls, for a walk thread; one writer per
 * directory at a time.
 */
export function writeDirectoryIndexSync(
  slotRoot: string,
  relDir: string,
  files: Readonly<Record<string, FileRecord>>,
  /** Another copy whose index of `relDir`, when byte for byte the one to write, is hard-linked instead (copies sharing files share their indexes too). */
  shareFrom: string | null = null,
  /** A new name in the temp directory the index replaced is linked as first, to be freed later (`DeriveContext.setAside`); absent: freed by the rename. */
  setAside?: (() => string) | undefined,
): void {
  const path = directoryIndexPath(slotRoot, relDir);
  if (Object.keys(files).length === 0) {
    dropMetaFileSync(slotRoot, path);
    return;
  }
  // names in order: the same records make the same bytes in every copy, so a shared index can be linked
  const sorted = Object.fromEntries(
    Object.keys(files)
      .sort()
      .map((name) => [name, files[name] as FileRecord]),
  );
  const index: DirectoryIndex = { v: CONTENT_INDEX_VERSION, dir: relDir, files: sorted };
  const data = Buffer.from(JSON.stringify(index));
  replaceMetaFileSync(
    slotRoot,
    path,
    'index',
    (tmp) => {
      if (shareFrom !== null && linkSameSync(directoryIndexPath(shareFrom, relDir), data, tmp)) return;
      writeFileSync(tmp, data, { flag: 'wx', mode: 0o644 });
    },
    setAside,
  );
}

/**
 * Make each directory of the copy at `slotRoot` from its meta directory down
 * to `dir` a directory of its own: made if missing, and anything else
 * standing there (a file, a link, wherever it points) removed first, never
 * followed. Done before anything is written or removed in the meta
 * directory, so that nothing is, through a link, outside the copy
 * (CONTRACT.md: nothing is written in the standby through a link). Drift (a
 * hand's), never what the agent writes: left in the way, it failed every
 * sync that writes there. One lstat per level when all is in place.
 */
function metaDirectoriesSync(slotRoot: string, dir: string, make = true): boolean {
  for (const at of metaLevels(slotRoot, dir)) {
    const st = lstatSync(at, { throwIfNoEntry: false });
    if (st?.isDirectory()) continue;
    // the walk threads of a derive write side by side: another may have made way here meanwhile (the
    // entry gone, or already the directory it made: EISDIR)
    try {
      if (st) unlinkSync(at);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'EISDIR') throw err;
    }
    if (!make) return false;
    try {
      mkdirSync(at, { mode: 0o755 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
  return true;
}

/** The directories from the meta directory of the copy at `slotRoot` down to `dir`, in order. */
function metaLevels(slotRoot: string, dir: string): string[] {
  const meta = join(slotRoot, META_DIR_NAME);
  const below = dir.slice(meta.length + 1);
  const levels = [meta];
  for (const part of below === '' ? [] : below.split('/')) levels.push(join(levels.at(-1) as string, part));
  return levels;
}

/**
 * As `metaDirectoriesSync(…, false)`, without blocking: whether each
 * directory down to `dir` is one; the first that is not is removed if
 * something else (a link, a file) stands there, never followed.
 */
async function metaDirectoriesInPlace(slotRoot: string, dir: string): Promise<boolean> {
  for (const at of metaLevels(slotRoot, dir)) {
    const st = await lstat(at).catch((err: unknown) => {
      if (isNotOfThatKind(err)) return null;
      throw err;
    });
    if (st?.isDirectory()) continue;
    if (st)
      await unlink(at).catch((err: unknown) => {
        if (!isNotOfThatKind(err)) throw err;
      });
    return false;
  }
  return true;
}

/**
 * Remove the meta file `path` of the copy at `slotRoot`, never through a link
 * above it (one there is removed: what it leads to is not the copy's); none
 * there: nothing done.
 */
export function dropMetaFileSync(slotRoot: string, path: string): void {
  if (!metaDirectoriesSync(slotRoot, dirname(path), false)) return;
  try {
    unlinkSync(path);
  } catch (err) {
    if (!isNotOfThatKind(err)) throw err;
  }
}

/**
 * Make way for the meta file `path` of the copy at `slotRoot`, whose rename
 * into place failed: its directories (`metaDirectoriesSync`), and a
 * directory at `path` itself removed.
 */
function makeWayForMetaSync(slotRoot: string, path: string): void {
  metaDirectoriesSync(slotRoot, dirname(path));
  if (lstatSync(path, { throwIfNoEntry: false })?.isDirectory()) rmSync(path, { recursive: true, force: true });
}

/**
 * Replace `path`, a file of the meta directory of the copy at `slotRoot`
 * (an index, the recent records), by the file `fill` makes at a temp name
 * in the copy's temp directory (which must exist), renamed over it; the
 * directory of `path` is made if missing. The file replaced is first linked
 * as `setAside()` when given, to be freed after the publish (freeing a cold
 * inode costs up to a millisecond): linked, never moved, so until the rename
 * the old file stays in place. None there, another file system or no room
 * for one more name: the rename frees it. A failure leaves the old file and
 * no temp file. Blocking calls.
 */
export function replaceMetaFileSync(
  slotRoot: string,
  path: string,
  kind: string,
  fill: (tmp: string) => void,
  setAside?: (() => string) | undefined,
): void {
  const tmp = join(slotRoot, TEMP_DIR_NAME, `${kind}-${randomBytes(8).toString('hex')}.json`);
  try {
    fill(tmp);
    if (setAside) {
      try {
        linkSync(path, setAside());
      } catch {
        // none there, or it cannot be linked there: the rename below frees it
      }
    }
    // never through a link at the meta directory or below it: the rename would land outside the copy
    metaDirectoriesSync(slotRoot, dirname(path));
    try {
      renameSync(tmp, path);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (!isNotOfThatKind(err) && code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
      makeWayForMetaSync(slotRoot, path);
      renameSync(tmp, path);
    }
  } catch (err) {
    try {
      unlinkSync(tmp);
    } catch {
      // never made, or gone already: nothing is left behind
    }
    throw err;
  }
}
