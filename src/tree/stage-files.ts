import { isDenied } from '../core/nothing-there.js';
import { type Stats, closeSync, constants, fstatSync, linkSync, lstatSync, renameSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { StagedHash } from './derive-variants.js';
import { copyOpenedFile } from './clone-trees.js';
import { openCheckedSync } from './open-checked.js';
import { fillable } from './tree-mode.js';
import { type KeepBudget, drawKeep, returnKeep } from './keep-budget.js';
import { isGone } from './source-tree.js';
import { linkSettledSync, shareFileSync } from './share-files.js';

/** What staging needs besides each file (sent to the walk threads). */
export interface StageContext {
  source: string;
  /** Another copy to hard-link unchanged files from (`share-files.ts`). */
  share?: string | undefined;
  /** Hash what is copied, for the derive step (derive-variants.ts) not to read it again. */
  hash?: boolean;
  /**
   * The copy's root: each file staged is renamed into its place there by the
   * thread that staged it, when nothing about the place needs the copier's
   * own care (`placeStagedSync`). Unset: the copier places every file.
   */
  target?: string;
  /**
   * Bytes the copy may still keep of what it replaces
   * (`CopyOptions.keepReplacedBytes`), shared by the threads: a file placed
   * keeps the one it replaces (at `StageUnit.keep`) if that one's bytes fit,
   * and draws them (as the copier's own placing does). Not the staged file's
   * own: one linked from the copy shared with is 0 bytes, and would keep
   * every file it replaces, whatever the budget.
   */
  keepBudget?: KeepBudget | undefined;
}

/** One path to stage: copied, if it is a regular file of the source, to the new file `tmp`. */
export interface StageUnit {
  rel: string;
  tmp: string;
  /** Master has not changed this path since the copy shared with was made at it: linked from there unread. */
  settled?: true;
  /** Where the file the staged one replaces is kept (a link), while `StageContext.keepBudget` lasts: the rename then frees nothing. */
  keep?: string;
}

/**
 * Files larger than this are not staged: their copy costs what their bytes
 * cost wherever it runs, and staging a batch of them would need room for
 * all their copies at once.
 */
export const STAGE_MAX_BYTES = 1024 * 1024;

/**
 * A path staged: `bytes` copied to its temp file, or null when the path is
 * not a regular file of at most `STAGE_MAX_BYTES` reached without a link now
 * (gone, a directory, a link, a FIFO, a parent swapped for a link, a large
 * file): the caller places it by path, looking again.
 */
export interface Staged {
  rel: string;
  tmp: string;
  bytes: number | null;
  /** Linked from the copy shared with, not copied (`bytes` is then 0). */
  shared?: boolean;
  /** With `hash`: the stamp of the temp file written and the hash of its bytes (it keeps both when renamed into place). */
  hash?: StagedHash;
  /** Renamed into place by the thread (`StageContext.target`); `kept`: the file it replaced is linked at `StageUnit.keep`. */
  placed?: { kept: boolean };
}

/**
 * Copy one file of the source to a temp file beside the target, with its
 * mode and times, in a walk thread (blocking calls: a dozen system calls,
 * not a dozen round trips through the thread pool). The file is opened
 * without following a final link and checked against where the kernel says
 * it is, so no parent swapped for a link is followed; it is read from the
 * descriptor checked. The temp file is then renamed into place by the
 * same thread where nothing about the place needs the copier's care
 * (`StageContext.target`, `placeStagedSync`), else by the copier; the
 * copier makes it durable either way (with the directories it changed, in
 * one round).
 */
export function stageFileSync(c: StageContext, unit: StageUnit): Staged {
  const staged = copyToTempSync(c, unit);
  if (staged.bytes !== null && c.target !== undefined) {
    const placed = placeStagedSync(c.target, unit, c.keepBudget);
    if (placed) staged.placed = placed;
  }
  return staged;
}

/** The copy of `stageFileSync`: the file at `unit.rel` of the source, to `unit.tmp`. */
function copyToTempSync(c: StageContext, unit: StageUnit): Staged {
  const notStaged = { rel: unit.rel, tmp: unit.tmp, bytes: null };
  if (unit.settled && c.share !== undefined && linkSettledSync(c.share, c.source, unit.rel, unit.tmp)) {
    return { rel: unit.rel, tmp: unit.tmp, bytes: 0, shared: true };
  }
  let fd: number | null;
  try {
    fd = openCheckedSync(c.source, unit.rel, constants.O_RDONLY);
  } catch (err) {
    // a file this process may not read: the copier looks at it again, and reports it
    if (isDenied(err)) return notStaged;
    throw err;
  }
  if (fd === null) return notStaged;
  try {
    const st = fstatSync(fd);
    if (!st.isFile() || st.size > STAGE_MAX_BYTES) return notStaged;
    if (c.share !== undefined && shareFileSync(c.share, unit.rel, fd, st, unit.tmp)) {
      return { rel: unit.rel, tmp: unit.tmp, bytes: 0, shared: true };
    }
    const { bytes, hashed } = copyOpenedFile(fd, st, unit.tmp, c.hash);
    if (!hashed) return { rel: unit.rel, tmp: unit.tmp, bytes }; // not asked, or copied by the kernel: the derive reads it
    const { ino, size, mtimeMs } = hashed.st;
    return { rel: unit.rel, tmp: unit.tmp, bytes, hash: { ino, size, mtimeMs, sha256: hashed.sha256 } };
  } catch (err) {
    if (isGone(err)) return notStaged;
    throw err;
  } finally {
    closeSync(fd);
  }
}

/**
 * Rename the file staged for `unit` into its place in the copy at `target`,
 * as the copier would, in the thread that staged it: a
 * blocking rename where the copier's costs a round trip through libuv's
 * pool, and more while the threads' own work holds the cores. Only where
 * the place needs none of the copier's care: every directory above it is
 * one already (none a link, none to make), the last writable by its owner
 * (the copier opens a read-only one, and gives it back its mode at the
 * end), and a rename replaces what is there (no directory in the way).
 * Null when it is not placed: the temp file is still there, for the
 * copier's own placing. The copier is the copy's only writer, so what is
 * looked at here holds until the rename.
 */
function placeStagedSync(target: string, unit: StageUnit, budget: KeepBudget | undefined): { kept: boolean } | null {
  const parents = unit.rel.split('/').slice(0, -1);
  let dir = target;
  let st = statOrNull(dir);
  for (const part of parents) {
    if (!st?.isDirectory()) return null;
    dir = join(dir, part);
    st = statOrNull(dir);
  }
  if (!st?.isDirectory() || !fillable(st.mode)) return null;
  const to = join(dir, unit.rel.slice(unit.rel.lastIndexOf('/') + 1));
  // what is kept is the file replaced, if its bytes fit (nothing there, or a directory, keeps nothing)
  const old = unit.keep !== undefined && budget !== undefined ? statOrNull(to) : null;
  let kept = false;
  if (old !== null && !old.isDirectory() && drawKeep(budget as KeepBudget, old.size)) {
    try {
      linkSync(to, unit.keep as string);
      kept = true;
    } catch {
      returnKeep(budget as KeepBudget, old.size); // keeping is never worth failing a copy for
    }
  }
  try {
    renameSync(unit.tmp, to);
  } catch {
    if (kept) {
      unlinkQuietly(unit.keep as string);
      returnKeep(budget as KeepBudget, (old as Stats).size);
    }
    return null; // a directory in the way, a name too long, ...: the copier's placing says what
  }
  return { kept };
}

/** The status of `path` (not following a final link), or null when it cannot be had. */
function statOrNull(path: string): Stats | null {
  try {
    return lstatSync(path, { throwIfNoEntry: false }) ?? null;
  } catch {
    return null;
  }
}

function unlinkQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // left in the temp directory, which the copier clears
  }
}
