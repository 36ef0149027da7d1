import { isDenied } from '../core/nothing-there.js';
import {
  constants,
  type Dirent,
  closeSync,
  copyFileSync,
  fstatSync,
  futimesSync,
  mkdirSync,
  openSync,
  readSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  symlinkSync,
  writeSync,
  chmodSync,
  fchmodSync,
  type Stats,
} from 'node:fs';
import { join } from 'node:path';
import { treeMode } from './tree-mode.js';
import { msInside } from './copy-times.js';
import { isGone, isUnplaceable } from './source-tree.js';
import type { WalkUnit } from './walk-units.js';
import { reportWalked } from './walk-report.js';
import { shareFileSync } from './share-files.js';
import { NO_FOLLOW, fdPath, openCheckedSync } from './open-checked.js';
import { contentHash, dropDirectoryIndexSync } from '../store/content-index.js';
import {
  type CopiedListing,
  type DeriveContext,
  type DeriveResult,
  copiedListing,
  deriveCopiedDirectorySync,
  emptyDeriveStats,
} from './derive-variants.js';

/** What a clone unit needs besides itself (sent to the walk threads). */
export interface CloneContext {
  source: string;
  /** Another copy to hard-link unchanged files from (`share-files.ts`); none: every file is copied. */
  share?: string | undefined;
  /**
   * The copy's derive (derive-variants.ts), run on each directory as soon as
   * it is copied, in the same thread, with the hashes of the files as they
   * were copied: a full copy with variants reads each file once. None: the
   * copier derives after the clone, if at all.
   */
  derive?: DeriveContext | undefined;
  /**
   * The copy's root when it keeps a content index: each directory the clone
   * makes starts with none (`dropDirectoryIndexSync`), whatever an earlier
   * directory at its path left.
   */
  indexed?: string | undefined;
}

/**
 * A unit of a clone: the source directory `rel` copied as the new directory
 * `dest` with everything below it (`deep`), or only its own entries into
 * `dest`, made beforehand, its subdirectories `subunits` being units of
 * their own. No unit sets its own directory's mode: a shallow unit's
 * subunits may still be writing into it, and a directory whose mode denies
 * its owner write cannot be renamed to its place (its `..` is rewritten);
 * each reports the mode (`own`) for the copier to set once all is placed.
 */
export type CloneUnit = WalkUnit & {
  dest: string;
  /** Where a whole directory goes once copied (renamed there in the same thread, at once). */
  place?: string;
};

/** What a clone did. */
export interface CloneResult {
  files: number;
  bytes: number;
  /** Files linked from the copy shared with (`CloneContext.share`) rather than copied; their bytes are not in `bytes`. */
  shared: number;
  dirs: number;
  /** Units whose source was not a directory reached without a link (copied by path instead). */
  missed: string[];
  /** Entries the target cannot hold (a name too long for its file system), left out. */
  skipped: string[];
  /** Entries of the source this process may not read (its mode shuts it out), left out. */
  unreadable: string[];
  /** The unit, when its directory was renamed to its `place`. */
  placed?: string;
  /** The unit's own directory and its mode (`treeMode`), to set once it is placed and its subunits are done. */
  own?: { rel: string; mode: number };
  /** What the derive of the directories it copied did (`CloneContext.derive`); its paths are not kept (the copy ends with a syncfs). */
  derive?: DeriveResult;
}

export function emptyCloneResult(): CloneResult {
  return { files: 0, bytes: 0, shared: 0, dirs: 0, missed: [], skipped: [], unreadable: [] };
}

/** Files up to this size are copied by one read and one write through their descriptors. */
const SMALL_FILE = 1024 * 1024;

/**
 * Copy one unit of a source tree with blocking calls, in the thread that
 * runs it (a walk thread): a tree of many small files costs a few system
 * calls each, not a hop through the thread pool per call.
 *
 * Nothing is ever reached through a link. The unit's directory is opened
 * without following a final link and checked against where the kernel says
 * it is; every entry below is opened by its name inside its parent as opened
 * (`/proc/self/fd/N/name`, `O_NOFOLLOW`), so a parent swapped for a link
 * during the copy is never followed. Files are read from the descriptor
 * that was checked.
 */
export function cloneUnitSync(context: CloneContext, unit: CloneUnit): CloneResult {
  const { source } = context;
  const result = emptyCloneResult();

  const guard = (rel: string, work: () => void): void => {
    try {
      work();
    } catch (err) {
      if (isUnplaceable(err)) result.skipped.push(rel);
      // the clone writes only into directories it made (owner-writable until their last child
      // is in): a refusal is the source's, an entry this process may not read
      else if (isDenied(err)) result.unreadable.push(rel);
      else if (!isGone(err)) throw err; // gone or swapped meanwhile: the watcher reports it again
    }
  };

  // what the derive did, summed over the directories this unit copies
  if (context.derive) result.derive = { stats: emptyDeriveStats(), written: [], dirs: [], taken: [] };
  const derive = context.derive && result.derive ? { context: context.derive, result: result.derive } : null;

  /** Copy a file; with a derive, note what it wrote of it in `copied` (a small file's hash, from the bytes copied). */
  const copyFile = (parentFd: number, name: string, dest: string, rel: string, copied: CopiedListing | null): void => {
    const fd = openSync(join(fdPath(parentFd), name), constants.O_RDONLY | NO_FOLLOW);
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) return;
      if (context.share !== undefined && shareFileSync(context.share, rel, fd, st, dest)) result.shared++;
      else {
        const copy = copyOpenedFile(fd, st, dest, copied !== null);
        result.bytes += copy.bytes;
        if (copied && copy.hashed) {
          // the file as written: the derive trusts the hash while the file has this stamp
          const { sha256, st: placed } = copy.hashed;
          copied.hints[name] = { ino: placed.ino, size: placed.size, mtimeMs: placed.mtimeMs, sha256 };
          copied.files.set(name, placed);
        }
      }
      result.files++;
    } finally {
      closeSync(fd);
    }
  };

  /**
   * Copy the entries of the directory open as `fd` into `dest`, all but the
   * subdirectories in `skip`; then, with a derive, derive it (while it is
   * still writable: its mode is set after).
   */
  const copyEntries = (fd: number, rel: string, dest: string, skip: ReadonlySet<string> | null): void => {
    if (context.indexed !== undefined) dropDirectoryIndexSync(context.indexed, rel);
    const entries: Dirent[] = readdirSync(fdPath(fd), { withFileTypes: true });
    reportWalked(entries.length);
    const copied = derive ? copiedListing(entries.map((e) => e.name)) : null;
    for (const e of entries) {
      const child = rel === '' ? e.name : `${rel}/${e.name}`;
      const to = `${dest}/${e.name}`;
      if (e.isFile()) guard(child, () => copyFile(fd, e.name, to, child, copied));
      else if (e.isSymbolicLink()) {
        guard(child, () => {
          let target: string;
          try {
            target = readlinkSync(join(fdPath(fd), e.name));
          } catch (err) {
            // EINVAL: no longer a link (a file put there since the listing): as one gone meanwhile
            if ((err as NodeJS.ErrnoException).code === 'EINVAL') return;
            throw err;
          }
          symlinkSync(target, to);
          result.files++;
        });
      } else if (e.isDirectory() && !skip?.has(e.name)) {
        guard(child, () => {
          const sub = openSync(join(fdPath(fd), e.name), constants.O_RDONLY | constants.O_DIRECTORY | NO_FOLLOW);
          try {
            copyDirectory(sub, child, to);
          } finally {
            closeSync(sub);
          }
        });
      }
    }
    if (derive && copied) deriveCopiedDirectorySync(derive.context, rel, dest, copied, derive.result);
  };

  /**
   * Copy the directory open as `fd` into the new directory `dest`, writable
   * until its last entry is in; then its own mode, unless it is the unit's
   * (`own`: set by the copier once placed).
   */
  const copyDirectory = (fd: number, rel: string, dest: string, own = false): void => {
    const mode = treeMode(fstatSync(fd).mode, true);
    mkdirSync(dest, { mode: 0o700 });
    result.dirs++;
    copyEntries(fd, rel, dest, null);
    if (own) result.own = { rel, mode };
    else chmodSync(dest, mode); // also clears a setgid bit mkdir took from a setgid parent
  };

  // the unit's own path is checked once: none of its parents may be a link
  let fd: number | null;
  try {
    fd = openCheckedSync(source, unit.rel, constants.O_RDONLY | constants.O_DIRECTORY);
  } catch (err) {
    if (!isDenied(err)) throw err;
    result.unreadable.push(unit.rel);
    return result;
  }
  if (fd === null) {
    result.missed.push(unit.rel);
    return result;
  }
  try {
    if (unit.deep) {
      let copied = false;
      guard(unit.rel, () => {
        copyDirectory(fd as number, unit.rel, unit.dest, true);
        copied = true;
      });
      if (copied && unit.place !== undefined) {
        try {
          renameSync(unit.dest, unit.place);
          result.placed = unit.rel;
        } catch (err) {
          // something stands there (the same path listed twice), or its parent does not:
          // the main thread places it
          const code = (err as NodeJS.ErrnoException).code;
          if (code !== 'EEXIST' && code !== 'ENOTEMPTY' && code !== 'ENOTDIR' && code !== 'ENOENT') throw err;
        }
      }
    } else {
      const dirFd = fd;
      result.own = { rel: unit.rel, mode: treeMode(fstatSync(dirFd).mode, true) };
      guard(unit.rel, () => copyEntries(dirFd, unit.rel, unit.dest, new Set(unit.subunits)));
    }
  } finally {
    closeSync(fd);
  }
  return result;
}

/** What `copyOpenedFile` wrote. */
export interface CopiedFile {
  bytes: number;
  /**
   * Asked for (`hash`), and the file small enough to pass through this
   * thread: the hash of the bytes written and the new file's status as it
   * was closed (its stamp vouches for the hash while it holds).
   */
  hashed?: { sha256: string; st: Stats };
}

/**
 * Copy the regular file open as `fd` (whose status is `st`) to the new file
 * `dest`, with its mode (`treeMode`) and times. A small file is one read and
 * one write through the descriptors, a large one `copy_file_range` in the
 * kernel. With `hash`, a small file's bytes are hashed as they pass, and the
 * new file's status taken from its descriptor (no second lookup of its
 * path). Blocking calls, for a walk thread.
 */
export function copyOpenedFile(fd: number, st: Stats, dest: string, hash = false): CopiedFile {
  const mode = treeMode(st.mode, false);
  if (st.size > SMALL_FILE) {
    copyFileSync(fdPath(fd), dest); // the path names the opened file
    const out = openSync(dest, constants.O_WRONLY);
    try {
      fchmodSync(out, mode); // copyfile gave it the source's whole mode
      futimesSync(out, msInside(st.atimeMs), msInside(st.mtimeMs));
    } finally {
      closeSync(out);
    }
    return { bytes: st.size };
  }
  const buffer = sharedBuffer();
  const out = openSync(dest, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, mode);
  try {
    let length = 0;
    // A regular file's read comes back short only at its end: no second read to find it.
    while (length < buffer.length) {
      const want = buffer.length - length;
      const n = readSync(fd, buffer, length, want, length);
      length += n;
      if (n < want) break;
    }
    for (let written = 0; written < length; ) written += writeSync(out, buffer, written, length - written);
    const sha256 = hash ? contentHash(buffer.subarray(0, length)) : null;
    if ((mode & umask()) !== 0) fchmodSync(out, mode); // creation's mode was cut by the umask
    futimesSync(out, msInside(st.atimeMs), msInside(st.mtimeMs));
    return sha256 === null ? { bytes: length } : { bytes: length, hashed: { sha256, st: fstatSync(out) } };
  } finally {
    closeSync(out);
  }
}

let processUmask: number | undefined;
/**
 * The process's umask, from /proc (asking Node for it is deprecated, and
 * impossible in a worker thread); when unknown, every mode is set again.
 */
function umask(): number {
  if (processUmask === undefined) {
    try {
      const line = /^Umask:\s*([0-7]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
      processUmask = line ? Number.parseInt(line[1] as string, 8) : 0o7777;
    } catch {
      processUmask = 0o7777;
    }
  }
  return processUmask;
}

let buffer: Buffer | undefined;
/** One read buffer per thread, for the small files. */
function sharedBuffer(): Buffer {
  buffer ??= Buffer.allocUnsafe(SMALL_FILE);
  return buffer;
}

/** The whole result of a clone, from its units' results. */
export function addCloneResult(all: CloneResult, part: CloneResult): void {
  all.files += part.files;
  all.bytes += part.bytes;
  all.shared += part.shared;
  all.dirs += part.dirs;
  all.missed.push(...part.missed);
  all.skipped.push(...part.skipped);
  all.unreadable.push(...part.unreadable);
}
