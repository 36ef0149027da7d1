import { readdirSync } from 'node:fs';
import { isReservedRootName } from '../store/store-layout.js';

/**
 * A piece of a tree walk that one worker thread does in one go: a directory
 * with everything below it (`deep`), or a directory's own entries only, its
 * subdirectories `subunits` being units of their own.
 */
export type WalkUnit =
  | { rel: string; deep: true; root?: boolean }
  | { rel: string; deep: false; subunits: string[]; root?: boolean };

/** The paths none of whose ancestors is also in the list (a directory path stands for its tree). */
export function topmost(paths: string[]): string[] {
  const set = new Set(paths);
  return paths.filter((p) => {
    const parts = p.split('/');
    for (let i = 1; i < parts.length; i++) if (set.has(parts.slice(0, i).join('/'))) return false;
    return true;
  });
}

/** Units per worker thread the plan aims for: enough that no thread waits long for the last one. */
const UNITS_PER_WORKER = 16;
/** Directories the plan may list to find them: it runs in the main thread, before the walk. */
const MAX_LISTED = 512;

/**
 * Cut the walk of `roots` (relative directories of `source`; "" for the
 * whole tree) into units for `workers` threads: directories are split into
 * their own entries and one unit per subdirectory, breadth first, until
 * there are enough units or nothing left to split. A tree of thousands of
 * top directories stays one unit each; a tree under a single directory is
 * split as deep as it takes. Only names are read here; the units check what
 * they find themselves.
 */
export function planUnits(source: string, roots: readonly string[], workers: number): WalkUnit[] {
  const want = Math.max(1, workers) * UNITS_PER_WORKER;
  const done: WalkUnit[] = [];
  let frontier: WalkUnit[] = roots.map((rel) => ({ rel, deep: true, root: true }));
  let listed = 0;
  while (frontier.length + done.length < want && listed < MAX_LISTED) {
    const next: WalkUnit[] = [];
    let split = false;
    for (const unit of frontier) {
      const subdirs = listed < MAX_LISTED ? subdirectories(source, unit.rel) : [];
      listed++;
      if (subdirs.length === 0) {
        next.push(unit);
        continue;
      }
      split = true;
      done.push({ rel: unit.rel, deep: false, subunits: subdirs, ...(unit.root ? { root: true } : {}) });
      for (const name of subdirs) next.push({ rel: unit.rel === '' ? name : `${unit.rel}/${name}`, deep: true });
    }
    frontier = next;
    if (!split) break;
  }
  // whole subtrees first: the small units of single directories fill the gaps at the end
  return [...frontier, ...done];
}

function subdirectories(source: string, rel: string): string[] {
  try {
    return readdirSync(rel === '' ? source : `${source}/${rel}`, { withFileTypes: true })
      .filter((e) => e.isDirectory() && !(rel === '' && isReservedRootName(e.name)))
      .map((e) => e.name);
  } catch {
    return []; // gone or not a directory now: the unit itself finds out
  }
}
