import { isNothingThere } from '../../core/nothing-there.js';
import { type FSWatcher, readFileSync, watch } from 'node:fs';
import { lstat, mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { basename, join, relative, sep } from 'node:path';
import { isDenied } from '../../core/nothing-there.js';
import { RESERVED_ROOT_NAMES, isReservedPath, isReservedRootName } from '../../store/store-layout.js';
import { forEachLimited } from '../../core/limiter.js';
import { walkPool } from '../../tree/walk-pool.js';
import { directoryIdentity } from '../../tree/directory-identity.js';

/** Identity of a master entry right after the write API changed it. */
export function entrySignature(st: { ino: number; size: number; mtimeMs: number } | null): string {
  return st ? `${st.ino}:${st.size}:${Math.floor(st.mtimeMs)}` : 'absent';
}

/**
 * The kernel drops inotify events past this many queued, and libuv (so Node)
 * says nothing when it does. libuv reads the whole queue in one go, so a read
 * that delivers half this many events may have followed an overflow.
 */
function overflowSuspicionThreshold(): number {
  try {
    const max = Number.parseInt(readFileSync('/proc/sys/fs/inotify/max_queued_events', 'utf8'), 10);
    if (Number.isFinite(max) && max > 0) return Math.max(1, Math.floor(max / 2));
  } catch {
    // not Linux, or /proc not mounted: fall back to the kernel's default
  }
  return 8192;
}

/** Directories looked at and watched at once while walking a tree (each is an lstat and a readdir). */
const WATCH_CONCURRENCY = 32;

export interface MasterWatcherOptions {
  root: string;
  /** Entries the write API changed itself, by path, with their identity right after the change. */
  own: Map<string, string>;
  /** Paths seen changed; the promise settles once they are recorded. */
  onChanges: (paths: string[]) => Promise<void> | void;
  /** Changes may have been missed from now on (lost events, a directory that cannot be watched). */
  onIncomplete: (reason: string) => void;
  /** A directory of the agent's own, outside master, for the fence files of `settle()`. */
  fenceDir: string;
}

interface Watch {
  watcher: FSWatcher;
  identity: string;
}

/**
 * Notices changes that tools make directly in master and reports their paths
 * in small batches. One inotify watch per directory (not per file): memory
 * grows with the number of directories, not files.
 *
 * A path that comes to name another directory (created, renamed in, replaced)
 * is reported itself, and its tree watched and reported afresh: a copy of a
 * directory path makes the whole directory match. Whatever may make the
 * reports incomplete (an overflowing event queue, a directory that cannot be
 * watched) is said through `onIncomplete`, and `settle()` says whether every
 * change made before it has been reported.
 */
export class MasterWatcher {
  readonly #opts: MasterWatcherOptions;
  readonly #watches = new Map<string, Watch>();
  /** Directories that could not be watched: tried again at each settle(). */
  readonly #unwatchable = new Set<string>();
  readonly #pending = new Set<string>();
  /** Lookups and directory walks started by events and not finished yet. */
  readonly #inflight = new Set<Promise<void>>();
  readonly #overflowAt = overflowSuspicionThreshold();
  /** Whether some directory of master is not watched now (its changes are seen only by comparing). */
  get degraded(): boolean {
    return this.#unwatchable.size > 0;
  }
  #eventsThisTick = 0;
  #fence: FSWatcher | undefined;
  readonly #fenceWaiters = new Map<string, (arrived: boolean) => void>();
  /** The recording of the last batch of reports: settle() waits for it. */
  #recording: Promise<void> = Promise.resolve();
  #fenceCount = 0;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(opts: MasterWatcherOptions) {
    this.#opts = opts;
  }

  /** Resolves once every existing directory is watched. */
  async start(): Promise<void> {
    await mkdir(this.#opts.fenceDir, { recursive: true });
    await rm(this.#opts.fenceDir, { recursive: true, force: true });
    await mkdir(this.#opts.fenceDir, { recursive: true });
    this.#fence = watch(this.#opts.fenceDir, { persistent: false }, (_event, name) => {
      this.#countEvent();
      const waiter = name === null ? undefined : this.#fenceWaiters.get(name.toString());
      waiter?.(true);
    });
    this.#fence.on('error', () => {});
    await this.#watchAll(this.#opts.root);
  }

  /** Entries of master its listing at start found (files, links, directories): a size known for free. */
  entriesAtStart = 0;

  /** Number of directories watched (one inotify watch each). */
  get directories(): number {
    return this.#watches.size;
  }

  /**
   * Wait until every change made in master before this call has been
   * reported and recorded. A fence file written in the agent's own directory
   * travels through the same kernel event queue as master's events, behind
   * them: once its event arrives, every earlier event has been delivered.
   * False when that cannot be vouched for (a directory is still unwatchable,
   * the fence event was lost): the caller must then compare trees.
   */
  async settle(timeoutMs = 5000): Promise<boolean> {
    if (this.#closed) return false;
    for (const dir of [...this.#unwatchable]) {
      this.#unwatchable.delete(dir);
      await this.#watchTree(dir, true);
    }
    const name = `fence-${process.pid}-${this.#fenceCount++}`;
    const arrived = new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      this.#fenceWaiters.set(name, (ok) => {
        clearTimeout(timer);
        resolve(ok);
      });
    });
    const file = join(this.#opts.fenceDir, name);
    let fenced = false;
    try {
      await writeFile(file, '');
      fenced = await arrived;
    } finally {
      this.#fenceWaiters.delete(name);
      await rm(file, { force: true });
    }
    while (this.#inflight.size > 0) await Promise.all(this.#inflight);
    this.#flush();
    await this.#recording;
    return fenced && this.#unwatchable.size === 0;
  }

  #rel(path: string): string {
    return relative(this.#opts.root, path).split(sep).join('/');
  }

  #track(work: Promise<void>): void {
    this.#inflight.add(work);
    void work.finally(() => this.#inflight.delete(work));
  }

  /** Every event counts towards the overflow check: the kernel's queue holds them all alike. */
  #countEvent(): void {
    if (this.#eventsThisTick++ === 0) setImmediate(() => (this.#eventsThisTick = 0));
    if (this.#eventsThisTick === this.#overflowAt) {
      this.#opts.onIncomplete(
        `${this.#overflowAt} or more file system events arrived at once: the kernel's inotify queue may have overflowed and dropped some`,
      );
    }
  }

  /**
   * Watch `dir` and every directory below it; with `report`, report every
   * entry found as changed. One depth at a time (a parent is watched before
   * its children are listed), `WATCH_CONCURRENCY` directories at once: a
   * tree of tens of thousands of directories is watched in seconds, and
   * only one level's names are held meanwhile.
   */
  async #watchTree(dir: string, report: boolean): Promise<void> {
    for (let level = [dir]; level.length > 0; ) {
      const next: string[] = [];
      await forEachLimited(level, WATCH_CONCURRENCY, async (d) => {
        for (const sub of await this.#watchDirectory(d, report)) next.push(sub);
      });
      level = next;
    }
  }

  /** Watch one directory, then list it; returns its subdirectories. */
  async #watchDirectory(dir: string, report: boolean): Promise<string[]> {
    if (this.#closed || this.#watches.has(dir)) return [];
    if (isReservedRootName(this.#rel(dir))) return [];
    // The identity is read before the watch is made: if the path is swapped in between, the
    // event of that swap finds another identity and watches again, never the reverse.
    const st = await lstat(dir).catch(() => null);
    if (!st?.isDirectory() || this.#closed || this.#watches.has(dir)) return [];
    if (!this.#addWatch(dir, directoryIdentity(st))) return [];
    let entries: import('node:fs').Dirent[] = [];
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch {
      return [];
    }
    const subdirs: string[] = [];
    for (const e of entries) {
      const path = join(dir, e.name);
      if (report) this.#queue(this.#rel(path));
      if (e.isDirectory()) subdirs.push(path);
    }
    return subdirs;
  }

  /**
   * Watch every directory of master at start, a level at a time: the walk
   * threads list a level's directories (and read each subdirectory's
   * identity), then this thread watches the subdirectories before they are
   * listed in turn. The same order as #watchDirectory (identity, watch,
   * listing), without a hop through the thread pool per call: at start the
   * tree may hold tens of thousands of directories.
   */
  async #watchAll(root: string): Promise<void> {
    const st = await lstat(root).catch(() => null);
    if (!st?.isDirectory()) return;
    let level: [string, string][] = [[root, directoryIdentity(st)]];
    while (level.length > 0 && !this.#closed) {
      const watched = level.filter(([dir, identity]) => !this.#watches.has(dir) && this.#addWatch(dir, identity));
      const next: [string, string][] = [];
      await walkPool.run<string, [string, string][]>(
        'list',
        { skip: RESERVED_ROOT_NAMES.map((name) => join(root, name)) },
        watched.map(([dir]) => dir),
        (parts) => {
          for (const part of parts) for (const sub of part) next.push(sub);
          return !this.#closed;
        },
        (entries) => {
          this.entriesAtStart += entries;
        },
      );
      level = next;
    }
  }

  /** Watch `dir`, known by `identity`; false when it cannot be (said through onIncomplete). */
  #addWatch(dir: string, identity: string): boolean {
    const rel = this.#rel(dir);
    let watcher: FSWatcher;
    try {
      watcher = watch(dir, { persistent: false }, (_event, name) => {
        this.#countEvent();
        if (name === null) return;
        const entry = name.toString();
        this.#track(this.#seen(join(dir, entry)));
        // An event about the watched directory itself carries its own name: look at it too.
        if (entry === basename(dir)) this.#track(this.#seen(dir));
      });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // gone already, or too long a path for any call (so for the copy too: it is never published)
      if (isNothingThere(err)) return false;
      // a directory the agent may not read: nothing in it can be copied either (each copy leaves
      // it as it is, and reports it), so no change in it can be missed; the watch of its parent
      // sees its mode change, and it is watched then
      if (isDenied(err)) return false;
      this.#unwatchable.add(dir);
      this.#opts.onIncomplete(`cannot watch directory "${rel || '.'}" of master (${code ?? (err as Error).message})`);
      return false;
    }
    watcher.on('error', (err) => {
      this.#unwatch(dir);
      this.#opts.onIncomplete(`watch on "${rel || '.'}" failed (${err.message})`);
      this.#track(this.#seen(dir));
    });
    this.#watches.set(dir, { watcher, identity });
    return true;
  }

  #unwatch(dir: string): void {
    for (const [path, w] of this.#watches) {
      if (path === dir || path.startsWith(`${dir}${sep}`)) {
        w.watcher.close();
        this.#watches.delete(path);
      }
    }
    for (const path of this.#unwatchable)
      if (path === dir || path.startsWith(`${dir}${sep}`)) this.#unwatchable.delete(path);
  }

  async #seen(path: string): Promise<void> {
    const rel = this.#rel(path);
    if (rel === '' || rel.startsWith('..') || isReservedPath(rel)) return;
    const st = await lstat(path).catch(() => null);
    const watched = this.#watches.get(path);
    if (st?.isDirectory()) {
      // A directory is reported as a whole (its copy makes the whole tree match); a path that
      // now names another directory than the one watched is watched and walked afresh.
      this.#queue(rel);
      if (watched && watched.identity === directoryIdentity(st)) return;
      if (watched) this.#unwatch(path);
      await this.#watchTree(path, true);
      return;
    }
    if (watched || this.#unwatchable.has(path)) this.#unwatch(path);
    const own = this.#opts.own.get(rel);
    if (own !== undefined && own === entrySignature(st)) {
      this.#opts.own.delete(rel);
      return;
    }
    this.#queue(rel);
  }

  #queue(rel: string): void {
    this.#pending.add(rel);
    this.#timer ??= setTimeout(() => this.#flush(), 50);
  }

  /** Hand the reports gathered so far to be recorded, after any batch handed over before. */
  #flush(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    const paths = [...this.#pending];
    this.#pending.clear();
    if (paths.length === 0 || this.#closed) return;
    const record = async () => {
      await this.#opts.onChanges(paths);
    };
    this.#recording = this.#recording.then(record, record);
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const w of this.#watches.values()) w.watcher.close();
    this.#watches.clear();
    this.#fence?.close();
    for (const resolve of this.#fenceWaiters.values()) resolve(false);
  }
}
