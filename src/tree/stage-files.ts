import { closeSync, constants, fstatSync, lstatSync } from 'node:fs';
import { contentHash } from '../store/content-index.js';
import type { StagedHash } from './derive-variants.js';
import { copyOpenedFile } from './clone-trees.js';
import { openCheckedSync } from './open-checked.js';
import { isDenied } from './tree-mode.js';
import { isGone } from './source-tree.js';
import { linkSettledSync, shareFileSync } from './share-files.js';

/** What staging needs besides each file (sent to the walk threads). */
export interface StageContext {
  source: string;
  /** Another copy to hard-link unchanged files from (`share-files.ts`). */
  share?: string | undefined;
  /** Hash what is copied, for the derive step (derive-variants.ts) not to read it again. */
  hash?: boolean;
}

/** One path to stage: copied, if it is a regular file of the source, to the new file `tmp`. */
export interface StageUnit {
  rel: string;
  tmp: string;
  /** Master has not changed this path since the copy shared with was made at it: linked from there unread. */
  settled?: true;
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
}

/**
 * Copy one file of the source to a temp file beside the target, with its
 * mode and times, in a walk thread (blocking calls: a dozen system calls,
 * not a dozen round trips through the thread pool). The file is opened
 * without following a final link and checked against where the kernel says
 * it is, so no parent swapped for a link is followed; it is read from the
 * descriptor checked. The temp file is renamed into place by the caller,
 * and made durable by it (with the directories it changed, in one round).
 */
export function stageFileSync(c: StageContext, unit: StageUnit): Staged {
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
    if (!c.hash) return { rel: unit.rel, tmp: unit.tmp, bytes: copyOpenedFile(fd, st, unit.tmp) };
    let sha256 = '';
    const bytes = copyOpenedFile(fd, st, unit.tmp, (b) => {
      sha256 = contentHash(b);
    });
    if (sha256 === '') return { rel: unit.rel, tmp: unit.tmp, bytes }; // copied by the kernel: the derive reads it
    const { ino, size, mtimeMs } = lstatSync(unit.tmp);
    return { rel: unit.rel, tmp: unit.tmp, bytes, hash: { ino, size, mtimeMs, sha256 } };
  } catch (err) {
    if (isGone(err)) return notStaged;
    throw err;
  } finally {
    closeSync(fd);
  }
}
