import { indexOfPrint, pathPrint } from '../core/path-print.js';
import {
  type Stats,
  accessSync,
  closeSync,
  constants,
  fchmodSync,
  fstatSync,
  futimesSync,
  linkSync,
  lstatSync,
  openSync,
  readSync,
  readdirSync,
  realpathSync,
  renameSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { createHash } from 'node:crypto';
import { threadId } from 'node:worker_threads';
import { dirname, join } from 'node:path';
import { brotliCompressSync, brotliDecompressSync, gunzipSync, gzipSync } from 'node:zlib';
import { lstatOrNullSync } from '../core/lstat-or-null.js';
import { isDenied, isNotOfThatKind, isNothingThere } from '../core/nothing-there.js';
import {
  type DirectoryIndex,
  type FileRecord,
  type FileStamp,
  VARIANT_ENCODINGS,
  VARIANT_SUFFIX,
  type VariantEncoding,
  type VariantRecord,
  cannotSetAside,
  contentHash,
  hasOriginalTime,
  directoryIndexPath,
  readDirectoryIndexSync,
  stampMatches,
  variantMatches,
  writeDirectoryIndexSync,
} from '../store/content-index.js';
import { type RecentByDirectory, withRecent } from '../store/recent-records.js';
import { isReservedRootName } from '../store/store-layout.js';
import {
  VARIANT_MAX_BYTES,
  type VariantSettings,
  compressionOptions,
  isCompressible,
  variantOf,
} from './compressible.js';
import { msInside } from './copy-times.js';
import { NO_FOLLOW, readOpenedSync } from './open-checked.js';
import { type CacheView, cacheEntryName, cachedVariantSync } from './variant-cache.js';

/**
 * The derive step of a copy: once files have landed in a copy, bring the
 * precompressed variants beside them (`X.br`, `X.gz`) and their directory's
 * content index (content-index.ts) up to date, for the paths the copy
 * changed only. Runs in the walk threads, one unit per directory (or per
 * subtree), so a single thread owns each directory's index.
 *
 * It reads the copy, never master: master is only looked at (lstat) to know
 * which siblings are its own. A variant is written (or linked) beside its
 * original under its own name, as a new file (the one it replaces is
 * removed first: see clearPlace), and given its original's mtime (nginx's
 * `gzip_static` and others compare them); the index is written after its
 * variants are in place, so a record never names a file not yet there, and
 * a variant cut short by a crash matches no record and is made again.
 */

/** No coding: what a derive of a directory listed whole gives `deriveFile` as its changed siblings. */
const NO_ENCODINGS: readonly VariantEncoding[] = Object.freeze([]);

/** What a derive unit needs besides itself (sent to the walk threads). */
export interface DeriveContext {
  /** The copy being written. */
  slot: string;
  /** The other copy, read only (its index and variants are reused by content hash); null when there is none. */
  other: string | null;
  /**
   * Master's root, looked at to tell its own siblings from made ones. Null
   * for a fleet host's copy, pulled from a snapshot of the agent's copy:
   * every entry of it is the snapshot's (variants the agent made included),
   * so a sibling is recorded as a variant when it decodes to its original,
   * and nothing is compressed or removed here.
   */
  source: string | null;
  settings: VariantSettings;
  /**
   * The variant cache (variant-cache.ts), looked at first for a variant
   * made from the same bytes as they landed in master, with what it holds;
   * null when it holds nothing.
   */
  cache?: CacheView | null;
  /**
   * The copy and `other` share files by link (share-files.ts): an index
   * may then be byte for byte the other's, and is linked, not written.
   * Without it their inodes differ, so no index can be (and none is read
   * to find out).
   */
  indexesShared?: boolean;
  /**
   * A name prefix in the copy's temp directory: a made variant the derive
   * replaces or removes that is the last link to its inode, and an index it
   * replaces, is moved to a new name under it rather than removed (removed
   * still on another file system), and the copier frees it after the publish
   * (`TreeCopier.clearTemp`). What the standby holds was written a release or
   * more ago, and freeing such an inode costs 150 to 900 µs on this ext4 disk
   * (its allocation metadata has gone cold); moving it costs about 15.
   * Absent: removed as replaced.
   */
  setAside?: string | undefined;
  /**
   * A fleet host's copy (`source` null): the prints (`pathPrint`, sorted) of
   * the paths its snapshot marks as variants the agent made
   * (`ManifestEntry.made`): all the answer marks, placed by this pull or
   * not (a whole pull after one cut short derives again what that one
   * placed). Such a sibling that decodes to its original is recorded `made`,
   * so the host's servers never serve it under its own name; as is one the
   * host recorded made before, still the same inode and size (a delta names
   * only what changed).
   * Any other sibling is recorded as master's own.
   */
  madePrints?: Float64Array;
  /**
   * The copy's recent records (recent-records.ts) of the directories this
   * derive may look at. Each replaces its index's record: taken as it is
   * when `recentTrusted`, else voided (its file derived as one never
   * recorded: the copy made directories since, or was cut short, and a
   * record of a directory made anew may name an inode number a new file has
   * taken). A directory they name is written back whole with them.
   */
  recent?: RecentByDirectory;
  recentTrusted?: boolean;
  /**
   * The copy was cut short since its indexes were written (a crash, or a
   * failure, between a copy's first change and its derive): a record
   * stands only for a file, and variants, that have not changed since its
   * index was written (a ctime no later than the index's mtime), or that
   * have another link (a file shared with the other copy: its inode was in
   * use all along). The copy cut short may have freed the inode number a
   * record names (a file it removed or replaced, kept aside until the next
   * copy frees it), and a file placed since may have taken it, of the same
   * size and time (a build of fixed times; master's `.gz` of the same
   * length): its stamp is then no proof of the bytes the record names. A
   * copy's own files have a hash from their staging; not a large file, nor
   * master's sibling beside an original the copy did not change.
   */
  cutShort?: boolean;
  /**
   * The copy's variants followed another selection (variant-selection.ts:
   * codings, types, size floor, saving) and it is derived whole to follow
   * this one: a record stands only if the variants it names as made are
   * exactly those the settings want, each saving enough. A coding the
   * settings want and the record lacks is tried (once: compressed when
   * neither the cache nor the other copy has it).
   */
  reselect?: boolean;
  /**
   * A small sync's derive: a unit of named files writes no index, and
   * answers their records instead (`DeriveResult.records`), which the
   * caller keeps in the copy's recent records. A directory's index is then
   * read only for a name whose old record is needed (a file the copy did
   * not just write, or one beside a sibling master holds).
   */
  collect?: boolean;
  /**
   * The other copy's recent records, of the same directories: its indexes
   * are read through them. A derive given `other` must be given these
   * (`throughOtherRecords` in derive-copy.ts, which makes `other` null when
   * they are torn): an index record alone may be one they replaced.
   */
  otherRecent?: RecentByDirectory;
}

/**
 * One directory's part of a derive: the names in it that changed (`names`),
 * or every entry (null); names that are directories are derived whole, with
 * everything below. With `deep`, its subdirectories are derived whole too
 * (a unit of a tree planned by planUnits); `skip` names subdirectories
 * that are units of their own.
 */
export interface DeriveUnit {
  dir: string;
  names: string[] | null;
  /** What the copy learnt of named files as it staged them: their hash, for the file it wrote. */
  hashes?: Record<string, StagedHash>;
  deep?: boolean;
  skip?: string[];
}

/** A file's stamp as the copy wrote it, with the SHA-256 (base64url) of the bytes it wrote. */
export interface StagedHash extends FileStamp {
  sha256: string;
}

/** What a derive did, summed over its units. */
export interface DeriveStats {
  /** Files hashed (their record was not current): as the copy staged them, or read here. */
  hashed: number;
  /** Of those, the files read here to hash them (the others' hashes came from the copy, as it wrote them). */
  read: number;
  /** Variants made by compressing. */
  compressed: number;
  /** Variants taken from the other copy (a link, or a copy when the times differ). */
  reused: number;
  /** Variants taken from the variant cache, compressed as their original landed in master. */
  cached: number;
  /** Variants (and records) that stood as they were. */
  kept: number;
  /** Made variants removed (their original gone, changed, too small, or not saving enough). */
  removed: number;
  /** Indexes written or removed. */
  indexes: number;
  /** Variants not made because their directory may not be written (a mode denying it). */
  denied: number;
}

export function emptyDeriveStats(): DeriveStats {
  return { hashed: 0, read: 0, compressed: 0, reused: 0, cached: 0, kept: 0, removed: 0, indexes: 0, denied: 0 };
}

export function addDeriveStats(into: DeriveStats, part: DeriveStats): void {
  for (const key of Object.keys(into) as (keyof DeriveStats)[]) into[key] += part[key];
}

/** A unit's answer: its counts, and the files and directories it wrote, for the copy's durability round. */
export interface DeriveResult {
  stats: DeriveStats;
  written: string[];
  dirs: string[];
  /** Names of the variant cache's entries the copy took (linked or copied): the cache lets them go once every copy has. */
  taken?: string[];
  /** With `DeriveContext.collect`: the record of each path derived (null: none), for the copy's recent records. */
  records?: Record<string, FileRecord | null>;
}

/**
 * The file at `path`, through a descriptor opened without following a link:
 * its status, its SHA-256, and its bytes when `whole(st)` says they are
 * needed (to compress it, or to check a sibling decodes to it); otherwise it
 * is hashed as a stream, so a file of any size costs a fixed buffer. Null if
 * no regular file is there.
 */
function readRegular(
  path: string,
  whole: (st: Stats) => boolean,
): { bytes: Buffer | null; st: Stats; sha256: string } | null {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    if (isNotOfThatKind(err)) return null;
    throw err;
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return null;
    if (whole(st)) {
      const bytes = readOpenedSync(fd, st.size);
      return { bytes, st, sha256: contentHash(bytes) };
    }
    const hash = createHash('sha256');
    const buf = Buffer.allocUnsafe(Math.min(st.size, STREAM_CHUNK) || 1);
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      hash.update(buf.subarray(0, n));
    }
    return { bytes: null, st, sha256: hash.digest('base64url') };
  } finally {
    closeSync(fd);
  }
}

/** The read size of a file hashed as a stream. */
const STREAM_CHUNK = 1024 * 1024;

function compress(encoding: VariantEncoding, bytes: Buffer, settings: VariantSettings): Buffer {
  const options = compressionOptions(encoding, bytes.length, settings);
  return encoding === 'br' ? brotliCompressSync(bytes, options) : gzipSync(bytes, options);
}

/** True when `variant` decodes to exactly `original` (a bound on the output: a hostile file cannot blow up memory). */
function decodesTo(encoding: VariantEncoding, variant: Buffer, original: Buffer): boolean {
  try {
    const opts = { maxOutputLength: Math.max(1, original.length + 1) };
    const out = encoding === 'br' ? brotliDecompressSync(variant, opts) : gunzipSync(variant, opts);
    return out.equals(original);
  } catch {
    return false; // not of that coding, truncated, or larger than the original: not its variant
  }
}

/** Remove the file at `path`; false when it was not there, or its directory may not be written (a mode denying it). */
function unlinkIfThere(path: string): boolean {
  try {
    unlinkSync(path);
    return true;
  } catch (err) {
    if (isNothingThere(err) || isDenied(err)) return false;
    throw err;
  }
}

/**
 * Remove a made variant of the copy (status `st`), or set it aside when it
 * is its inode's last link and the copy sets aside (`DeriveContext.setAside`);
 * false as `unlinkIfThere`.
 */
function removeVariant(c: DeriveContext, path: string, st: Stats | null): boolean {
  if (c.setAside === undefined || st?.nlink !== 1) return unlinkIfThere(path);
  try {
    setAsideSync(path, c.setAside);
    return true;
  } catch (err) {
    if (isNothingThere(err) || isDenied(err)) return false;
    throw err;
  }
}

/** The derive of one unit, with blocking calls (a walk thread). */
export function deriveUnitSync(c: DeriveContext, unit: DeriveUnit): DeriveResult {
  const result: DeriveResult = { stats: emptyDeriveStats(), written: [], dirs: [] };
  const skip = new Set(unit.skip ?? []);
  const walk = (dir: string, names: string[] | null, deep: boolean) => {
    const subdirs = deriveDirectory(c, dir, names, result, dir === unit.dir ? unit.hashes : undefined);
    for (const name of subdirs) {
      if (dir === unit.dir && skip.has(name)) continue;
      // a directory named as changed is derived whole; below a deep unit, every directory is
      if (deep || names !== null) walk(dir === '' ? name : `${dir}/${name}`, null, true);
    }
  };
  walk(unit.dir, unit.names, unit.deep === true);
  return result;
}

/**
 * The derive of a directory a clone has just copied whole (clone-trees.ts),
 * in the thread that copied it and before it is renamed into the copy:
 * every entry of it, at `abs` (where the clone put it) for the copy's
 * directory `dir`, with the hashes of the files the clone read as it copied
 * them (`hints`), so no file is read again. Its subdirectories are derived
 * as they are copied.
 */
export function deriveCopiedDirectorySync(
  c: DeriveContext,
  dir: string,
  abs: string,
  copied: CopiedListing,
  result: DeriveResult,
): void {
  deriveDirectory(c, dir, null, result, copied.hints, abs, copied);
}

/**
 * What the clone knows of a directory it has just made and filled: the
 * hash of each file it wrote from bytes it read (with the stamp it was
 * written with), the status of those files, and the names of master's
 * directory it copied. The derive then looks up nothing the clone already
 * saw: a name not listed in the new directory is not there (it has nothing
 * else in it), and master's sibling of a file is its own exactly when master
 * listed it.
 */
export interface CopiedListing {
  /** By name (a name may be `__proto__`: made without a prototype). */
  hints: Record<string, StagedHash>;
  files: Map<string, Stats>;
  source: ReadonlySet<string>;
}

/** The listing of a directory a clone is about to fill from master's `names`. */
export function copiedListing(names: Iterable<string>): CopiedListing {
  return { hints: Object.create(null), files: new Map(), source: new Set(names) };
}

/**
 * Derive the directory `dir` of the copy for `names` (null: all its
 * entries); returns the subdirectories among them (all of them when
 * `names` is null), for the caller to go into. `abs` is where the
 * directory is (the copy's `dir`, unless a clone has it elsewhere yet).
 */
function deriveDirectory(
  c: DeriveContext,
  dir: string,
  names: string[] | null,
  result: DeriveResult,
  hints: Record<string, StagedHash> | undefined,
  abs = dir === '' ? c.slot : join(c.slot, dir),
  copied?: CopiedListing,
): string[] {
  // own keys only: the context reaches the threads as a structured clone, with Object's prototype
  const recent = c.recent && Object.hasOwn(c.recent, dir) ? c.recent[dir] : undefined;
  // a small sync's unit of named files answers their records; a directory listed whole writes its index
  const collect = c.collect === true && names !== null;
  let index: DirectoryIndex | null | undefined;
  const readIndex = () => {
    if (index === undefined) index = readDirectoryIndexSync(c.slot, dir);
    return index;
  };
  const files: Record<string, FileRecord> = Object.create(null);
  let changed = false;
  // after a copy cut short, when the index was written: no record stands for a file changed since
  const recordedAt =
    c.cutShort === true ? (lstatOrNullSync(directoryIndexPath(c.slot, dir))?.mtimeMs ?? -1) : undefined;
  if (!collect) {
    Object.assign(files, readIndex()?.files ?? {});
    if (recent !== undefined) {
      // the recent records are folded in (or voided): the index is written whole with them
      for (const [name, record] of Object.entries(recent)) {
        if (record !== null && c.recentTrusted === true) files[name] = record;
        else delete files[name];
      }
      changed = true;
    }
  }
  /** What a collecting unit found of each name it derived. */
  const outcome: Record<string, FileRecord | null> = Object.create(null);
  /** The record `name` had: a recent one, else its index's (read on first need). */
  const prior = (name: string): FileRecord | undefined => {
    if (!collect) return files[name];
    if (recent !== undefined && Object.hasOwn(recent, name)) return recent[name] ?? undefined;
    const kept = readIndex()?.files;
    return kept && Object.hasOwn(kept, name) ? kept[name] : undefined;
  };
  const settle = (name: string, record: FileRecord | null) => {
    if (collect) outcome[name] = record;
    else if (record === null) {
      if (files[name]) {
        delete files[name];
        changed = true;
      }
    } else if (record !== files[name]) {
      files[name] = record;
      changed = true;
    }
  };
  const subdirs: string[] = [];
  /** The directory's names, when it was listed whole. */
  let here: ReadonlySet<string> | null = null;
  // the entries to look at: each name given, with the original of a variant name (its variant changed)
  let entries: string[];
  /** The names given (the entries but the originals of variant names among them), when the directory is not listed whole. */
  const named = names === null ? null : new Set(names);
  if (names === null) {
    let listed: string[];
    try {
      listed = readdirSync(abs);
    } catch (err) {
      if (!isNothingThere(err)) throw err;
      listed = [];
    }
    if (dir === '') listed = listed.filter((n) => !isReservedRootName(n));
    // records of names gone are pruned
    const present = new Set(listed);
    here = present;
    for (const name of Object.keys(files)) {
      if (!present.has(name)) {
        delete files[name];
        changed = true;
      }
    }
    entries = listed;
  } else {
    const set = new Set<string>();
    for (const name of names) {
      if (dir === '' && isReservedRootName(name)) continue;
      set.add(name);
      const v = variantOf(name);
      // master's `.mirrorswap-tmp.br` names no variant of the temp directory: never gone into
      if (v && !(dir === '' && isReservedRootName(v.base))) set.add(v.base);
    }
    entries = [...set];
  }
  const otherDir = lazyOther(
    c.other,
    dir,
    c.otherRecent && Object.hasOwn(c.otherRecent, dir) ? c.otherRecent[dir] : undefined,
  );
  const held = new Map<string, boolean>();
  const masterHolds = (name: string): boolean => {
    if (c.source === null) return true; // a host's copy: all of it is the snapshot's
    if (copied) return copied.source.has(name);
    let holds = held.get(name);
    if (holds === undefined) {
      holds = lstatOrNullSync(join(c.source, dir, name)) !== null; // anything master holds there is its own
      held.set(name, holds);
    }
    return holds;
  };
  const statOf = new Map<string, Stats | null>(copied?.files);
  const stat = (name: string) => {
    if (!statOf.has(name))
      statOf.set(name, copied && here && !here.has(name) ? null : lstatOrNullSync(join(abs, name)));
    return statOf.get(name) ?? null;
  };
  /** A name that is a made variant of a regular file beside it: derived with that file, no record of its own. */
  const isMadeVariant = (name: string) => {
    const v = variantOf(name);
    return v !== null && stat(v.base)?.isFile() === true && !masterHolds(name);
  };
  /** Remove the variants the agent made of `name`, no regular file now (a variant master holds is master's, and stays). */
  const dropMadeVariants = (name: string) => {
    for (const encoding of VARIANT_ENCODINGS) {
      const vname = name + VARIANT_SUFFIX[encoding];
      if (here !== null && !here.has(vname)) continue; // listed whole, without it: no call
      const vst = stat(vname);
      if (vst?.isFile() && !masterHolds(vname) && removeVariant(c, join(abs, vname), vst)) {
        result.stats.removed++;
        noteDir(result, abs);
      }
    }
  };
  for (const name of entries) {
    const st = stat(name);
    if (st?.isDirectory()) {
      // gone into only when named (or listed): the original of a variant name named is no path the
      // copy changed, and a unit of its own may be deriving names in it at the same time
      if (named === null || named.has(name)) subdirs.push(name);
      settle(name, null);
      // a file that became a directory leaves no variant of its own behind
      dropMadeVariants(name);
      continue;
    }
    if (isMadeVariant(name)) {
      settle(name, null);
      continue; // its original is among the entries too, and says what becomes of it
    }
    const v = variantOf(name);
    if (v && !st && !masterHolds(name)) continue; // a made variant already gone
    if (!st?.isFile()) {
      settle(name, null);
      dropMadeVariants(name); // its made variants go with it
      continue;
    }
    const hint = hints && Object.hasOwn(hints, name) ? hints[name] : undefined;
    // a file the copy has just written, with no sibling of master's, needs no old record: nothing
    // of it stands (its variants are placed anew), so a collecting unit reads no index for it
    const fresh =
      collect &&
      hint !== undefined &&
      stampMatches(hint, st) &&
      !(recent !== undefined && Object.hasOwn(recent, name)) &&
      !VARIANT_ENCODINGS.some((e) => masterHolds(name + VARIANT_SUFFIX[e]));
    const old = fresh ? undefined : prior(name);
    // the codings whose sibling of this file is named too (it changed in the copy: master's own, come or gone)
    const siblings =
      named === null ? NO_ENCODINGS : VARIANT_ENCODINGS.filter((e) => named.has(name + VARIANT_SUFFIX[e]));
    const record = deriveFile(
      c,
      dir,
      abs,
      name,
      st,
      old,
      otherDir,
      masterHolds,
      stat,
      result,
      hint,
      recordedAt,
      siblings,
    );
    settle(name, record);
  }
  if (collect) {
    result.records ??= Object.create(null);
    for (const [name, record] of Object.entries(outcome)) {
      (result.records as Record<string, FileRecord | null>)[dir === '' ? name : `${dir}/${name}`] = record;
    }
  } else if (changed) {
    // not made durable: a stale, torn or lost index costs an ETag or a variant, never a wrong
    // answer, and the copy is derived again after a crash (it is marked unfinished until synced)
    // the index replaced is set aside like a variant (a new directory's has none to replace)
    const aside = index && c.setAside;
    writeDirectoryIndexSync(
      c.slot,
      dir,
      files,
      c.indexesShared ? c.other : null,
      aside ? () => setAsideName(aside) : undefined,
    );
    result.stats.indexes++;
  }
  return subdirs;
}

function noteDir(result: DeriveResult, dir: string): void {
  if (!result.dirs.includes(dir)) result.dirs.push(dir);
}

/** The other copy's directory `dir`, as the derive looks at it: its index and its entries, each read once, on first use. */
interface OtherDir {
  index(): DirectoryIndex | null;
  stat(name: string): Stats | null;
}

function lazyOther(
  other: string | null,
  dir: string,
  recent: Readonly<Record<string, FileRecord | null>> | undefined,
): OtherDir {
  let read = false;
  let index: DirectoryIndex | null = null;
  const stats = new Map<string, Stats | null>();
  return {
    index: () => {
      if (other !== null && !read) {
        read = true;
        try {
          // only a directory of the other copy reached without a link: its index may be one a
          // directory that stood there left (master made it a link since), naming files that the
          // link's target holds now under the same inode numbers
          index = realDirectoryOf(other, dir) ? withRecent(readDirectoryIndexSync(other, dir), dir, recent) : null;
        } catch {
          index = null; // the other copy is only a source of reuse: anything amiss there costs a compression
        }
      }
      return index;
    },
    // an original's two variants look at it once (once its index said there is something to take)
    stat: (name) => {
      if (other === null || index === null) return null;
      if (!stats.has(name)) stats.set(name, lstatOrNullSync(join(other, dir, name)));
      return stats.get(name) ?? null;
    },
  };
}

const realRoots = new Map<string, string>();

/**
 * Whether the directory `dir` of the copy at `root` is a directory reached
 * without a link (none of its parents one). The other copy is not written
 * while a copy is derived: what this finds holds while it is read.
 */
function realDirectoryOf(root: string, dir: string): boolean {
  if (dir === '') return true;
  let real = realRoots.get(root);
  if (real === undefined) {
    real = realpathSync.native(root);
    realRoots.set(root, real);
  }
  try {
    return realpathSync.native(join(root, dir)) === join(real, dir) && lstatSync(join(root, dir)).isDirectory();
  } catch {
    return false;
  }
}

/** The record of the regular file `name` (status `st`) after bringing its variants up to date. */
function deriveFile(
  c: DeriveContext,
  dir: string,
  abs: string,
  name: string,
  st: Stats,
  old: FileRecord | undefined,
  otherDir: OtherDir,
  masterHolds: (name: string) => boolean,
  stat: (name: string) => Stats | null,
  result: DeriveResult,
  hint: StagedHash | undefined,
  /** With `DeriveContext.cutShort`: when the index `old` comes from was written (`-1`: none there). */
  recordedAt?: number,
  /** The codings whose sibling the derive was named too: it changed in the copy. */
  siblings: readonly VariantEncoding[] = NO_ENCODINGS,
): FileRecord | null {
  const known = hint && stampMatches(hint, st) ? hint : null;
  /** Whether the file of status `s` may be the one a record of the index names (`DeriveContext.cutShort`). */
  const recordable = (s: Stats) => recordedAt === undefined || s.ctimeMs <= recordedAt || s.nlink > 1;
  /**
   * Whether the sibling `vname` (status `vst`, recorded as `was` until now) is
   * a variant the agent made: master does not hold it; on a fleet host, where
   * every entry is the snapshot's, the snapshot marks it so, or it is the
   * inode the host recorded made before.
   */
  const madeHere = (vname: string, vst: Stats | null, was: VariantRecord | undefined): boolean => {
    if (c.source !== null) return !masterHolds(vname);
    if (vst === null) return false;
    if (c.madePrints && indexOfPrint(c.madePrints, pathPrint(dir === '' ? vname : `${dir}/${vname}`)) >= 0) return true;
    return was?.made === true && variantMatches(was, vst);
  };
  // the record stands if the file and every variant it names are as it says, and it has the bytes
  // the copy just wrote there, when it wrote them (an inode number taken again by a file of the same
  // size and time is no proof of the same bytes)
  if (
    old &&
    stampMatches(old, st) &&
    recordable(st) &&
    (known === null || known.sha256 === old.sha256) &&
    (c.reselect !== true || followsSelection(c.settings, name, st.size, old, masterHolds, stat))
  ) {
    let current = true;
    for (const [encoding, variant] of Object.entries(old.variants ?? {}) as [VariantEncoding, VariantRecord][]) {
      const vst = stat(name + VARIANT_SUFFIX[encoding]);
      if (
        !vst?.isFile() ||
        !variantMatches(variant, vst) ||
        // a made variant has its original's time: one rewritten in place (inode and size kept) has
        // another, and is made again rather than kept under the record of the bytes it had
        (variant.made && !hasOriginalTime(vst, st)) ||
        !recordable(vst) ||
        variant.made !== madeHere(name + VARIANT_SUFFIX[encoding], vst, variant)
      )
        current = false;
    }
    // On a fleet host, a variant the snapshot marks made that the record does not name came with
    // it beside an unchanged file (the coordinator's settings turned a coding or a type on, and it
    // derived its copy whole): the record no longer says what is there, and the variant would be
    // neither listed nor served. Only the snapshot's marks count: a sibling of master's that the
    // record leaves out (it does not decode to the file) keeps it standing.
    if (c.source === null && current)
      for (const encoding of VARIANT_ENCODINGS) {
        const vname = name + VARIANT_SUFFIX[encoding];
        if (old.variants?.[encoding] === undefined && madeHere(vname, stat(vname), undefined)) current = false;
      }
    // A sibling that changed and the record does not name is looked at, come or gone: master's own
    // `X.gz` come beside an unchanged `X` is named as its variant if it decodes to `X`; one gone
    // (that did not) leaves the name free for the variant the agent makes
    for (const encoding of siblings) if (old.variants?.[encoding] === undefined) current = false;
    if (current) {
      result.stats.kept++;
      return old;
    }
  }
  const path = join(abs, name);
  let sha256: string;
  let fst: Stats;
  // its bytes, read when needed: to compress it, or to check a sibling of master's decodes to it
  let bytes: Buffer | null | undefined;
  if (known) {
    // hashed as the copy staged it (this very file: same inode, size and time): not read again
    sha256 = known.sha256;
    fst = st;
    result.stats.hashed++;
  } else {
    const masterSibling = (st: Stats) =>
      st.size <= VARIANT_MAX_BYTES &&
      VARIANT_ENCODINGS.some((e) => stat(name + VARIANT_SUFFIX[e])?.isFile() && masterHolds(name + VARIANT_SUFFIX[e]));
    const read = readRegular(path, (st) => isCompressible(name, st.size, c.settings) || masterSibling(st));
    if (!read) return null; // swapped meanwhile (the copier is the slot's only writer: not expected); no record
    sha256 = read.sha256;
    fst = read.st;
    bytes = read.bytes;
    result.stats.hashed++;
    result.stats.read++;
  }
  const bytesOf = (): Buffer | null => {
    if (bytes === undefined) {
      const read = readRegular(path, (st) => st.size <= VARIANT_MAX_BYTES);
      // the same file as hashed, or nothing is made from it
      bytes = read?.bytes && read.st.ino === fst.ino && read.sha256 === sha256 ? read.bytes : null;
    }
    return bytes;
  };
  const variants: Partial<Record<VariantEncoding, VariantRecord>> = {};
  for (const encoding of VARIANT_ENCODINGS) {
    const vname = name + VARIANT_SUFFIX[encoding];
    const vpath = join(abs, vname);
    const vst = stat(vname);
    if (masterHolds(vname)) {
      const was = old?.variants?.[encoding];
      // (on a fleet host nothing is removed: every entry is the snapshot's)
      if (c.source !== null && vst?.isFile() && was?.made === true && variantMatches(was, vst) && recordable(vst)) {
        // still the variant this agent made (its inode and size): master's sibling was not copied over
        // it (unreadable to the agent, or it came after the copy looked). It is not master's, and
        // stands only while made from these very bytes: a variant of an older release is never left
        if (old?.sha256 === sha256) {
          variants[encoding] = was;
          result.stats.kept++;
        } else if (removeVariant(c, vpath, vst)) {
          result.stats.removed++;
          noteDir(result, abs);
        }
        continue;
      }
      // master's own sibling: never replaced; named as a variant only if it decodes to this file
      const original =
        vst?.isFile() && fst.size <= VARIANT_MAX_BYTES && vst.size <= VARIANT_MAX_BYTES ? bytesOf() : null;
      if (vst && original) {
        const vread = readRegular(vpath, () => true);
        if (vread?.bytes && decodesTo(encoding, vread.bytes, original)) {
          const made = c.source === null && madeHere(vname, vread.st, was);
          variants[encoding] = { ino: vread.st.ino, size: vread.st.size, sha256: vread.sha256, made };
        }
      }
      continue;
    }
    if (vst && !vst.isFile()) continue; // a directory or link named so (not master's: drift); left to the copy's compare
    const wanted = c.settings.encodings.includes(encoding) && isCompressible(name, fst.size, c.settings);
    if (!wanted) {
      if (vst && removeVariant(c, vpath, vst)) {
        result.stats.removed++;
        noteDir(result, abs);
      }
      continue;
    }
    // the variant there stands if it was made from these same bytes, and has this file's time
    const was = old?.variants?.[encoding];
    if (
      vst &&
      was?.made &&
      old?.sha256 === sha256 &&
      savesEnough(vst.size, fst.size, c.settings) &&
      variantMatches(was, vst) &&
      recordable(vst) &&
      hasOriginalTime(vst, fst) &&
      // and is no more readable than its original (a file made private since keeps no open variant)
      (vst.mode & 0o777 & ~fst.mode) === 0
    ) {
      variants[encoding] = was;
      result.stats.kept++;
      continue;
    }
    const spot: Spot = { occupied: vst !== null, aside: vst?.nlink === 1 ? c.setAside : undefined };
    const made =
      fromCache(c, abs, vname, encoding, sha256, fst, result, spot) ??
      reuse(c, dir, abs, vname, encoding, sha256, fst, otherDir, result, spot) ??
      makeVariant(c, abs, vname, encoding, bytesOf(), fst, result, spot);
    if (made === 'denied') {
      result.stats.denied++;
      continue;
    }
    if (made) {
      variants[encoding] = made;
      noteDir(result, abs);
    } else if (vst && removeVariant(c, vpath, vst)) {
      result.stats.removed++; // it no longer saves enough
      noteDir(result, abs);
    }
  }
  const record: FileRecord = {
    ino: fst.ino,
    size: fst.size,
    mtimeMs: fst.mtimeMs,
    sha256,
    ...(Object.keys(variants).length > 0 ? { variants } : {}),
  };
  return record;
}

/** Whether a variant of `size` bytes of an original of `originalSize` saves what the settings ask. */
function savesEnough(size: number, originalSize: number, settings: VariantSettings): boolean {
  return size <= originalSize * (1 - settings.minSavingPercent / 100);
}

/**
 * Whether the record `old` of the file `name` (of `size` bytes) names as
 * made exactly the variants `settings` select, each saving enough
 * (`DeriveContext.reselect`), and no file stands at the name of a coding it
 * does not name: one a derive for other settings made and never recorded
 * (it failed, or was killed, before the directory's index), which nginx's
 * `gzip_static` would serve. A coding whose name master holds is master's
 * to say, and left out.
 */
function followsSelection(
  settings: VariantSettings,
  name: string,
  size: number,
  old: FileRecord,
  masterHolds: (name: string) => boolean,
  stat: (name: string) => Stats | null,
): boolean {
  const compressible = isCompressible(name, size, settings);
  for (const encoding of VARIANT_ENCODINGS) {
    if (masterHolds(name + VARIANT_SUFFIX[encoding])) continue;
    const variant = old.variants?.[encoding];
    const wanted = compressible && settings.encodings.includes(encoding);
    if (variant === undefined) {
      if (wanted || stat(name + VARIANT_SUFFIX[encoding])?.isFile()) return false;
    } else if (!wanted || !savesEnough(variant.size, size, settings)) return false;
  }
  return true;
}

/**
 * Make room for a variant at `path`: the made variant there (or a stray
 * file) is removed, or set aside when it is its inode's last link
 * (`DeriveContext.setAside`), never written over, as its inode may be the
 * other copy's too (a reused variant is a link). A variant is then written
 * or linked under its own name, not in the temp directory and renamed in:
 * the copy being derived is not mounted (it is marked mid-copy until its
 * final sync, and a copy cut short is derived again). 'denied' when the
 * directory may not be written (a mode denying it).
 */
function clearPlace(path: string, spot: Spot): true | 'denied' {
  if (!spot.occupied) return true; // nothing there (a failed unlink costs an exception: 0.3 ms)
  try {
    if (spot.aside !== undefined) setAsideSync(path, spot.aside);
    else unlinkSync(path);
  } catch (err) {
    if (isDenied(err)) return 'denied';
    if (!isNothingThere(err)) throw err;
  }
  spot.occupied = false;
  return true;
}

/** Names set aside by this thread so far. */
let asideCount = 0;

/**
 * A new name under the prefix `aside`, unique among the threads that set
 * aside side by side: the thread's number and its count (a random name cost
 * a call into the random generator, and a getpid, for each).
 */
export function setAsideName(aside: string): string {
  return `${aside}.${threadId}-${asideCount++}`;
}

/**
 * Move the file at `path` to a new name under the prefix `aside`; removed
 * instead when it cannot be moved there but can be removed: on another
 * file system than the temp directory (a directory of the copy that is a
 * mount point of its own), or the temp directory out of room for one more
 * name (a full disk, or quota: a removal needs none).
 */
function setAsideSync(path: string, aside: string): void {
  try {
    renameSync(path, setAsideName(aside));
  } catch (err) {
    if (!cannotSetAside(err)) throw err;
    unlinkSync(path);
  }
}

/** Whether this process may create entries in `dir`. */
function writable(dir: string): boolean {
  try {
    accessSync(dir, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** Whether a variant's name is taken in the copy (by the variant it replaces), as last seen. */
interface Spot {
  occupied: boolean;
  /** Where the occupant goes when it is its inode's last link (`DeriveContext.setAside`); absent: removed. */
  aside?: string | undefined;
}

/**
 * The variant of `name` taken from the other copy: one it made from the
 * same bytes (same hash), still as its index says. A link when it already
 * has this file's time (the other copy's inode is never changed, as it may
 * be mounted), else a copy given this file's time. Null when there is none.
 */
function reuse(
  c: DeriveContext,
  dir: string,
  abs: string,
  vname: string,
  encoding: VariantEncoding,
  sha256: string,
  fst: Stats,
  other: OtherDir,
  result: DeriveResult,
  spot: Spot,
): VariantRecord | 'denied' | null {
  if (!c.other) return null;
  const index = other.index();
  if (!index) return null;
  // the file of the same name in the same directory: what a copy of the same release holds
  const base = vname.slice(0, -VARIANT_SUFFIX[encoding].length);
  const rec = index.files[base];
  const variant = rec?.sha256 === sha256 ? rec.variants?.[encoding] : undefined;
  // (made under another copy's settings, perhaps: one that saves too little here is not taken)
  if (!variant || !savesEnough(variant.size, fst.size, c.settings)) return null;
  // and only from a record still current for the other copy's original: an index left stale there
  // (a crash between its variants and its index) could name an inode number a new file took since
  const original = other.stat(base);
  if (!original || !stampMatches(rec as FileRecord, original)) return null;
  const ost = other.stat(vname);
  // one the agent made, still with its original's time: a made variant rewritten in place (drift:
  // inode and size kept) has a time of its own, and its bytes would be copied under the record's
  // hash. Master's own sibling vouches for no original's time: compressed instead (a rare path)
  if (!ost?.isFile() || !variant.made || !variantMatches(variant, ost) || !hasOriginalTime(ost, original)) return null;
  const placed = placeVariant(join(c.other, dir, vname), ost, join(abs, vname), fst, spot, result);
  if (placed === 'denied' || placed === null) return placed;
  result.stats.reused++;
  return { ino: placed.ino, size: placed.size, sha256: variant.sha256, made: true };
}

/**
 * The variant of `vname` from the variant cache: made from the same bytes
 * (its name says so) as they landed in master. Null when there is none.
 */
function fromCache(
  c: DeriveContext,
  abs: string,
  vname: string,
  encoding: VariantEncoding,
  sha256: string,
  fst: Stats,
  result: DeriveResult,
  spot: Spot,
): VariantRecord | 'denied' | null {
  if (!c.cache) return null;
  const entry = cachedVariantSync(c.cache, sha256, encoding, c.settings);
  // one that would not save enough is not taken (the compression below says the same)
  if (!entry || !savesEnough(entry.size, fst.size, c.settings)) return null;
  const placed = placeVariant(entry.path, entry.st, join(abs, vname), fst, spot, result);
  if (placed === 'denied' || placed === null) return placed;
  result.stats.cached++;
  result.taken ??= [];
  result.taken.push(cacheEntryName(sha256, encoding, c.settings));
  return { ino: placed.ino, size: placed.size, sha256: entry.sha256, made: true };
}

/**
 * Put the file `from` (status `ost`: another copy's variant, or a cache
 * entry) at `to` as the variant of the file whose status is `fst`: a link
 * when it already has that file's time (its inode is never changed:
 * another copy, perhaps mounted, may hold it), else a copy given it. The status of what was placed; null when nothing could be (the
 * caller compresses instead), 'denied' when the directory may not be
 * written.
 */
function placeVariant(
  from: string,
  ost: Stats,
  to: string,
  fst: Stats,
  spot: Spot,
  result: DeriveResult,
): Stats | 'denied' | null {
  if (clearPlace(to, spot) === 'denied') return 'denied';
  let linked = false;
  // a variant has its original's mode (as makeVariant gives it): the source's may be another's
  // (a cache entry made before its original's chmod, another copy's made before one)
  const mode = fst.mode & 0o666;
  if (Math.floor(ost.mtimeMs) === Math.floor(fst.mtimeMs) && (ost.mode & 0o777) === mode) {
    try {
      linkSync(from, to);
      linked = true;
    } catch {
      // another file system (EXDEV), links not allowed (EPERM), or the directory denied: the copy
      // below is tried, and its failure says which
    }
  }
  if (!linked) {
    // created with its own mode, never the source's: copyfile gives a new file the source's mode until
    // it is done, and a variant of a file made private since (a cache entry, another copy's) would be
    // open to anyone who opened its name meanwhile (a descriptor keeps what its open was allowed)
    let out: number;
    try {
      out = openSync(to, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, mode);
    } catch (err) {
      // a name taken meanwhile is cleared for the compression that follows, as a copy cut short is
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') unlinkIfThere(to);
      // nothing can be placed in a directory that may not be written; any other failure costs a
      // compression instead
      return isDenied(err) && !writable(dirname(to)) ? 'denied' : null;
    }
    let st: Stats;
    try {
      copyInto(from, ost, out);
      fchmodSync(out, mode); // its original's, not cut by the umask: what makeVariant gives too
      futimesSync(out, msInside(fst.atimeMs), msInside(fst.mtimeMs));
      st = fstatSync(out);
    } catch {
      closeSync(out);
      unlinkIfThere(to);
      return null; // the source gone, changed or unreadable meanwhile, a full disk: compressed instead
    }
    closeSync(out);
    result.written.push(to);
    return st;
  }
  // a link is the source's inode, as looked at (had it been swapped meanwhile, the record's
  // inode would name no file there: a variant lost, never a wrong one)
  return ost;
}

/** Largest read of a variant being copied (most are a few KB, read at once). */
const COPY_CHUNK = 1024 * 1024;

/**
 * Write the bytes of the regular file `from`, the very one whose status is
 * `ost` (not a link, not another file swapped in since), to the descriptor
 * `out`. Throws when it is not, or its bytes are not all there.
 */
function copyInto(from: string, ost: Stats, out: number): void {
  const src = openSync(from, constants.O_RDONLY | NO_FOLLOW);
  try {
    const sst = fstatSync(src);
    // and not rewritten in place since it was looked at (its time is what made it worth taking)
    if (!sst.isFile() || sst.ino !== ost.ino || sst.dev !== ost.dev || sst.mtimeMs !== ost.mtimeMs)
      throw new Error(`${from} changed`);
    const buffer = Buffer.allocUnsafe(Math.max(1, Math.min(sst.size, COPY_CHUNK)));
    let total = 0;
    for (;;) {
      const n = readSync(src, buffer, 0, buffer.length, total);
      if (n === 0) break;
      for (let written = 0; written < n; ) written += writeSync(out, buffer, written, n - written);
      total += n;
    }
    if (total !== ost.size) throw new Error(`${from} is not the size it was`);
  } finally {
    closeSync(src);
  }
}

/** Compress `bytes` into a variant beside its original; null when it would not save enough. */
function makeVariant(
  c: DeriveContext,
  abs: string,
  vname: string,
  encoding: VariantEncoding,
  bytes: Buffer | null,
  fst: Stats,
  result: DeriveResult,
  spot: Spot,
): VariantRecord | 'denied' | null {
  if (bytes === null) return null; // the file is no longer the one hashed: no variant of it is made
  const out = compress(encoding, bytes, c.settings);
  result.stats.compressed++;
  if (!savesEnough(out.length, bytes.length, c.settings)) return null;
  const to = join(abs, vname);
  if (clearPlace(to, spot) === 'denied') return 'denied';
  let fd: number;
  try {
    fd = openSync(to, 'wx', fst.mode & 0o666);
  } catch (err) {
    if (isDenied(err)) return 'denied';
    throw err;
  }
  let vst: Stats;
  try {
    for (let written = 0; written < out.length; ) written += writeSync(fd, out, written, out.length - written);
    fchmodSync(fd, fst.mode & 0o666); // its original's, not cut by the umask: what placeVariant gives too
    futimesSync(fd, msInside(fst.atimeMs), msInside(fst.mtimeMs));
    vst = fstatSync(fd);
  } catch (err) {
    try {
      closeSync(fd);
    } finally {
      unlinkIfThere(to); // a variant cut short (a full disk) is never left under its name
    }
    throw err;
  }
  closeSync(fd);
  result.written.push(to);
  return { ino: vst.ino, size: vst.size, sha256: contentHash(out), made: true };
}
