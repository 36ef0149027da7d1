import { type Dirent, type Stats, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { TEMP_DIR_NAME } from '../store-layout.js';
import { lstatOrNullSync } from './lstat-or-null.js';
import { WALK_THREADS } from './walk-threads.js';

/** One way the target differs from the source. */
export interface Difference {
  path: string;
  kind: 'missing' | 'extra' | 'type' | 'content' | 'mode' | 'link';
  /** For a missing entry: whether it is a directory, and a file's size. */
  dir?: boolean;
  size?: number;
}

function list(root: string, rel: string): Map<string, Dirent> {
  let entries: Dirent[];
  try {
    entries = readdirSync(join(root, rel), { withFileTypes: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'ENAMETOOLONG') return new Map();
    throw err;
  }
  const map = new Map<string, Dirent>();
  for (const e of entries) if (!(rel === '' && e.name === TEMP_DIR_NAME)) map.set(e.name, e);
  return map;
}

const publishable = (st: Stats) => st.isFile() || st.isSymbolicLink() || st.isDirectory();

/**
 * Every difference between two trees, by size, mtime (to the millisecond),
 * mode, type and link target: what `verify` reports and what a full sync
 * copies. Entries under a directory missing from the target are listed one by
 * one, parents before children. Synchronous on purpose: run it in a worker
 * (compareTrees), where blocking calls are the fastest way through a tree.
 */
export function compareTreesSync(
  source: string,
  target: string,
  limit = Number.POSITIVE_INFINITY,
  part: { index: number; of: number } = { index: 0, of: 1 },
  under: readonly string[] = [''],
): Difference[] {
  const diffs: Difference[] = [];
  const report = (path: string, kind: Difference['kind']) => {
    if (diffs.length < limit) diffs.push({ path, kind });
  };
  const missing = (path: string, st: Stats) => {
    if (diffs.length < limit)
      diffs.push(st.isDirectory() ? { path, kind: 'missing', dir: true } : { path, kind: 'missing', size: st.size });
  };
  const allMissing = (rel: string) => {
    for (const name of list(source, rel).keys()) {
      const child = rel === '' ? name : `${rel}/${name}`;
      const st = lstatOrNullSync(join(source, child));
      if (!st || !publishable(st)) continue;
      missing(child, st);
      if (st.isDirectory()) allMissing(child);
    }
  };
  /** At the top level, each part takes every `of`-th directory; part 0 also takes the rest. */
  const mine = (rel: string, name: string, isDir: boolean) => {
    if (rel !== '' || part.of === 1) return true;
    if (!isDir) return part.index === 0;
    let h = 0;
    for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) | 0;
    return Math.abs(h) % part.of === part.index;
  };
  const walk = (rel: string) => {
    const src = list(source, rel);
    const dst = list(target, rel);
    for (const [name, srcEnt] of src) {
      if (diffs.length >= limit) return;
      if (!mine(rel, name, srcEnt.isDirectory())) continue;
      const child = rel === '' ? name : `${rel}/${name}`;
      const dstEnt = dst.get(name);
      if (srcEnt.isDirectory() && dstEnt?.isDirectory()) {
        walk(child);
        continue;
      }
      const s = lstatOrNullSync(join(source, child));
      if (!s || !publishable(s)) {
        if (dstEnt) report(child, 'extra'); // never published: nothing may stand there in a copy
        continue;
      }
      const d = dstEnt ? lstatOrNullSync(join(target, child)) : null;
      if (d === null) {
        missing(child, s);
        if (s.isDirectory()) allMissing(child);
        continue;
      }
      if (
        s.isDirectory() !== d.isDirectory() ||
        s.isSymbolicLink() !== d.isSymbolicLink() ||
        s.isFile() !== d.isFile()
      ) {
        report(child, 'type');
        if (s.isDirectory()) allMissing(child);
      } else if (s.isSymbolicLink()) {
        if (readlinkSync(join(source, child)) !== readlinkSync(join(target, child))) report(child, 'link');
      } else if (s.size !== d.size || Math.floor(s.mtimeMs) !== Math.floor(d.mtimeMs)) {
        report(child, 'content');
      } else if ((s.mode & 0o7777) !== (d.mode & 0o7777)) {
        report(child, 'mode');
      }
    }
    for (const [name, dstEnt] of dst) {
      if (!src.has(name) && mine(rel, name, dstEnt.isDirectory()))
        report(rel === '' ? name : `${rel}/${name}`, 'extra');
    }
  };
  for (const rel of under) walk(rel);
  return diffs;
}

export interface CompareOptions {
  limit?: number;
  workers?: number;
  /**
   * Compare only below these directories (relative, "/"-separated; each must
   * be a directory in both trees), shared among the workers. Default: the whole tree.
   */
  under?: readonly string[];
}

/**
 * compareTreesSync in worker threads, so the agent keeps answering while it
 * walks, with the top-level directories (or the `under` list) shared among
 * `workers` of them (default `WALK_THREADS`).
 */
export async function compareTrees(source: string, target: string, opts: CompareOptions = {}): Promise<Difference[]> {
  const limit = opts.limit ?? Number.POSITIVE_INFINITY;
  const under = opts.under;
  const workers = Math.min(opts.workers ?? WALK_THREADS, under?.length ?? 4);
  if (under?.length === 0) return [];
  const parts = await Promise.all(
    Array.from(
      { length: workers },
      (_, index) =>
        new Promise<Difference[]>((resolve, reject) => {
          const mine = under?.filter((_, i) => i % workers === index);
          const worker = new Worker(new URL('./compare-worker.js', import.meta.url), {
            workerData: under
              ? { source, target, limit: Number.isFinite(limit) ? limit : -1, index: 0, of: 1, under: mine }
              : { source, target, limit: Number.isFinite(limit) ? limit : -1, index, of: workers },
          });
          worker.once('message', (diffs: Difference[]) => resolve(diffs));
          worker.once('error', reject);
          worker.once('exit', (code) => {
            if (code !== 0) reject(new Error(`tree comparison worker exited with ${code}`));
          });
        }),
    ),
  );
  const all = parts.flat();
  return Number.isFinite(limit) ? all.slice(0, limit) : all;
}
