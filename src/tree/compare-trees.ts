import { isDenied, isNothingThere } from '../core/nothing-there.js';
import { type Dirent, type Stats, accessSync, chmodSync, constants, readdirSync, readlinkSync } from 'node:fs';
import { hasOriginalTime } from '../store/content-index.js';
import { isReservedRootName } from '../store/store-layout.js';
import { treeMode } from './tree-mode.js';
import { variantOf } from './compressible.js';
import { lstatOrNullSync } from '../core/lstat-or-null.js';
import { planUnits, type WalkUnit } from './walk-units.js';
import { WALK_THREADS } from './walk-threads.js';
import { walkPool } from './walk-pool.js';
import { reportWalked } from './walk-report.js';

/**
 * One way the target differs from the source. `unreadable`: an entry of the
 * source this process may not read (a mode that shuts it out); what the
 * target holds there is not compared, and a copy leaves it as it is.
 */
export interface Difference {
  path: string;
  kind: 'missing' | 'extra' | 'type' | 'content' | 'mode' | 'link' | 'unreadable';
  /** For a missing entry: whether it is a directory, and a file's size. */
  dir?: boolean;
  size?: number;
}

export interface CompareSyncOptions {
  limit?: number;
  /**
   * Report a directory missing from the target once, not each entry below it
   * (a copy of a directory path copies its tree). Default false: `verify`
   * lists every entry.
   */
  missingDirsWhole?: boolean;
  /**
   * The target is a copy this process owns and is about to repair (a full
   * copy): a directory of it whose mode shuts its owner out (drift: an
   * operator's chmod) is given owner read and search before it is listed. Default false: `verify`
   * changes nothing.
   */
  openTarget?: boolean;
  /**
   * The target holds precompressed variants the agent made (derive-variants.ts):
   * a file `X.br` or `X.gz` of the target beside a file `X` of the source,
   * where the source has no such sibling, is the agent's and no difference.
   * Default false: every entry the source lacks is extra.
   */
  variants?: boolean;
}

/**
 * Whether the target's variant `name` (in the target directory `dir`) has
 * the mtime of its original there (`originalMs`, floored; undefined when the
 * target has no such file), to the millisecond, as every variant the agent
 * makes has: one with another time was written over in place (drift) and
 * holds bytes its record does not name. One lstat: the original's status is
 * the compare's own.
 */
function madeVariantTimeHolds(dir: string, name: string, original: Stats | undefined): boolean {
  if (original === undefined) return true; // no original in the target (yet): the copy remakes both
  const variant = lstatOrNullSync(`${dir}/${name}`);
  return variant === null || hasOriginalTime(variant, original); // gone meanwhile: nothing to say
}

/** What an owner needs of a directory to list it and look below it: read and search. */
const LIST = 0o500;

/**
 * Give each directory of `target` from its root down to `rel` (itself
 * included) its owner's read and search where its mode denies them, never
 * through a link: a copy opens a directory it writes into the same way.
 */
function openTargetSync(target: string, rel: string): void {
  const parts = rel === '' ? [] : rel.split('/');
  for (let i = 0; i <= parts.length; i++) {
    const path = i === 0 ? target : `${target}/${parts.slice(0, i).join('/')}`;
    const st = lstatOrNullSync(path);
    if (!st?.isDirectory()) return;
    // only what listing needs: a directory's mode as a copy gives it always has these bits, so one
    // opened here differs from its source's before and after, whichever the comparison saw
    if ((st.mode & LIST) !== LIST) chmodSync(path, (st.mode & 0o7777) | LIST);
  }
}

function list(root: string, rel: string): Map<string, Dirent> {
  let entries: Dirent[];
  try {
    entries = readdirSync(rel === '' ? root : `${root}/${rel}`, { withFileTypes: true });
  } catch (err) {
    if (isNothingThere(err)) return new Map();
    throw err;
  }
  const map = new Map<string, Dirent>();
  for (const e of entries) if (!(rel === '' && isReservedRootName(e.name))) map.set(e.name, e);
  return map;
}

const isDirectory = (path: string) => lstatOrNullSync(path)?.isDirectory() === true;

/** The entries of the source's directory `rel`; null when this process may not read it. */
function listSource(source: string, rel: string): Map<string, Dirent> | null {
  try {
    return list(source, rel);
  } catch (err) {
    if (isDenied(err)) return null;
    throw err;
  }
}

/**
 * Whether this process may read the source entry at `path` (of status
 * `st`) as a copy must: a file's content, a directory's entries. A link is
 * read by readlink, which takes no permission. Asked only of entries found
 * different: one call each, not one per entry walked.
 */
function readable(path: string, st: Stats): boolean {
  if (st.isSymbolicLink()) return true;
  try {
    accessSync(path, st.isDirectory() ? constants.R_OK | constants.X_OK : constants.R_OK);
    return true;
  } catch (err) {
    // gone or swapped meanwhile: the copy looks again and finds out
    return !isDenied(err);
  }
}

/** The source entry's status; 'denied' when a parent's mode keeps this process from looking. */
function lstatSource(path: string): Stats | null | 'denied' {
  try {
    return lstatOrNullSync(path);
  } catch (err) {
    if (isDenied(err)) return 'denied';
    throw err;
  }
}

const publishable = (st: Stats) => st.isFile() || st.isSymbolicLink() || st.isDirectory();

/**
 * The differences between two trees within one unit of a walk: a whole
 * subtree, or one directory's own entries (its subdirectories being units
 * of their own). By size, mtime (to the millisecond), mode, type and link
 * target: what `verify` reports and what a full sync copies. Entries under a
 * directory missing from the target are listed one by one, parents before
 * children, unless `missingDirsWhole`. Synchronous on purpose: run in worker
 * threads (compareTrees), where blocking calls are the fastest way through a
 * tree.
 */
export function compareUnitSync(
  source: string,
  target: string,
  unit: WalkUnit,
  opts: CompareSyncOptions = {},
): Difference[] {
  const limit = opts.limit ?? Number.POSITIVE_INFINITY;
  const diffs: Difference[] = [];
  const at = (root: string, rel: string) => (rel === '' ? root : `${root}/${rel}`);
  const report = (path: string, kind: Difference['kind']) => {
    if (diffs.length < limit) diffs.push({ path, kind });
  };
  const missing = (path: string, st: Stats) => {
    if (diffs.length < limit)
      diffs.push(st.isDirectory() ? { path, kind: 'missing', dir: true } : { path, kind: 'missing', size: st.size });
  };
  const allMissing = (rel: string) => {
    if (opts.missingDirsWhole) return;
    const names = listSource(source, rel);
    if (names === null) {
      report(rel, 'unreadable');
      return;
    }
    reportWalked(names.size);
    for (const name of names.keys()) {
      const child = `${rel}/${name}`;
      const st = lstatSource(at(source, child));
      if (st === 'denied') {
        report(child, 'unreadable');
        continue;
      }
      if (!st || !publishable(st)) continue;
      if (!readable(at(source, child), st)) {
        report(child, 'unreadable');
        continue;
      }
      missing(child, st);
      if (st.isDirectory()) allMissing(child);
    }
  };
  const skip = new Set(unit.deep ? [] : unit.subunits);
  const walk = (rel: string, deep: boolean) => {
    const src = listSource(source, rel);
    if (src === null) {
      // what the target holds below is left as it is: nothing can be said of it
      report(rel, 'unreadable');
      return;
    }
    if (opts.openTarget) openTargetSync(target, rel);
    const dst = list(target, rel);
    /** The target's files' status, where variants are compared: their made variants must have their times. */
    const fileStats = new Map<string, Stats>();
    reportWalked(src.size);
    for (const [name, srcEnt] of src) {
      if (diffs.length >= limit) return;
      const child = rel === '' ? name : `${rel}/${name}`;
      const dstEnt = dst.get(name);
      if (srcEnt.isDirectory() && dstEnt?.isDirectory()) {
        const s = lstatSource(at(source, child));
        const d = lstatOrNullSync(at(target, child));
        if (s === 'denied') {
          report(child, 'unreadable');
          continue;
        }
        if (s?.isDirectory() && d?.isDirectory() && treeMode(s.mode, true) !== (d.mode & 0o7777)) {
          // a directory whose mode shuts this process out keeps its copy as it is (mode included)
          if (!readable(at(source, child), s)) {
            report(child, 'unreadable');
            continue;
          }
          report(child, 'mode');
        }
        // a subdirectory that is a unit of its own is walked by whoever draws it
        if (deep || !skip.has(name)) walk(child, true);
        continue;
      }
      const s = lstatSource(at(source, child));
      if (s === 'denied') {
        report(child, 'unreadable');
        continue;
      }
      if (!s || !publishable(s)) {
        if (dstEnt) report(child, 'extra'); // never published: nothing may stand there in a copy
        continue;
      }
      const d = dstEnt ? lstatOrNullSync(at(target, child)) : null;
      if (opts.variants && d?.isFile()) fileStats.set(name, d);
      /** Report a difference, or that the source entry cannot be read to make it good. */
      const differs = (kind: Difference['kind']): boolean => {
        const ok = readable(at(source, child), s);
        report(child, ok ? kind : 'unreadable');
        return ok;
      };
      if (d === null) {
        if (!readable(at(source, child), s)) {
          report(child, 'unreadable');
          continue;
        }
        missing(child, s);
        if (s.isDirectory()) allMissing(child);
        continue;
      }
      if (
        s.isDirectory() !== d.isDirectory() ||
        s.isSymbolicLink() !== d.isSymbolicLink() ||
        s.isFile() !== d.isFile()
      ) {
        if (differs('type') && s.isDirectory()) allMissing(child);
      } else if (s.isSymbolicLink()) {
        const was = linkTarget(at(source, child));
        // a link gone or replaced since it was listed (a writer racing the walk) differs: the copy looks again
        if (was === null || was !== linkTarget(at(target, child))) report(child, 'link');
      } else if (s.size !== d.size || Math.floor(s.mtimeMs) !== Math.floor(d.mtimeMs)) {
        differs('content');
      } else if (treeMode(s.mode, s.isDirectory()) !== (d.mode & 0o7777)) {
        differs('mode');
      }
    }
    for (const [name, dstEnt] of dst) {
      if (src.has(name)) continue;
      if (opts.variants && dstEnt.isFile()) {
        const v = variantOf(name);
        // a variant the agent made of the file beside it: no difference while it has that file's time
        // (the agent gives it so); one rewritten in place since has its own, and goes, to be made again
        if (v && src.get(v.base)?.isFile() && madeVariantTimeHolds(at(target, rel), name, fileStats.get(v.base)))
          continue;
      }
      report(rel === '' ? name : `${rel}/${name}`, 'extra');
    }
  };
  // A unit below the walk's roots is compared only where it is a directory in both trees:
  // otherwise its parent's unit reports it (missing, or of another type).
  if (opts.openTarget) openTargetSync(target, unit.rel);
  if (!unit.root && !(isDirectory(at(source, unit.rel)) && isDirectory(at(target, unit.rel)))) return diffs;
  walk(unit.rel, unit.deep);
  return diffs;
}

/** Every difference between two trees, in this thread (tests, and small trees); a number is a limit. */
export function compareTreesSync(source: string, target: string, opts: CompareSyncOptions | number = {}): Difference[] {
  const options = typeof opts === 'number' ? { limit: opts } : opts;
  return compareUnitSync(source, target, { rel: '', deep: true, root: true }, options);
}

/** What a compare unit needs besides itself (sent to the walk threads). */
export interface CompareContext {
  source: string;
  target: string;
  opts: CompareSyncOptions;
}

export interface CompareOptions extends CompareSyncOptions {
  /**
   * Compare only below these directories (relative, "/"-separated; each must
   * be a directory in both trees). Default: the whole tree.
   */
  under?: readonly string[];
  /** Entries of the source looked at since the last call, about every 100 ms per thread. */
  onWalked?: (entries: number) => void;
}

/**
 * Every difference between two trees, walked in the walk pool's threads so the agent keeps answering meanwhile. The tree is cut
 * into units (planUnits) that the workers draw as they go, so its shape
 * (one huge directory beside many small ones, a single top directory) does
 * not leave a thread idle.
 */
export async function compareTrees(source: string, target: string, opts: CompareOptions = {}): Promise<Difference[]> {
  const limit = opts.limit ?? Number.POSITIVE_INFINITY;
  const roots = opts.under ?? [''];
  if (roots.length === 0) return [];
  const units = planUnits(source, roots, WALK_THREADS);
  const all: Difference[] = [];
  const context: CompareContext = {
    source,
    target,
    opts: {
      limit,
      missingDirsWhole: opts.missingDirsWhole === true,
      openTarget: opts.openTarget === true,
      variants: opts.variants === true,
    },
  };
  await walkPool.run<WalkUnit, Difference[]>(
    'compare',
    context,
    units,
    (parts) => {
      for (const part of parts) for (const d of part) all.push(d);
      return all.length < limit;
    },
    opts.onWalked,
  );
  return Number.isFinite(limit) ? all.slice(0, limit) : all;
}

/** The target of the link at `path`; null when it is gone or no longer a link (changed since it was listed). */
function linkTarget(path: string): string | null {
  try {
    return readlinkSync(path);
  } catch (err) {
    if (isNothingThere(err) || (err as NodeJS.ErrnoException).code === 'EINVAL') return null;
    throw err;
  }
}
