import { chmod, lstat } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import { fillable, fillingMode } from './tree-mode.js';

/**
 * The directories of a tree a copier writes into, kept writable while it
 * does, and given their modes once everything under them is in.
 *
 * A directory's mode may deny its owner write (a read-only release, a
 * `chmod -R a-w` checkout): applied before its last child lands, it stops
 * that child's rename (and every later sync's, or pull's, into it). So a
 * directory is opened (`open`: given owner read, write and search if it
 * lacks any) before anything is created, renamed into or removed from it,
 * and `settle` gives each directory opened or given a mode (`setFinal`) that
 * mode, deepest first, once the copy has placed everything. The copier is
 * the tree's only writer; if it stops before `settle`, the tree is marked
 * unfinished and the next copy compares it (modes included) and repairs it.
 */
export class WritableDirs {
  /** Directories opened, each with the mode it had (given back by `settle` unless `setFinal` says else). */
  readonly #opened = new Map<string, Promise<number | null>>();
  /** Directories whose mode is to be set once the copy is done. */
  readonly #final = new Map<string, number>();
  /** With a root, a directory's mode is changed only while each of its parents below it is a real directory. */
  readonly #root: string | null;

  constructor(root?: string) {
    this.#root = root ?? null;
  }

  /** Whether every parent of `dir` below the root is a directory, none a link (true without a root). */
  async #inside(dir: string): Promise<boolean> {
    if (this.#root === null) return true;
    const rel = relative(this.#root, dir);
    if (rel === '') return true;
    const parts = rel.split(sep);
    if (parts[0] === '..') return false;
    for (let i = 1; i < parts.length; i++) {
      const st = await lstat(join(this.#root, ...parts.slice(0, i))).catch(() => null);
      if (!st?.isDirectory()) return false;
    }
    return true;
  }

  /** Make the directory at `dir` writable by its owner until `settle`; nothing there is not an error here. */
  open(dir: string): Promise<unknown> {
    let opened = this.#opened.get(dir);
    if (!opened) {
      opened = (async () => {
        const st = (await this.#inside(dir)) ? await lstat(dir).catch(() => null) : null;
        if (!st?.isDirectory()) {
          this.#opened.delete(dir); // looked at again once it is there
          return null;
        }
        if (fillable(st.mode)) return null;
        await chmod(dir, fillingMode(st.mode));
        return st.mode & 0o7777;
      })();
      this.#opened.set(dir, opened);
    }
    return opened;
  }

  /** Give `dir` the mode `mode` at `settle` (it stays writable until then if it is now). */
  setFinal(dir: string, mode: number): void {
    this.#final.set(dir, mode);
  }

  /** `path` was removed or replaced: nothing is to be done to it, nor below it, any more. */
  forget(path: string): void {
    const under = `${path}/`;
    for (const map of [this.#opened, this.#final] as Map<string, unknown>[])
      for (const key of map.keys()) if (key === path || key.startsWith(under)) map.delete(key);
  }

  /**
   * Give every directory opened or named its mode, deepest first (a parent
   * is still writable meanwhile). Returns those whose mode it changed.
   */
  async settle(): Promise<string[]> {
    const want = new Map<string, number>();
    for (const [dir, opened] of this.#opened) {
      const mode = await opened.catch(() => null);
      if (mode !== null) want.set(dir, mode);
    }
    for (const [dir, mode] of this.#final) want.set(dir, mode);
    this.#opened.clear();
    this.#final.clear();
    const depth = (p: string) => p.split('/').length;
    const changed: string[] = [];
    for (const dir of [...want.keys()].sort((x, y) => depth(y) - depth(x))) {
      const st = (await this.#inside(dir)) ? await lstat(dir).catch(() => null) : null;
      // a path that is no longer a directory (nor below real directories only) was replaced after
      // it was named: it keeps its own mode, and nothing a link leads to is changed
      if (!st?.isDirectory() || (st.mode & 0o7777) === want.get(dir)) continue;
      await chmod(dir, want.get(dir) as number);
      changed.push(dir);
    }
    return changed;
  }
}
