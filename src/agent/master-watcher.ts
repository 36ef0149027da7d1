import { lstat } from 'node:fs/promises';
import { relative, sep } from 'node:path';
import { type FSWatcher, watch } from 'chokidar';
import { TEMP_DIR_NAME } from '../store-layout.js';

/** Identity of a master entry right after the write API changed it. */
export function entrySignature(st: { ino: number; size: number; mtimeMs: number } | null): string {
  return st ? `${st.ino}:${st.size}:${Math.floor(st.mtimeMs)}` : 'absent';
}

/**
 * Notices changes that tools make directly in master and reports their paths
 * in small batches. Changes the write API made itself (recognised by the
 * entry's identity right after the write) are not reported again.
 */
export class MasterWatcher {
  readonly #root: string;
  readonly #own: Map<string, string>;
  readonly #onChanges: (paths: string[]) => void;
  readonly #pending = new Set<string>();
  #watcher: FSWatcher | undefined;
  #timer: NodeJS.Timeout | undefined;

  constructor(root: string, own: Map<string, string>, onChanges: (paths: string[]) => void) {
    this.#root = root;
    this.#own = own;
    this.#onChanges = onChanges;
  }

  async start(): Promise<void> {
    const tmp = `${this.#root}${sep}${TEMP_DIR_NAME}`;
    this.#watcher = watch(this.#root, {
      ignoreInitial: true,
      followSymlinks: false,
      ignored: (p: string) => p === tmp || p.startsWith(`${tmp}${sep}`),
    });
    // A new directory matters only through the files in it, which have their own
    // events; the write API's parent directories would otherwise count as changes.
    this.#watcher.on('all', (event, path) => {
      if (event !== 'addDir') void this.#seen(path);
    });
    await new Promise<void>((resolve) => this.#watcher?.once('ready', () => resolve()));
  }

  async #seen(path: string): Promise<void> {
    const rel = relative(this.#root, path).split(sep).join('/');
    if (rel === '' || rel.startsWith('..')) return;
    const own = this.#own.get(rel);
    if (own !== undefined) {
      const now = entrySignature(await lstat(path).catch(() => null));
      if (now === own) {
        this.#own.delete(rel);
        return;
      }
    }
    this.#pending.add(rel);
    this.#timer ??= setTimeout(() => this.#flush(), 50);
  }

  #flush(): void {
    this.#timer = undefined;
    const paths = [...this.#pending];
    this.#pending.clear();
    if (paths.length > 0) this.#onChanges(paths);
  }

  async close(): Promise<void> {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#watcher?.close();
  }
}
