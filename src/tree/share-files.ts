import { type Stats, closeSync, constants, fstatSync, linkSync, lstatSync, readSync, unlinkSync } from 'node:fs';
import { type FileHandle, link, lstat, open, readlink, realpath, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { openCheckedSync } from './open-checked.js';
import { treeMode } from './tree-mode.js';
import { descriptorPath } from './source-tree.js';

/**
 * Copies that share unchanged files (`--share-files`): a file of master that
 * another copy holds byte for byte, with the mode and mtime a copy would
 * give it, is hard-linked from there instead of copied. A store keeping K
 * releases then costs one tree and what each release changed, not K trees.
 *
 * Safe because no copy's file is ever changed in place: every change to a
 * copy is a new file renamed over the old name (a mode or time change too),
 * and a variant is written or linked under its name once the one it
 * replaces is unlinked. A retained release therefore never changes when a
 * newer copy replaces a file they shared.
 *
 * The bytes are compared, not trusted from size and mtime: a build that
 * stamps every file with one time (reproducible builds do) changes a file
 * without changing either. The other copy's file is opened without following
 * a link anywhere on its path, and the name linked is checked to be the file
 * compared. Copies on two file systems (EXDEV), a file at its link limit
 * (EMLINK), or anything else refused: the file is copied as before.
 */

const CHUNK = 1024 * 1024;
let buffers: [Buffer, Buffer] | undefined;

/** Whether the other copy's file, as stated by `other`, is what a copy of master's (`st`) would be. */
function looksTheSame(other: Stats, st: Stats): boolean {
  return (
    other.isFile() &&
    other.size === st.size &&
    Math.floor(other.mtimeMs) === Math.floor(st.mtimeMs) &&
    (other.mode & 0o7777) === treeMode(st.mode, false)
  );
}

/** Whether the files open as `a` and `b` hold the same `size` bytes. Blocking, for a walk thread. */
function sameBytesSync(a: number, b: number, size: number): boolean {
  buffers ??= [Buffer.allocUnsafe(CHUNK), Buffer.allocUnsafe(CHUNK)];
  const [x, y] = buffers;
  for (let at = 0; at < size; ) {
    const want = Math.min(CHUNK, size - at);
    const n = readSync(a, x, 0, want, at);
    if (n !== want || readSync(b, y, 0, want, at) !== want) return false;
    if (x.compare(y, 0, n, 0, n) !== 0) return false;
    at += n;
  }
  return true;
}

/**
 * Link `dest` (a new name) to the file `rel` of the copy at `shareRoot` when
 * it holds what the file of master open as `fd` (status `st`) would be
 * copied as. True when linked; false leaves `dest` absent, for a copy.
 * Blocking calls, for a walk thread.
 */
export function shareFileSync(shareRoot: string, rel: string, fd: number, st: Stats, dest: string): boolean {
  return linkCheckedSync(
    shareRoot,
    rel,
    dest,
    (other, ost) => looksTheSame(ost, st) && sameBytesSync(fd, other, st.size),
  );
}

/**
 * Link `dest` (a new name) to the regular file `rel` of the copy at
 * `shareRoot`, without reading master or comparing bytes: for a path the
 * journal shows master has not changed since that copy was made at it
 * (`CopyOptions.settled`), so that copy's file is what a copy of master's
 * would be, by the same trust an incremental copy puts in the journal; master's
 * file is only looked at (`source`): one file with one name, its size, mtime
 * and mode those of the other copy's. False leaves `dest` absent: the path is
 * then staged as any other. Blocking calls, for a walk thread.
 */
export function linkSettledSync(shareRoot: string, source: string, rel: string, dest: string): boolean {
  let st: Stats | null;
  try {
    st = lstatSync(join(source, rel));
  } catch {
    return false;
  }
  // A file of master with other names (a tree made with `cp -al`) changes when written through any of
  // them, and the journal names only the one written: such a file is compared, never settled. So is one
  // whose size, mtime or mode is not the other copy's: the journal missed something.
  if (!st.isFile() || st.nlink !== 1) return false;
  const masterSt = st;
  return linkCheckedSync(shareRoot, rel, dest, (_, ost) => looksTheSame(ost, masterSt));
}

/**
 * Link `dest` to the file `rel` of the copy at `shareRoot` if `fits` says so
 * of it (open, and its status). The file is opened without following a link
 * anywhere on its path, and the name linked is checked to be the file looked
 * at. False, with `dest` absent, for anything else: not there, a link (ELOOP),
 * refused, another file system (EXDEV), the link limit (EMLINK).
 */
function linkCheckedSync(
  shareRoot: string,
  rel: string,
  dest: string,
  fits: (fd: number, st: Stats) => boolean,
): boolean {
  let other: number | null;
  try {
    other = openCheckedSync(shareRoot, rel, constants.O_RDONLY);
  } catch {
    return false;
  }
  if (other === null) return false;
  try {
    const ost = fstatSync(other);
    if (!fits(other, ost)) return false;
    try {
      linkSync(join(shareRoot, rel), dest);
    } catch {
      return false;
    }
    const linked = lstatSync(dest);
    if (linked.ino === ost.ino && linked.dev === ost.dev) return true;
    unlinkSync(dest); // something else stood at that name by the time of the link
    return false;
  } finally {
    closeSync(other);
  }
}

/** `shareFileSync` for the main thread: the same checks through the thread pool (large files). */
export async function shareFile(
  shareRoot: string,
  rel: string,
  source: FileHandle,
  st: Stats,
  dest: string,
): Promise<boolean> {
  let other: FileHandle;
  try {
    other = await open(join(shareRoot, rel), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return false;
  }
  try {
    // opened where the kernel says, no parent of it a link (as openCheckedSync checks in the threads)
    if ((await readlink(descriptorPath(other))) !== join(await realpath(shareRoot), rel)) return false;
    const ost = await other.stat();
    if (!looksTheSame(ost, st) || !(await sameBytes(source, other, st.size))) return false;
    try {
      await link(join(shareRoot, rel), dest);
    } catch {
      return false;
    }
    // the name linked is the file compared: no parent of it was swapped for a link meanwhile
    const linked = await lstat(dest);
    if (linked.ino === ost.ino && linked.dev === ost.dev) return true;
    await unlink(dest);
    return false;
  } catch {
    return false; // not shared: the file is copied
  } finally {
    await other.close();
  }
}

async function sameBytes(a: FileHandle, b: FileHandle, size: number): Promise<boolean> {
  const x = Buffer.allocUnsafe(Math.min(CHUNK, size));
  const y = Buffer.allocUnsafe(x.length);
  for (let at = 0; at < size; ) {
    const want = Math.min(x.length, size - at);
    const [r1, r2] = await Promise.all([a.read(x, 0, want, at), b.read(y, 0, want, at)]);
    if (r1.bytesRead !== want || r2.bytesRead !== want) return false;
    if (x.compare(y, 0, want, 0, want) !== 0) return false;
    at += want;
  }
  return true;
}
