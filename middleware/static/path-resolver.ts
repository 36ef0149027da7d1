import { deniedAsNone, isNotOfThatKind } from '../../src/core/nothing-there.js';
import { type FileHandle, open, realpath, stat } from 'node:fs/promises';
import { type Stats, constants } from 'node:fs';
import type { OutgoingHttpHeaders } from 'node:http';
import { basename, dirname, extname, isAbsolute, join, posix, relative, sep } from 'node:path';
import etag from 'etag';
import { contentType } from 'mime-types';
import { SYSTEM_PATH_BYTES, SYSTEM_SEGMENT_BYTES } from '../../src/core/path-limits.js';
import {
  type DirectoryIndex,
  type FileRecord,
  META_DIR_NAME,
  VARIANT_ENCODINGS,
  VARIANT_SUFFIX,
  readDirectoryIndex,
  stampMatches,
  strongEtag,
  variantCurrent,
  variantMatches,
} from '../../src/store/content-index.js';
import { recentForServers, throughRecent } from '../../src/store/recent-records.js';
import { TEMP_DIR_NAME } from '../../src/store/store-layout.js';
import { variantOf } from '../../src/tree/compressible.js';
import type { ArenaBody, BodyArena } from './body-arena.js';
import { cacheControlFor } from './cache-rules.js';
import type { Entry, FileEntry, IndexSource, RefusedEntry, VariantEntry } from './file-cache.js';
import type { ResolvedStaticOptions } from '../options.js';

const BAD_REQUEST: RefusedEntry = Object.freeze({ kind: 'refused', status: 400 });
const FORBIDDEN: RefusedEntry = Object.freeze({ kind: 'refused', status: 403 });
export const NOT_FOUND: RefusedEntry = Object.freeze({ kind: 'refused', status: 404 });
export const REDIRECT = Object.freeze({ kind: 'redirect' as const });

/**
 * Whether `s` is longer than `max` bytes in UTF-8 (how the kernel counts):
 * a UTF-16 unit is at most 3 bytes, so short strings need no count.
 */
function overBytes(s: string, max: number): boolean {
  return s.length * 3 > max && Buffer.byteLength(s) > max;
}

/** The path part of a request target, still encoded: what the cache is keyed by. */
export function requestPath(url: string | undefined): string {
  if (!url) return '/';
  const q = url.indexOf('?');
  return q === -1 ? url : url.slice(0, q);
}

/** True when `child` is `root` or below it. Never a bare prefix test: /srv/a must not contain /srv/a2. */
export function isInside(root: string, child: string): boolean {
  const rel = relative(root, child);
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
}

function isNotFound(err: unknown): boolean {
  return isNotOfThatKind(err);
}

async function statOrNull(path: string): Promise<Stats | null> {
  try {
    return await stat(path);
  } catch (err) {
    if (isNotFound(err)) return null;
    throw err;
  }
}

export interface SlotRoots {
  readonly root: string;
  readonly realRoot: string;
  /** The epoch that published it, and its release id: what `releaseHeader` names (and a pin may name). */
  readonly releaseEpoch?: number;
  readonly release?: string | undefined;
}

/**
 * Map a request path (still percent-encoded, without the query) to what the
 * mounted copy holds there. Hostile input ends in 400, 403 or 404; only a
 * file whose real path lies inside the slot root is ever returned.
 */
export async function resolveRequestPath(
  rawPath: string,
  slot: SlotRoots,
  opts: ResolvedStaticOptions,
  arena: BodyArena | null,
  indexes: IndexSource | null = null,
): Promise<Entry> {
  const lookup: Lookup = { slot, opts, arena, indexes };
  let decoded: string;
  try {
    decoded = decodeURIComponent(rawPath);
  } catch {
    return BAD_REQUEST;
  }
  // null bytes, backslashes (a Windows separator, never a name we publish), relative forms
  if (decoded.includes('\0') || decoded.includes('\\') || !decoded.startsWith('/')) return BAD_REQUEST;
  // longer than any path or name the system takes: 404 without touching the disk
  if (overBytes(decoded, SYSTEM_PATH_BYTES)) return NOT_FOUND;
  // Dot segments are resolved as send (serve-static's engine) does: "/users/../todo.txt" is
  // "/todo.txt"; only a path that would climb above the root is refused.
  const normalized = posix.normalize(`.${decoded}`);
  if (normalized === '..' || normalized.startsWith('../')) return FORBIDDEN;
  const segments = normalized.split('/').filter((s) => s !== '' && s !== '.');
  if (segments.some((s) => overBytes(s, SYSTEM_SEGMENT_BYTES))) return NOT_FOUND;
  // the copier's temp directory and the agent's content index are never served, whatever `dotfiles` says
  if (segments[0] === TEMP_DIR_NAME || segments[0] === META_DIR_NAME) return NOT_FOUND;
  if (opts.dotfiles !== 'allow' && segments.some((s) => s.startsWith('.'))) {
    return opts.dotfiles === 'deny' ? FORBIDDEN : NOT_FOUND;
  }

  const target = join(slot.root, posix.join('/', ...segments));
  if (!isInside(slot.root, target)) return FORBIDDEN;

  if (decoded.endsWith('/')) {
    for (const name of opts.index) {
      const entry = await fileEntryAt(join(target, name), lookup);
      if (entry) return entry;
    }
    return NOT_FOUND;
  }

  const st = await statOrNull(target);
  if (st?.isDirectory()) {
    if (!opts.redirect) return NOT_FOUND;
    const real = await realpath(target);
    return isInside(slot.realRoot, real) ? REDIRECT : NOT_FOUND;
  }
  if (st?.isFile()) return (await fileEntryAt(target, lookup, st)) ?? NOT_FOUND;
  if (st === null && !extname(target)) {
    for (const ext of opts.extensions) {
      const entry = await fileEntryAt(`${target}.${ext}`, lookup);
      if (entry) return entry;
    }
  }
  return NOT_FOUND;
}

/** What one lookup works with. */
interface Lookup {
  readonly slot: SlotRoots;
  readonly opts: ResolvedStaticOptions;
  readonly arena: BodyArena | null;
  readonly indexes: IndexSource | null;
}

/** A file entry for `path` if it is a regular file really inside the slot; null otherwise. */
async function fileEntryAt(path: string, lookup: Lookup, known?: Stats): Promise<FileEntry | null> {
  const { slot } = lookup;
  const st = known ?? (await statOrNull(path));
  if (!st?.isFile()) return null;
  let real: string;
  try {
    real = await realpath(path);
  } catch (err) {
    if (isNotFound(err)) return null;
    throw err;
  }
  // a symlink that resolves outside the mounted copy (or into the other slot)
  if (!isInside(slot.realRoot, real)) return null;
  // Headers and body come from one descriptor: the stat the headers are built from is the file's
  // whose bytes are kept, even if the path is renamed over meanwhile.
  let handle: FileHandle;
  try {
    handle = await open(real, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    if (isNotFound(err)) return null;
    throw err;
  }
  try {
    return await describeFile(handle, path, real, lookup);
  } finally {
    await handle.close();
  }
}

/** Where the read one byte past a file's end goes: only how many bytes came matters, so one buffer serves all. */
const PAST_THE_END = Buffer.alloc(1);

/**
 * Read the whole file into room reserved in the arena; null when the arena
 * has none now (the body is then streamed from disk). The read must match
 * the stat: a mounted copy never changes, but a hand edit would.
 */
async function readIntoArena(
  handle: FileHandle,
  size: number,
  real: string,
  arena: BodyArena | null,
): Promise<ArenaBody | null> {
  const room = arena?.reserve(size);
  if (!room) return null;
  try {
    const { bytesRead } = await handle.read(room.bytes, 0, size, 0);
    // one byte more would mean it grew: the stat the headers come from is no longer the file's
    const { bytesRead: more } = await handle.read(PAST_THE_END, 0, 1, size);
    if (bytesRead !== size || more !== 0) throw new Error(`file changed while being read: ${real}`);
    return room.body;
  } finally {
    room.done();
  }
}

/** Header strings shared by every entry that has them, rather than one copy per entry. */
const INTERNED = new Map<string, string>();
function interned(s: string): string {
  let shared = INTERNED.get(s);
  if (shared === undefined) {
    shared = s;
    if (INTERNED.size < 1000) INTERNED.set(s, s);
  }
  return shared;
}

function contentTypeOf(path: string): string {
  return interned(contentType(extname(path)) || 'application/octet-stream');
}

/** A path below `root`, with forward slashes ('' for the root itself). */
function relativePosix(root: string, path: string): string {
  const rel = relative(root, path);
  return sep === '/' ? rel : rel.split(sep).join('/');
}

/**
 * What the copy's content index says of the file open as `real` with status
 * `st`: its record when the record's stamp is this file's, else null (the
 * index is absent, unreadable, torn, another directory's, or older than the
 * file: the server then knows nothing of it).
 */
async function recordOf(
  real: string,
  st: Stats,
  lookup: Lookup,
): Promise<{ record: FileRecord; files: DirectoryIndex['files'] } | null> {
  const { opts } = lookup;
  if (opts.etag !== 'content' && !opts.precompressed) return null;
  const files = (await indexOfDirectory(dirname(real), lookup))?.files;
  const record = files?.[basename(real)];
  return files !== undefined && record !== undefined && stampMatches(record, st) ? { record, files } : null;
}

/** The content index of the copy's directory `realDir` (a real path), read once per epoch; null when none. */
async function indexOfDirectory(realDir: string, lookup: Lookup): Promise<DirectoryIndex | null> {
  const { slot, indexes } = lookup;
  if (indexes === null) return null;
  const relDir = relativePosix(slot.realRoot, realDir);
  // never a record for the agent's own files (they are not served anyway)
  if (relDir === META_DIR_NAME || relDir.startsWith(`${META_DIR_NAME}/`)) return null;
  return indexes.directoryIndex(relDir, async () => {
    // an index that cannot be read is one the server knows nothing from; a recent record of the
    // copy's stands in place of its index's, and torn ones void every index (src/store/recent-records.ts).
    // A read failing for a reason that may pass (out of descriptors) fails the lookup instead, as a
    // failed open of the file would: what is read is kept for the epoch, and this must not be
    const recent = await indexes.recentRecords(() => recentForServers(slot.realRoot));
    return throughRecent(await readDirectoryIndex(slot.realRoot, relDir).catch(deniedAsNone), relDir, recent);
  });
}

/**
 * Whether the file open as `real` (status `st`) is a variant the agent made
 * beside its original (`app.js.br`): the index of its directory names it,
 * `made`, by this inode and size. Such a file is in the copy only to be
 * chosen by `Accept-Encoding`; master has no file of that name, so it is no
 * file of the site and is never served under its own name (serve-static
 * over master would answer 404). Master's own sibling (`made: false`) is
 * master's file and served as itself, and so is one the index does not know.
 * Read whatever `etag` and `precompressed` say: a made variant is in the copy
 * either way.
 */
async function isMadeVariant(real: string, st: Stats, lookup: Lookup): Promise<boolean> {
  const named = variantOf(basename(real));
  if (named === null) return false;
  const variant = (await indexOfDirectory(dirname(real), lookup))?.files[named.base]?.variants?.[named.encoding];
  return variant?.made === true && variantMatches(variant, st);
}

/** Headers every representation of a file shares, in serve-static's order. */
function sharedHeaders(path: string, lookup: Lookup, lastModified: string): OutgoingHttpHeaders {
  const { slot, opts } = lookup;
  const headers: OutgoingHttpHeaders = { 'Content-Type': contentTypeOf(path), 'Content-Length': '0' };
  if (opts.acceptRanges) headers['Accept-Ranges'] = 'bytes';
  const ruled =
    opts.cacheRules.length > 0 ? cacheControlFor(opts.cacheRules, `/${relativePosix(slot.root, path)}`) : undefined;
  if (ruled !== undefined) headers['Cache-Control'] = interned(ruled);
  else if (opts.cacheControl) {
    headers['Cache-Control'] = interned(`public, max-age=${opts.maxAgeSeconds}${opts.immutable ? ', immutable' : ''}`);
  }
  if (opts.lastModified) headers['Last-Modified'] = lastModified;
  if (opts.releaseHeader !== false) headers[opts.releaseHeader] = slot.release ?? String(slot.releaseEpoch ?? '');
  return headers;
}

/**
 * A copy of `shared` with its Content-Length set, key by key in the same
 * order. Not a spread (`{ ...shared }`): V8 gives every object a spread
 * makes from a fresh source a hidden class of its own (its map, descriptors
 * and enum cache: about 440 bytes a cached entry, as much as the rest of
 * its headers), where objects built key by key share one.
 */
function withLength(shared: OutgoingHttpHeaders, length: number): OutgoingHttpHeaders {
  const headers: OutgoingHttpHeaders = {};
  for (const key of Object.keys(shared)) headers[key] = key === 'Content-Length' ? String(length) : shared[key];
  return headers;
}

/**
 * The variant of `real` (status `original`, its record standing in `files`)
 * in `encoding` when it is there as `expected` says: a regular file (not a
 * symlink, a FIFO or a directory) with the inode, size and time the index
 * vouches for (`variantCurrent`). Null otherwise: the file is then sent as
 * it is.
 */
async function variantAt(
  real: string,
  original: Stats,
  files: DirectoryIndex['files'],
  encoding: (typeof VARIANT_ENCODINGS)[number],
  expected: NonNullable<FileRecord['variants']>[typeof encoding],
  shared: OutgoingHttpHeaders,
  lookup: Lookup,
): Promise<VariantEntry | null> {
  if (expected === undefined) return null;
  const { opts, arena } = lookup;
  const path = real + VARIANT_SUFFIX[encoding];
  let handle: FileHandle;
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return null;
  }
  try {
    const st = await handle.stat();
    if (!st.isFile() || !variantCurrent(expected, st, basename(path), original, files)) return null;
    const headers = withLength(shared, st.size);
    headers['Content-Encoding'] = encoding;
    if (opts.etag === 'content') headers.ETag = strongEtag(expected.sha256);
    else if (opts.etag === 'weak') headers.ETag = weakVariantTag(st, encoding);
    headers.Vary = VARY;
    const body = st.size <= opts.cacheMaxFileSize ? await readIntoArena(handle, st.size, path, arena) : null;
    return Object.freeze({
      encoding,
      path,
      identity: { dev: st.dev, ino: st.ino, size: st.size, mtimeMs: st.mtimeMs },
      headers: Object.freeze(headers),
      body,
    });
  } catch {
    // a variant that cannot be read as its stat says is one the file does without
    return null;
  } finally {
    await handle.close();
  }
}

const VARY = 'Accept-Encoding';

/**
 * serve-static's weak tag (size and mtime, `W/"…"`) for a variant, with its
 * coding added: a made variant has its original's mtime, and br and gzip can
 * come out the same size, so size and time alone could give two
 * representations of one resource one tag, and a 304 for one would validate
 * a cache's copy of the other (RFC 9110 8.8.3.3).
 */
function weakVariantTag(st: Stats, encoding: (typeof VARIANT_ENCODINGS)[number]): string {
  return `${etag(st).slice(0, -1)}-${encoding}"`;
}

/** The entry for the regular file open as `handle` (found at `path`, really at `real`); null if not one. */
async function describeFile(handle: FileHandle, path: string, real: string, lookup: Lookup): Promise<FileEntry | null> {
  const { opts, arena } = lookup;
  const st = await handle.stat();
  if (!st.isFile() || (await isMadeVariant(real, st, lookup))) return null;
  const indexed = await recordOf(real, st, lookup);
  const record = indexed?.record ?? null;
  const tag = record !== null && opts.etag === 'content' ? strongEtag(record.sha256) : etag(st);
  const lastModified = st.mtime.toUTCString();
  const shared = sharedHeaders(path, lookup, lastModified);
  let variants: (VariantEntry | null)[] | null = null;
  let variantMask = 0;
  if (opts.precompressed && indexed !== null && record?.variants) {
    const found = await Promise.all(
      VARIANT_ENCODINGS.map((encoding) =>
        variantAt(real, st, indexed.files, encoding, record.variants?.[encoding], shared, lookup),
      ),
    );
    found.forEach((variant, i) => {
      if (variant) variantMask |= 1 << i;
    });
    if (variantMask !== 0) variants = found;
  }
  const headers = withLength(shared, st.size);
  if (opts.etag) headers.ETag = tag;
  // every answer for a file that has variants depends on Accept-Encoding, its identity answers too
  if (variantMask !== 0) headers.Vary = VARY;
  const body = st.size <= opts.cacheMaxFileSize ? await readIntoArena(handle, st.size, real, arena) : null;
  return Object.freeze({
    kind: 'file',
    path: real,
    identity: { dev: st.dev, ino: st.ino, size: st.size, mtimeMs: st.mtimeMs },
    stats: opts.setHeaders ? st : null,
    etag: tag,
    lastModified,
    lastModifiedMs: Math.floor(st.mtimeMs / 1000) * 1000,
    headers: Object.freeze(headers),
    body,
    variants: variants && Object.freeze(variants),
    variantMask,
  });
}
