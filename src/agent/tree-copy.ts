import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import type { Stats } from 'node:fs';
import { chmod, copyFile, lstat, mkdir, open, readlink, rename, rm, symlink, utimes } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fsyncDir } from '../atomic-write.js';
import { TEMP_DIR_NAME } from '../store-layout.js';
import { type Difference, compareTrees } from './compare-trees.js';
import { Limiter, forEachLimited } from './limiter.js';

export type { Difference };

/** What one copy did. */
export interface CopyStats {
  files: number;
  bytes: number;
  deleted: number;
  dirs: number;
}

export function emptyStats(): CopyStats {
  return { files: 0, bytes: 0, deleted: 0, dirs: 0 };
}

export interface CopyOptions {
  /** fsync each copied file and every changed directory before returning (default true). */
  durable?: boolean;
  concurrency?: number;
  onProgress?: (stats: CopyStats) => void;
}

/** The paths none of whose ancestors is also in the list. */
function topmost(paths: string[]): string[] {
  const set = new Set(paths);
  return paths.filter((p) => {
    const parts = p.split('/');
    for (let i = 1; i < parts.length; i++) if (set.has(parts.slice(0, i).join('/'))) return false;
    return true;
  });
}

/** Copies of more files than this are made durable with one syncfs(2) at the end. */
const PER_FILE_SYNC_LIMIT = 256;

/**
 * Flush the whole file system holding `path`: one syncfs(2), through
 * coreutils' `sync -f` since Node has no binding for it. Far cheaper than an
 * fsync per file when a copy wrote thousands of them.
 */
function syncFileSystem(path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('sync', ['-f', path], (err) => {
      if (err) reject(new Error(`sync -f ${path} failed: ${err.message}`));
      else resolve();
    });
  });
}

/**
 * A time in seconds that lands inside the same millisecond as `ms`. utimes
 * takes a double, whose rounding could carry a time like .344999 into the
 * next millisecond; aiming at the middle of it keeps the millisecond (which
 * ETags and comparisons use) equal to master's.
 */
function msMidpoint(ms: number): number {
  return (Math.floor(ms) + 0.5) / 1000;
}

async function lstatOrNull(path: string): Promise<Stats | null> {
  try {
    return await lstat(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return null;
    throw err;
  }
}

/**
 * Copies master into a slot. Every file lands by rename from the slot's own
 * temp directory, never written in place; mtimes and modes follow master, so
 * an unchanged file keeps its ETag across a swap.
 */
export class TreeCopier {
  readonly #source: string;
  readonly #target: string;
  readonly #tmpDir: string;
  /** Temp names are this plus a counter: unique without a random draw per file. */
  readonly #tmpPrefix: string;
  #tmpCount = 0;
  readonly #durable: boolean;
  /** Sync the whole file system once at the end (large copies) instead of each file as it lands. */
  #syncAtEnd = false;
  readonly #limiter: Limiter;
  readonly #concurrency: number;
  readonly #onProgress: ((s: CopyStats) => void) | undefined;
  readonly #touchedDirs = new Set<string>();
  /** Target directories known to exist during this copy (it is the slot's only writer). */
  readonly #knownDirs = new Set<string>();
  readonly stats: CopyStats = emptyStats();

  constructor(source: string, target: string, opts: CopyOptions = {}) {
    this.#source = source;
    this.#target = target;
    this.#tmpDir = join(target, TEMP_DIR_NAME);
    this.#tmpPrefix = join(this.#tmpDir, randomBytes(8).toString('hex'));
    this.#durable = opts.durable ?? true;
    this.#concurrency = opts.concurrency ?? 32;
    this.#limiter = new Limiter(this.#concurrency);
    this.#onProgress = opts.onProgress;
  }

  /** Remove leftovers of an interrupted copy. */
  async clearTemp(): Promise<void> {
    await rm(this.#tmpDir, { recursive: true, force: true });
  }

  /** Make each listed path (relative, "/"-separated) in the target match the source. */
  async copyPaths(paths: Iterable<string>): Promise<CopyStats> {
    await mkdir(this.#tmpDir, { recursive: true });
    const list = [...paths];
    this.#syncAtEnd ||= list.length > PER_FILE_SYNC_LIMIT;
    // One depth at a time, parents before children: a directory that replaces a
    // file (or the reverse) must settle before anything lands under it, or its
    // removal of what it found could take a child already copied in.
    const levels = new Map<number, string[]>();
    for (const p of list) {
      const depth = p.split('/').length;
      const level = levels.get(depth);
      if (level) level.push(p);
      else levels.set(depth, [p]);
    }
    try {
      for (const depth of [...levels.keys()].sort((x, y) => x - y)) {
        await forEachLimited(levels.get(depth) as string[], this.#concurrency, (p) => this.#syncPath(p));
      }
    } catch (err) {
      await this.clearTemp().catch(() => {}); // a failed copy (a full disk, say) leaves no temp file behind
      throw err;
    }
    await this.#finish();
    return this.stats;
  }

  /** Compare the whole tree and copy what differs, delete what the source lacks. */
  async mirrorAll(): Promise<CopyStats> {
    const diffs = await compareTrees(this.#source, this.#target);
    // Whole directories the target lacks (every directory, on a first copy) go over with cp -a
    // into the temp directory and then one rename each: far fewer round trips than file by file.
    const tops = topmost(diffs.filter((d) => d.kind === 'missing' && d.dir).map((d) => d.path));
    if (tops.length > 0) {
      await mkdir(this.#tmpDir, { recursive: true });
      try {
        await forEachLimited(tops, 2, (top) => this.#copyDirectory(top));
      } catch (err) {
        await this.clearTemp().catch(() => {});
        throw err;
      }
      const under = (p: string) => tops.some((t) => p === t || p.startsWith(`${t}/`));
      for (const d of diffs) {
        if (!under(d.path) || d.dir) continue;
        this.stats.files++;
        this.stats.bytes += d.size ?? 0;
      }
      this.#syncAtEnd = true;
      const rest = diffs.filter((d) => !under(d.path));
      const stats = await this.copyPaths(rest.map((d) => d.path));
      return stats;
    }
    return this.copyPaths(diffs.map((d) => d.path));
  }

  /** Copy a directory the target lacks with `cp -a` into the temp dir, then rename it into place. */
  async #copyDirectory(rel: string): Promise<void> {
    const staging = join(this.#tmpDir, randomBytes(8).toString('hex'));
    await mkdir(staging);
    const name = rel.split('/').at(-1) as string;
    await new Promise<void>((resolve, reject) => {
      execFile('cp', ['-a', '--', join(this.#source, rel), staging], (err, _out, stderr) => {
        if (err) reject(new Error(`cp -a ${rel} failed: ${stderr.trim() || err.message}`));
        else resolve();
      });
    });
    await this.#ensureParents(rel);
    await rename(join(staging, name), join(this.#target, rel));
    await rm(staging, { recursive: true, force: true });
    this.#knownDirs.add(join(this.#target, rel));
    this.#touchedDirs.add(dirname(join(this.#target, rel)));
    this.stats.dirs++;
    this.#onProgress?.(this.stats);
  }

  /** Compare the whole tree without changing anything. */
  compare(limit = 1000): Promise<Difference[]> {
    return compareTrees(this.#source, this.#target, limit);
  }

  async #finish(): Promise<void> {
    await rm(this.#tmpDir, { recursive: true, force: true });
    if (this.#durable && this.#syncAtEnd) {
      await syncFileSystem(this.#target);
    } else if (this.#durable) {
      await Promise.all([...this.#touchedDirs].map((d) => this.#limiter.run(() => fsyncDir(d).catch(() => {}))));
    }
    this.#touchedDirs.clear();
  }

  async #syncPath(rel: string): Promise<void> {
    const src = await lstatOrNull(join(this.#source, rel));
    const dst = join(this.#target, rel);
    if (src === null) {
      if (await lstatOrNull(dst)) await this.#remove(dst);
      return;
    }
    await this.#ensureParents(rel);
    await this.#place(rel, src);
  }

  /** Create missing parents in the target, replacing any non-directory in the way. */
  async #ensureParents(rel: string): Promise<void> {
    const parts = rel.split('/').slice(0, -1);
    let dir = this.#target;
    for (const part of parts) {
      dir = join(dir, part);
      if (this.#knownDirs.has(dir)) continue;
      const st = await lstatOrNull(dir);
      if (st?.isDirectory()) {
        this.#knownDirs.add(dir);
        continue;
      }
      if (st) await this.#remove(dir);
      await mkdir(dir).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'EEXIST') throw err;
      });
      this.#knownDirs.add(dir);
      this.#touchedDirs.add(dirname(dir));
      this.stats.dirs++;
    }
  }

  /**
   * Put the source entry at `rel` in the target. Only a directory looks at
   * what is there first; a file or link replaces it by rename.
   */
  async #place(rel: string, src: Stats): Promise<void> {
    const from = join(this.#source, rel);
    const to = join(this.#target, rel);
    if (src.isDirectory()) {
      const dst = await lstatOrNull(to);
      if (dst && !dst.isDirectory()) await this.#remove(to);
      const mode = src.mode & 0o7777;
      if (!dst?.isDirectory()) {
        // EEXIST: the same path listed twice
        const made = await mkdir(to, { mode }).then(
          () => true,
          (err: NodeJS.ErrnoException) => {
            if (err.code !== 'EEXIST') throw err;
            return false;
          },
        );
        if (made) {
          this.#touchedDirs.add(dirname(to));
          this.stats.dirs++;
        } else {
          await chmod(to, mode);
        }
      } else if ((dst.mode & 0o7777) !== mode) {
        await chmod(to, mode);
      }
      this.#knownDirs.add(to);
      return;
    }
    if (!src.isFile() && !src.isSymbolicLink()) return; // sockets, fifos, devices: never published
    const tmp = `${this.#tmpPrefix}.${this.#tmpCount++}`;
    if (src.isSymbolicLink()) {
      await symlink(await readlink(from), tmp);
    } else {
      await copyFile(from, tmp); // libuv's copyfile also gives the copy the source's mode
      await utimes(tmp, msMidpoint(src.atimeMs), msMidpoint(src.mtimeMs));
      if (this.#durable && !this.#syncAtEnd) {
        const handle = await open(tmp, 'r');
        await handle.sync().finally(() => handle.close());
      }
      this.stats.bytes += src.size;
    }
    await rename(tmp, to).catch(async (err: NodeJS.ErrnoException) => {
      // a directory where the file goes: rename cannot replace it, so it goes first
      if (err.code !== 'EISDIR' && err.code !== 'ENOTEMPTY' && err.code !== 'EEXIST') throw err;
      await this.#remove(to);
      await rename(tmp, to);
    });
    this.#touchedDirs.add(dirname(to));
    this.stats.files++;
    this.#onProgress?.(this.stats);
  }

  async #remove(path: string): Promise<void> {
    await rm(path, { recursive: true, force: true });
    for (const known of this.#knownDirs)
      if (known === path || known.startsWith(`${path}/`)) this.#knownDirs.delete(known);
    this.#touchedDirs.add(dirname(path));
    this.stats.deleted++;
  }
}
