import { chmod, lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * The mode a copy gives an entry (a slot's copy of master, a fleet host's
 * pull): the permission bits only, never setuid, setgid or sticky (a web
 * tree needs none, and a copy must not hand them on from whoever could
 * write master or a coordinator's answer), and always readable by its owner
 * (a directory searchable too), so the copier can read back what it wrote:
 * compare it, hash it, replace it.
 */
export function treeMode(mode: number, dir: boolean): number {
  return (mode & 0o777) | (dir ? 0o500 : 0o400);
}

/** What a copier needs of a directory it writes into: owner read, write and search. */
const FILL = 0o700;

/** Whether a directory of mode `mode` can be written into by its owner as it is. */
export function fillable(mode: number): boolean {
  return (mode & FILL) === FILL;
}

/** A directory's mode while it is being filled: its own, plus what its owner needs to write into it. */
export function fillingMode(mode: number): number {
  return (mode & 0o7777) | FILL;
}

/**
 * Make every directory of the tree at `path` (itself included, when a
 * directory) writable by its owner, without following links, so that the
 * whole tree can be removed or moved: a read-only directory anywhere in it
 * would stop `rm -r` (its entries cannot be unlinked) and a rename to
 * another parent (its `..` cannot be rewritten). Whatever is gone is skipped.
 */
export async function unlockTree(path: string): Promise<void> {
  const st = await lstat(path).catch(() => null);
  if (!st?.isDirectory()) return;
  if (!fillable(st.mode)) await chmod(path, fillingMode(st.mode));
  const entries = await readdir(path, { withFileTypes: true }).catch(() => []);
  for (const e of entries) if (e.isDirectory()) await unlockTree(join(path, e.name));
}
