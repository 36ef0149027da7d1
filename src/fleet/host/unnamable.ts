import { isUtf8 } from 'node:buffer';
import { chmod, lstat, readdir, rm } from 'node:fs/promises';
import { isReservedRootName } from '../../store/store-layout.js';
import { fillable, fillingMode } from '../../tree/tree-mode.js';

/**
 * Remove from a host's slot every entry whose name is not UTF-8, with
 * everything under it; returns how many were removed. No snapshot can
 * name one (a manifest's paths are JSON strings, and `badPath` refuses
 * what is not one), so it is drift: put there by hand or by another tool.
 * Its name read as a string is not its name (the bytes that are not UTF-8
 * come back as U+FFFD), so the slot's walk, which lists by string, cannot
 * even look at it, and failed every pull. Paths here are bytes throughout.
 * Directories are opened to their owner on the way (drift may have shut
 * them): a directory that holds such an entry must be written to lose it.
 */
export async function removeUnnamable(root: string): Promise<number> {
  let removed = 0;
  const visit = async (dir: Buffer, top: boolean): Promise<void> => {
    const entries = await readdir(dir, { withFileTypes: true, encoding: 'buffer' });
    for (const e of entries) {
      const name = e.name as unknown as Buffer;
      if (top && isUtf8(name) && isReservedRootName(name.toString('utf8'))) continue;
      const path = Buffer.concat([dir, Buffer.from('/'), name]);
      if (!isUtf8(name)) {
        await openTree(path);
        await rm(path, { recursive: true, force: true });
        removed++;
      } else if (e.isDirectory()) {
        await visit(path, false);
      }
    }
  };
  await visit(Buffer.from(root), true);
  return removed;
}

/**
 * `unlockTree` (tree-mode.ts) for a path in bytes: every directory of the
 * tree at `path` given what its owner needs to empty it, for its removal.
 */
async function openTree(path: Buffer): Promise<void> {
  const st = await lstat(path);
  if (!st.isDirectory()) return;
  if (!fillable(st.mode)) await chmod(path, fillingMode(st.mode));
  for (const e of await readdir(path, { withFileTypes: true, encoding: 'buffer' })) {
    if (e.isDirectory()) await openTree(Buffer.concat([path, Buffer.from('/'), e.name as unknown as Buffer]));
  }
}
