import { rmSync, statSync } from 'node:fs';
import { type ManifestEntry, same } from './manifest-entry.js';
import { pathPrint } from '../core/path-print.js';
import { entryOf, isMadeLine, keyOf } from './manifest-line.js';
import { MergedRuns } from './manifest-merge.js';
import { hashFileSync } from './manifest-unit.js';
import { LineWriter } from './line-cursor.js';

/*
 * What turns a slot into a snapshot, worked out on disk (a fleet host's
 * pull): the manifest answer it was sent, in sorted runs
 * (`manifest-receive.ts`), merged with the slot's own walk in sorted runs
 * when the answer is the whole manifest. One merge in a walk thread, with
 * blocking calls, holding a chunk of each run: a host's memory does not grow
 * with the tree.
 */

export interface DeltaJob {
  /** The slot: its files that look the same as the snapshot's are read here, to compare content. */
  root: string;
  /** The answer's entries, `key\tentry` lines in sorted runs. */
  changedRuns: string[];
  /** A delta answer's removed paths, `key` lines in sorted runs. */
  removedRuns: string[];
  /** The slot's walk (`walkedLine` lines in sorted runs) when the answer is the whole manifest; else null. */
  localRuns: string[] | null;
  /** Where the delta goes: entries to make or replace (`key\tentry`, parents first), and paths to remove (`key`). */
  changedFile: string;
  removedFile: string;
  /**
   * With the slot's walk: where the paths go (`key` lines) of the files the
   * manifest marks made (`ManifestEntry.made`) that the slot holds as they
   * are. They are not in the delta, yet the slot's index may record them as
   * master's own (indexed from a coordinator before the mark): checked again.
   */
  markedFile?: string;
}

/** What the delta holds. */
export interface DeltaCounts {
  changed: number;
  removed: number;
  files: number;
  fileBytes: number;
  dirs: number;
  links: number;
  /**
   * The prints (`pathPrint`, sorted) of the files the answer marks as
   * variants the agent made (`ManifestEntry.made`): all of them, in the delta
   * or not (a whole pull derives again what a pull cut short placed, which
   * its delta leaves out). 8 bytes a mark.
   */
  madePrints: Float64Array;
}

/** The delta's counts; or the path the answer names twice (refused by the caller). */
export type DeltaResult = DeltaCounts | { twice: string };

/**
 * Write the delta: a delta answer's entries and removals as they are (each
 * run merged, in key order: a parent before what is under it); or, for a
 * whole manifest, what differs from the slot's walk. There a path of
 * another type goes and comes back, a path the slot alone has goes, and a
 * file of the same size and time (its owner may read it: one it may not
 * differs by its mode anyway) is read and its SHA-256 compared with the
 * manifest's: only content can still tell them apart. One that cannot be
 * read as walked (replaced, gone) is fetched. A path the answer names twice
 * (equal keys are equal paths: a well-formed string is its bytes one to
 * one) ends the merge.
 */
export function writeDeltaSync(job: DeltaJob): DeltaResult {
  const target = new MergedRuns(job.changedRuns);
  const gone = new MergedRuns(job.removedRuns);
  const local = job.localRuns === null ? null : new MergedRuns(job.localRuns);
  const writers: LineWriter[] = [];
  /** What was written goes: the delta is refused, or its merge failed. */
  const discard = () => {
    for (const w of writers) w.close();
    rmSync(job.changedFile, { force: true });
    rmSync(job.removedFile, { force: true });
    if (job.markedFile !== undefined) rmSync(job.markedFile, { force: true });
  };
  try {
    const changedOut = new LineWriter(job.changedFile);
    writers.push(changedOut);
    const removedOut = new LineWriter(job.removedFile);
    writers.push(removedOut);
    const markedOut = local !== null && job.markedFile !== undefined ? new LineWriter(job.markedFile) : null;
    if (markedOut) writers.push(markedOut);
    const counts: DeltaCounts = {
      changed: 0,
      removed: 0,
      files: 0,
      fileBytes: 0,
      dirs: 0,
      links: 0,
      madePrints: new Float64Array(0),
    };
    const prints: number[] = [];
    const change = (line: string, entry: ManifestEntry) => {
      changedOut.add(`${line}\n`);
      counts.changed++;
      if (entry.type === 'file') {
        counts.files++;
        counts.fileBytes += entry.size;
      } else if (entry.type === 'dir') counts.dirs++;
      else counts.links++;
    };
    const remove = (key: string) => {
      removedOut.add(`${key}\n`);
      counts.removed++;
    };
    let rootDev: number | undefined;
    let last: string | null = null;
    for (let t = target.line; t !== null || (local !== null && local.line !== null); ) {
      const tk = t === null ? null : keyOf(t);
      if (tk !== null && tk === last) {
        discard();
        return { twice: JSON.parse(tk) as string };
      }
      if (tk !== null && isMadeLine(t as string)) prints.push(pathPrint(JSON.parse(tk) as string));
      const l = local?.line ?? null;
      const lk = l === null ? null : keyOf(l);
      if (lk === null || (tk !== null && tk < lk)) {
        change(t as string, JSON.parse(entryOf(t as string)) as ManifestEntry);
        last = tk;
        t = target.next();
      } else if (tk === null || lk < tk) {
        remove(lk);
        local?.next();
      } else {
        const want = JSON.parse(entryOf(t as string)) as ManifestEntry;
        const have = JSON.parse(entryOf(l as string)) as ManifestEntry;
        if (have.type !== want.type) remove(lk);
        else if (
          want.type === 'file' &&
          want.hash !== undefined &&
          (have.mode & 0o400) !== 0 &&
          have.size === want.size &&
          have.mtimeMs === want.mtimeMs
        ) {
          const [, ino] = (l as string).split('\t', 2);
          rootDev ??= statSync(job.root).dev;
          have.hash = hashOrNull(job.root, have.path, { ino: Number(ino), size: have.size, rootDev });
        }
        if (have.type !== want.type || !same(have, want)) change(t as string, want);
        else if (want.made === true) markedOut?.add(`${tk}\n`);
        last = tk;
        t = target.next();
        local?.next();
      }
    }
    for (let r = gone.line; r !== null; r = gone.next()) remove(r); // a removed path's line is its key
    for (const w of writers) w.end();
    counts.madePrints = Float64Array.from(prints).sort();
    return counts;
  } catch (err) {
    discard();
    throw err;
  } finally {
    target.close();
    gone.close();
    local?.close();
  }
}

/** The SHA-256 of a walked file; one that is no longer the file walked (or unreadable) hashes to nothing: fetched. */
function hashOrNull(root: string, path: string, walked: { ino: number; size: number; rootDev: number }): string {
  try {
    return hashFileSync(root, path, walked);
  } catch {
    return '';
  }
}
