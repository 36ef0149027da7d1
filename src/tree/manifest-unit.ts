import { createHash } from 'node:crypto';
import { randomBytes } from 'node:crypto';
import {
  type Dirent,
  closeSync,
  constants,
  fchmodSync,
  fstatSync,
  fsyncSync,
  futimesSync,
  lstatSync,
  openSync,
  readSync,
  readdirSync,
  readlinkSync,
  renameSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import type { WalkUnit } from './walk-units.js';
import { isReservedRootName } from '../store/store-layout.js';
import type { WalkedEntry } from './manifest-entry.js';
import { walkedLine } from './manifest-line.js';
import { LineWriter } from './line-cursor.js';
import { NO_FOLLOW, openCheckedSync } from './open-checked.js';
import { isNotOfThatKind } from '../core/nothing-there.js';
import { MadeVariants } from './made-variants.js';

/**
 * The entries of one walk unit, with blocking calls (in a walk thread): the
 * children of the unit's directory, and for a deep unit everything below
 * them. A subdirectory of a shallow unit is listed as an entry here and
 * walked as a unit of its own. Links are read, never followed.
 */
export function manifestUnitSync(root: string, unit: WalkUnit, made?: MadeVariants): WalkedEntry[] {
  const out: WalkedEntry[] = [];
  const visit = (rel: string, descend: boolean) => {
    let children: Dirent[];
    try {
      children = readdirSync(join(root, rel), { withFileTypes: true });
    } catch (err) {
      throw new Error(`cannot list ${join(root, rel)}: ${(err as Error).message}`);
    }
    const madeIn = made?.in(
      rel,
      children.map((child) => child.name),
    );
    for (const child of children) {
      if (rel === '' && isReservedRootName(child.name)) continue;
      const path = rel === '' ? child.name : `${rel}/${child.name}`;
      const abs = join(root, path);
      const st = lstatSync(abs);
      const base = {
        path,
        mode: st.mode & 0o7777,
        size: 0,
        mtimeMs: Math.floor(st.mtimeMs),
        ino: st.ino,
        ctimeMs: st.ctimeMs,
      };
      if (st.isDirectory()) {
        out.push({ ...base, type: 'dir' });
        if (descend) visit(path, true);
      } else if (st.isSymbolicLink()) {
        out.push({ ...base, type: 'link', target: readlinkSync(abs) });
      } else if (st.isFile()) {
        out.push({ ...base, type: 'file', size: st.size, ...(madeIn?.has(child.name, st) ? { made: true } : {}) });
      }
      // sockets, FIFOs and devices are never copied into a slot, so never into a manifest
    }
  };
  visit(unit.rel, unit.deep);
  return out;
}

/**
 * Walk a group of units into one run of a manifest file (`manifest-line.ts`
 * says the format): their lines, sorted, written to `<runsDir>/run-<i>`, in
 * the walk thread. Nothing per entry crosses to the main thread, whose young
 * generation would grow with the walk's garbage. A file's hash is not known
 * yet. With `made`, a file the copy's content index names as a variant the
 * agent made is marked so (`ManifestEntry.made`). Returns the run's file, or
 * null when the units hold no entry.
 */
export function manifestRunSync(
  c: { root: string; runsDir: string; made?: boolean },
  group: { i: number; units: WalkUnit[] },
): string | null {
  const lines: string[] = [];
  const made = c.made === true ? new MadeVariants(c.root) : undefined;
  for (const unit of group.units) for (const e of manifestUnitSync(c.root, unit, made)) lines.push(walkedLine(e));
  if (lines.length === 0) return null;
  lines.sort();
  const file = join(c.runsDir, `run-${group.i}`);
  const out = new LineWriter(file);
  try {
    for (const line of lines) out.add(`${line}\n`);
    out.end();
  } finally {
    out.close(); // after a failure: closed without writing the rest
  }
  return file;
}

/** An open descriptor, or null when there is no entry there (or a link, refused by O_NOFOLLOW). */
function openOrNullSync(path: string, flags: number): number | null {
  try {
    return openSync(path, flags);
  } catch (err) {
    if (isNotOfThatKind(err)) return null;
    throw err;
  }
}

/** The read buffer of this thread's hashes: a call runs to its end before the next starts. */
let hashBuffer: Buffer | undefined;

/**
 * A file's SHA-256 (hex), read with blocking calls in a walk thread, never
 * from a FIFO or a device put in its place since it was walked (the open
 * does not wait on a FIFO; the read would, for ever). With `walked`, only
 * the very file the walk saw: its inode and size on the root's device,
 * however it is reached. A parent link to that same inode of the same file
 * system reads the same bytes, so the open need not check its parents, which
 * costs a `readlink` per file (a first manifest of a million small files
 * took 1.4 times as long). A file on another device (a parent swapped for a
 * link to another file system, where the inode number names another file;
 * or a mount inside the copy) is opened again refusing parent links.
 * Without `walked`, no link is followed, its own or a parent's.
 */
export function hashFileSync(
  root: string,
  path: string,
  walked?: { ino: number; size: number; rootDev: number },
): string {
  let fd = walked
    ? openOrNullSync(join(root, path), constants.O_RDONLY | NO_FOLLOW)
    : openCheckedSync(root, path, constants.O_RDONLY);
  try {
    if (fd === null) throw new Error(`${join(root, path)} is gone, or reached through a link, since it was walked`);
    let st = fstatSync(fd);
    if (walked && st.dev !== walked.rootDev) {
      closeSync(fd);
      fd = null;
      fd = openCheckedSync(root, path, constants.O_RDONLY);
      if (fd === null) throw new Error(`${join(root, path)} is gone, or reached through a link, since it was walked`);
      st = fstatSync(fd);
    }
    if (!st.isFile()) throw new Error(`${join(root, path)} is no longer a regular file`);
    // another file put there since the walk: its hash would go beside the walked one's size
    if (walked && (st.ino !== walked.ino || st.size !== walked.size))
      throw new Error(`${join(root, path)} was replaced since it was walked`);
    const hash = createHash('sha256');
    // one buffer for every file: a fresh megabyte for each of a million small files was most of a walk's cost
    hashBuffer ??= Buffer.allocUnsafe(1024 * 1024);
    for (;;) {
      const n = readSync(fd, hashBuffer, 0, hashBuffer.length, null);
      if (n === 0) break;
      hash.update(hashBuffer.subarray(0, n));
    }
    return hash.digest('hex');
  } finally {
    if (fd !== null) closeSync(fd);
  }
}

/**
 * Write one pulled file beside the slot (its temp directory) and rename it
 * into place, with its mode and time; fsync first when asked. Run in a walk
 * thread: blocking calls, one thread-pool round trip less for each.
 */
export function placeFileSync(
  c: { into: string; tmp: string; fsync: boolean },
  file: { path: string; data: Uint8Array; mode: number; mtime: number },
): true {
  const temp = join(c.tmp, randomBytes(8).toString('hex'));
  const fd = openSync(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  try {
    for (let off = 0; off < file.data.length; ) off += writeSync(fd, file.data, off);
    fchmodSync(fd, file.mode);
    futimesSync(fd, file.mtime, file.mtime);
    if (c.fsync) fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    unlinkSync(temp);
    throw err;
  }
  closeSync(fd);
  renameSync(temp, join(c.into, file.path));
  return true;
}

/**
 * The files and bytes of one walk unit (what an ETA needs), counted in a
 * walk thread. Master is written while it is counted: an entry or directory
 * gone between its listing and its look is skipped, not an error (a count
 * is an estimate; failing `init` for it would not be). Links are not
 * followed, nor read.
 */
export function countUnitSync(root: string, unit: WalkUnit): { files: number; bytes: number } {
  let files = 0;
  let bytes = 0;
  const visit = (rel: string, descend: boolean) => {
    let children: Dirent[];
    try {
      children = readdirSync(join(root, rel), { withFileTypes: true });
    } catch {
      return; // gone, or no longer a directory
    }
    for (const child of children) {
      if (rel === '' && isReservedRootName(child.name)) continue;
      const path = rel === '' ? child.name : `${rel}/${child.name}`;
      if (child.isDirectory()) {
        if (descend) visit(path, true);
      } else if (child.isFile()) {
        const st = lstatSync(join(root, path), { throwIfNoEntry: false });
        if (!st?.isFile()) continue;
        files++;
        bytes += st.size;
      }
    }
  };
  visit(unit.rel, unit.deep);
  return { files, bytes };
}
