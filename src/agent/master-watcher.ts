import { type FSWatcher, watch } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import { TEMP_DIR_NAME } from '../store-layout.js';

/** Identity of a master entry right after the write API changed it. */
export function entrySignature(st: { ino: number; size: number; mtimeMs: number } | null): string {
  return st ? `${st.ino}:${st.size}:${Math.floor(st.mtimeMs)}` : 'absent';
}

/**
 * Notices changes that tools make directly in master and reports their paths
 * in small batches. One inotify watch per directory (not per file): memory
 * grows with the number of directories, not files. A directory that appears
 * is watched and its contents reported; changes the write API made itself
 * (recognised by the entry's identity right after the write) are not
 * reported again.
 */
export class MasterWatcher {
  readonly #root: string;
  readonly #own: Map<string, string>;
  readonly #onChanges: (paths: string[]) => void;
  readonly #onError: (err: Error) => void;
  readonly #watchers = new Map<string, FSWatcher>();
  readonly #pending = new Set<string>();
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(
    root: string,
    own: Map<string, string>,
    onChanges: (paths: string[]) => void,
    onError: (err: Error) => void = () => {},
  ) {
    this.#root = root;
    this.#own = own;
    this.#onChanges = onChanges;
    this.#onError = onError;
  }

  /** Resolves once every existing directory is watched. */
  async start(): Promise<void> {
    await this.#watchTree(this.#root, false);
  }

  /** Number of directories watched (one inotify watch each). */
  get directories(): number {
    return this.#watchers.size;
  }

  #rel(path: string): string {
    return relative(this.#root, path).split(sep).join('/');
  }

  /** Watch `dir` and every directory below it; with `report`, report every entry found as changed. */
  async #watchTree(dir: string, report: boolean): Promise<void> {
    if (this.#closed || this.#watchers.has(dir)) return;
    if (this.#rel(dir) === TEMP_DIR_NAME) return;
    let watcher: FSWatcher;
    try {
      watcher = watch(dir, { persistent: false }, (_event, name) => {
        if (name !== null) void this.#seen(join(dir, name.toString()));
      });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return; // gone already
      this.#onError(err as Error);
      return;
    }
    watcher.on('error', () => this.#unwatch(dir));
    this.#watchers.set(dir, watcher);
    let entries: import('node:fs').Dirent[] = [];
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const path = join(dir, e.name);
      if (report) this.#queue(this.#rel(path));
      if (e.isDirectory()) await this.#watchTree(path, report);
    }
  }

  #unwatch(dir: string): void {
    for (const [path, w] of this.#watchers) {
      if (path === dir || path.startsWith(`${dir}${sep}`)) {
        w.close();
        this.#watchers.delete(path);
      }
    }
  }

  async #seen(path: string): Promise<void> {
    const rel = this.#rel(path);
    if (rel === '' || rel.startsWith('..') || rel === TEMP_DIR_NAME || rel.startsWith(`${TEMP_DIR_NAME}/`)) return;
    const st = await lstat(path).catch(() => null);
    if (st?.isDirectory()) {
      // a new directory matters through the files in it; they may predate its watch
      if (!this.#watchers.has(path)) await this.#watchTree(path, true);
      return;
    }
    if (!st && this.#watchers.has(path)) this.#unwatch(path);
    const own = this.#own.get(rel);
    if (own !== undefined && own === entrySignature(st)) {
      this.#own.delete(rel);
      return;
    }
    this.#queue(rel);
  }

  #queue(rel: string): void {
    this.#pending.add(rel);
    this.#timer ??= setTimeout(() => this.#flush(), 50);
  }

  #flush(): void {
    this.#timer = undefined;
    const paths = [...this.#pending];
    this.#pending.clear();
    if (paths.length > 0 && !this.#closed) this.#onChanges(paths);
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const w of this.#watchers.values()) w.close();
    this.#watchers.clear();
  }
}
