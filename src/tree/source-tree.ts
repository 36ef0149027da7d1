import { isNotOfThatKind } from '../core/nothing-there.js';
import { type Stats, constants } from 'node:fs';
import { type FileHandle, open, readlink, realpath } from 'node:fs/promises';
import { join } from 'node:path';

/** No entry of that kind here now (core/nothing-there.ts), not a failure of the copy. */
export const isGone = isNotOfThatKind;

/** An entry the target's file system cannot hold (a name too long there): copying it again can never succeed. */
export function isUnplaceable(err: unknown): boolean {
  return (err as NodeJS.ErrnoException).code === 'ENAMETOOLONG';
}

/** A path that names the file behind an open descriptor, not whatever a path names now. */
export function descriptorPath(handle: FileHandle): string {
  return `/proc/self/fd/${handle.fd}`;
}

/**
 * Reads a source tree (master) without ever following a symbolic link on the
 * way, whatever someone who may write into it swaps in between two calls.
 *
 * A check by path followed by a use of the same path races with a writer who
 * swaps the entry (or one of its parent directories) for a link in between.
 * So each entry is opened once, without following a final link
 * (`O_NOFOLLOW`), and the kernel is asked where the opened entry really is
 * (`/proc/self/fd/N`): if that is not the expected path below the tree's real
 * root, a parent was a link and the entry is refused. Every later use goes
 * through the descriptor, never through the path again.
 */
export class SourceTree {
  readonly #root: string;
  readonly #realRoot: string;

  private constructor(root: string, realRoot: string) {
    this.#root = root;
    this.#realRoot = realRoot;
  }

  static async open(root: string): Promise<SourceTree> {
    return new SourceTree(root, await realpath(root));
  }

  #expected(rel: string): string {
    return rel === '' ? this.#realRoot : join(this.#realRoot, rel);
  }

  /** Open `rel` without following links; null when it is gone, of another kind, or reached through a link. */
  async #open(rel: string, flags: number): Promise<FileHandle | null> {
    let handle: FileHandle;
    try {
      // O_NONBLOCK: a FIFO swapped in must not block the open waiting for a writer.
      handle = await open(join(this.#root, rel), flags | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    } catch (err) {
      if (isGone(err)) return null;
      throw err;
    }
    try {
      if ((await readlink(descriptorPath(handle))) === this.#expected(rel)) return handle;
    } catch (err) {
      if (!isGone(err)) {
        await handle.close();
        throw err;
      }
    }
    await handle.close();
    return null;
  }

  /**
   * The regular file at `rel`, opened for reading, and its status as opened.
   * Null when there is no regular file there now reached without a link.
   * The caller closes the handle.
   */
  async openFile(rel: string): Promise<{ handle: FileHandle; stat: Stats } | null> {
    const handle = await this.#open(rel, constants.O_RDONLY);
    if (!handle) return null;
    try {
      const stat = await handle.stat();
      if (stat.isFile()) return { handle, stat };
    } catch (err) {
      await handle.close();
      throw err;
    }
    await handle.close();
    return null;
  }

  /** Whether `rel` is a directory reached without a link (neither it nor a parent of it one). */
  async isDirectory(rel: string): Promise<boolean> {
    const handle = await this.#open(rel, constants.O_RDONLY | constants.O_DIRECTORY);
    await handle?.close();
    return handle !== null;
  }

  /**
   * The target of the symbolic link at `rel`, read inside its parent directory
   * as opened (so a linked parent is never followed). Null when it is not a link.
   */
  async readLink(rel: string): Promise<string | null> {
    const slash = rel.lastIndexOf('/');
    const parent = slash < 0 ? '' : rel.slice(0, slash);
    const name = rel.slice(slash + 1);
    const dir = await this.#open(parent, constants.O_RDONLY | constants.O_DIRECTORY);
    if (!dir) return null;
    try {
      return await readlink(join(descriptorPath(dir), name));
    } catch (err) {
      if (isGone(err) || (err as NodeJS.ErrnoException).code === 'EINVAL') return null; // EINVAL: not a link
      throw err;
    } finally {
      await dir.close();
    }
  }
}
