import { randomBytes } from 'node:crypto';
import type { Dirent, Stats } from 'node:fs';
import {
  chmod,
  copyFile,
  lstat,
  mkdir,
  open,
  readdir,
  readlink,
  rename,
  rm,
  symlink,
  unlink,
  utimes,
} from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fsyncDir } from '../atomic-write.js';
import { TEMP_DIR_NAME } from '../store-layout.js';
import { Limiter } from './limiter.js';

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

/** One way the target differs from the source, as `verify` reports it. */
export interface Difference {
  path: string;
  kind: 'missing' | 'extra' | 'type' | 'content' | 'mode' | 'link';
}

export interface CopyOptions {
  /** fsync each copied file and every changed directory before returning (default true). */
  durable?: boolean;
  concurrency?: number;
  onProgress?: (stats: CopyStats) => void;
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

const sameMtime = (a: Stats, b: Stats) => Math.floor(a.mtimeMs) === Math.floor(b.mtimeMs);

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
  readonly #durable: boolean;
  readonly #limiter: Limiter;
  readonly #onProgress: ((s: CopyStats) => void) | undefined;
  readonly #touchedDirs = new Set<string>();
  readonly stats: CopyStats = emptyStats();

  constructor(source: string, target: string, opts: CopyOptions = {}) {
    this.#source = source;
    this.#target = target;
    this.#tmpDir = join(target, TEMP_DIR_NAME);
    this.#durable = opts.durable ?? true;
    this.#limiter = new Limiter(opts.concurrency ?? 32);
    this.#onProgress = opts.onProgress;
  }

  /** Remove leftovers of an interrupted copy. */
  async clearTemp(): Promise<void> {
    await rm(this.#tmpDir, { recursive: true, force: true });
  }

  /** Make each listed path (relative, "/"-separated) in the target match the source. */
  async copyPaths(paths: Iterable<string>): Promise<CopyStats> {
    await mkdir(this.#tmpDir, { recursive: true });
    // parents first, so a directory replaced by a file (or back) settles in one pass
    const sorted = [...paths].sort((x, y) => x.split('/').length - y.split('/').length || (x < y ? -1 : 1));
    await Promise.all(sorted.map((p) => this.#limiter.run(() => this.#syncPath(p))));
    await this.#finish();
    return this.stats;
  }

  /** Compare the whole tree and copy what differs, delete what the source lacks. */
  async mirrorAll(): Promise<CopyStats> {
    await mkdir(this.#tmpDir, { recursive: true });
    await this.#walk('', true);
    await this.#finish();
    return this.stats;
  }

  /** Compare the whole tree without changing anything. */
  async compare(limit = 1000): Promise<Difference[]> {
    const diffs: Difference[] = [];
    await this.#walk('', false, diffs, limit);
    return diffs;
  }

  async #finish(): Promise<void> {
    await rm(this.#tmpDir, { recursive: true, force: true });
    if (this.#durable) {
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
    await this.#place(rel, src, await lstatOrNull(dst));
  }

  /** Create missing parents in the target, replacing any non-directory in the way. */
  async #ensureParents(rel: string): Promise<void> {
    const parts = rel.split('/').slice(0, -1);
    let dir = this.#target;
    for (const part of parts) {
      dir = join(dir, part);
      const st = await lstatOrNull(dir);
      if (st?.isDirectory()) continue;
      if (st) await this.#remove(dir);
      await mkdir(dir).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'EEXIST') throw err;
      });
      this.#touchedDirs.add(dirname(dir));
      this.stats.dirs++;
    }
  }

  /** Put the source entry at `rel` in the target, given what is there now. */
  async #place(rel: string, src: Stats, dst: Stats | null): Promise<void> {
    const from = join(this.#source, rel);
    const to = join(this.#target, rel);
    if (src.isDirectory()) {
      if (dst && !dst.isDirectory()) await this.#remove(to);
      if (!dst?.isDirectory()) {
        await mkdir(to, { mode: src.mode & 0o7777 });
        this.#touchedDirs.add(dirname(to));
        this.stats.dirs++;
      } else if ((dst.mode & 0o7777) !== (src.mode & 0o7777)) {
        await chmod(to, src.mode & 0o7777);
      }
      return;
    }
    if (!src.isFile() && !src.isSymbolicLink()) return; // sockets, fifos, devices: never published
    if (dst?.isDirectory()) await this.#remove(to);
    const tmp = join(this.#tmpDir, `${randomBytes(8).toString('hex')}`);
    if (src.isSymbolicLink()) {
      await symlink(await readlink(from), tmp);
    } else {
      await copyFile(from, tmp);
      await chmod(tmp, src.mode & 0o7777);
      await utimes(tmp, msMidpoint(src.atimeMs), msMidpoint(src.mtimeMs));
      if (this.#durable) {
        const handle = await open(tmp, 'r');
        await handle.sync().finally(() => handle.close());
      }
      this.stats.bytes += src.size;
    }
    await rename(tmp, to);
    this.#touchedDirs.add(dirname(to));
    this.stats.files++;
    this.#onProgress?.(this.stats);
  }

  async #remove(path: string): Promise<void> {
    await rm(path, { recursive: true, force: true });
    this.#touchedDirs.add(dirname(path));
    this.stats.deleted++;
  }

  /** Walk source and target together; fix differences, or only list them when `fix` is false. */
  async #walk(rel: string, fix: boolean, diffs?: Difference[], limit = Number.POSITIVE_INFINITY): Promise<void> {
    const [srcEntries, dstEntries] = await Promise.all([this.#list(this.#source, rel), this.#list(this.#target, rel)]);
    const subdirs: string[] = [];
    const work: Promise<void>[] = [];
    const report = (path: string, kind: Difference['kind']) => {
      if (diffs && diffs.length < limit) diffs.push({ path, kind });
    };
    for (const [name, srcEnt] of srcEntries) {
      const child = rel === '' ? name : `${rel}/${name}`;
      const dstEnt = dstEntries.get(name);
      if (srcEnt.isDirectory()) {
        if (dstEnt?.isDirectory()) {
          subdirs.push(child);
          continue;
        }
        report(child, dstEnt ? 'type' : 'missing');
        if (fix) {
          work.push(
            this.#limiter.run(async () => {
              const src = await lstatOrNull(join(this.#source, child));
              if (src) await this.#place(child, src, dstEnt ? await lstatOrNull(join(this.#target, child)) : null);
            }),
          );
          subdirs.push(child);
        }
        continue;
      }
      work.push(
        this.#limiter.run(async () => {
          const [src, dst] = await Promise.all([
            lstatOrNull(join(this.#source, child)),
            dstEnt ? lstatOrNull(join(this.#target, child)) : null,
          ]);
          if (!src || (!src.isFile() && !src.isSymbolicLink())) return;
          const kind = await this.#differs(child, src, dst);
          if (kind === null) return;
          report(child, kind);
          if (fix) await this.#place(child, src, dst);
        }),
      );
    }
    for (const [name] of dstEntries) {
      if (srcEntries.has(name)) continue;
      const child = rel === '' ? name : `${rel}/${name}`;
      report(child, 'extra');
      if (fix) work.push(this.#limiter.run(() => this.#remove(join(this.#target, child))));
    }
    await Promise.all(work);
    // directories are walked after this level's work, and not inside the limiter, so nesting cannot deadlock
    await Promise.all(subdirs.map((d) => this.#walk(d, fix, diffs, limit)));
  }

  async #differs(rel: string, src: Stats, dst: Stats | null): Promise<Difference['kind'] | null> {
    if (dst === null) return 'missing';
    if (src.isSymbolicLink() !== dst.isSymbolicLink() || src.isFile() !== dst.isFile()) return 'type';
    if (src.isSymbolicLink()) {
      const [a, b] = await Promise.all([readlink(join(this.#source, rel)), readlink(join(this.#target, rel))]);
      return a === b ? null : 'link';
    }
    if (src.size !== dst.size || !sameMtime(src, dst)) return 'content';
    if ((src.mode & 0o7777) !== (dst.mode & 0o7777)) return 'mode';
    return null;
  }

  async #list(root: string, rel: string): Promise<Map<string, Dirent>> {
    let entries: Dirent[];
    try {
      entries = await this.#limiter.run(() => readdir(join(root, rel), { withFileTypes: true }));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return new Map();
      throw err;
    }
    const map = new Map<string, Dirent>();
    for (const e of entries) if (!(rel === '' && e.name === TEMP_DIR_NAME)) map.set(e.name, e);
    return map;
  }
}

/** Remove a file, ignoring one that is already gone. */
export async function unlinkQuiet(path: string): Promise<void> {
  await unlink(path).catch(() => {});
}
