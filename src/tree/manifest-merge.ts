import { renameSync, rmSync, statSync } from 'node:fs';
import { type ManifestEntry, same } from './manifest-entry.js';
import { entryOf, hashOfLine, isFileLine, keyOf, stampOf, withHash } from './manifest-line.js';
import { hashFileSync } from './manifest-unit.js';
import { LineCursor, LineWriter } from './line-cursor.js';

/*
 * The merges of manifest files (`manifest-line.ts` says their lines), run in
 * a walk thread with blocking calls, one job each: the main thread only
 * sends the file names and gets a few numbers back.
 */

/** Every this many lines, a line's key and offset go into the sparse index. */
export const INDEX_EVERY = 128;

/** What a merge wrote: the manifest and its sparse index. */
export interface MergedManifest {
  file: string;
  entries: number;
  bytes: number;
  /** Files read and hashed (the others' hashes came from the earlier manifest). */
  hashed: number;
  keys: string[];
  offsets: number[];
}

export interface MergeJob {
  /** The tree walked: files not in `cache` are read here to be hashed. */
  root: string;
  runs: string[];
  /** The manifest to write; written beside it, then renamed into place. */
  file: string;
  temp: string;
  /** An earlier manifest of the same tree, or null. */
  cache: string | null;
}

/**
 * The runs merged into one sorted manifest, each file given its hash: from
 * `cache` when it is the file hashed then (same key, inode, change time and
 * size), read and hashed otherwise.
 */
export function mergeRunsSync(job: MergeJob): MergedManifest {
  const merged = new MergedRuns(job.runs);
  let cached: LineCursor | null = null;
  let out: LineWriter | null = null;
  try {
    cached = job.cache === null ? null : openOrNull(job.cache);
    out = new LineWriter(job.temp);
    const keys: string[] = [];
    const offsets: number[] = [];
    let entries = 0;
    let hashed = 0;
    // the copy's device, for the hashes' check of the walked file (stat'ed once, when the first is needed)
    let rootDev: number | undefined;
    for (let line = merged.line; line !== null; line = merged.next()) {
      const key = keyOf(line);
      if (isFileLine(line, key)) {
        let known: string | null = null;
        if (cached) {
          while (cached.line !== null && keyOf(cached.line) < key) cached.next();
          const c = cached.line;
          if (c !== null && stampOf(c) === stampOf(line) && isFileLine(c, key)) known = hashOfLine(c);
        }
        if (known === null) {
          const [, ino, , size] = line.split('\t', 4);
          const path = (JSON.parse(entryOf(line)) as ManifestEntry).path;
          rootDev ??= statSync(job.root).dev;
          known = hashFileSync(job.root, path, { ino: Number(ino), size: Number(size), rootDev });
          hashed++;
        }
        line = withHash(line, known);
      }
      const at = out.add(`${line}\n`);
      if (entries % INDEX_EVERY === 0) {
        keys.push(ownCopy(key));
        offsets.push(at);
      }
      entries++;
    }
    out.end();
    renameSync(job.temp, job.file);
    return { file: job.file, entries, bytes: out.size, hashed, keys, offsets };
  } catch (err) {
    out?.close();
    rmSync(job.temp, { force: true });
    throw err;
  } finally {
    merged.close();
    cached?.close();
  }
}

/**
 * A string of its own: a key cut from a line is a slice of the chunk the line
 * was read in, and keeping it would keep the whole chunk. Every 128th line's
 * key kept that way held all the chunks of a merge, some 250 MB at a million
 * entries. V8 copies a string it slices from a concatenation.
 */
function ownCopy(text: string): string {
  return ` ${text}`.slice(1);
}

/** A cursor on `file`, or null when it is gone (an earlier manifest removed meanwhile: no cache). */
function openOrNull(file: string): LineCursor | null {
  try {
    return new LineCursor(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

export interface AnswerJob {
  into: string;
  temp: string;
  /** Where the removed paths gather before they are appended: removed after. */
  removedTemp: string;
  snapshot: string;
  target: string;
  base: { id: string; file: string } | null;
}

/**
 * Write the manifest answer a host asks for: the whole of `target`, or what
 * changed in it since `base` (entries new or different, paths gone or of
 * another type: one merge of the two files). Returns its size.
 */
export function writeAnswerSync(job: AnswerJob): number {
  const removedFile = job.removedTemp;
  const cursors: LineCursor[] = [];
  const writers: LineWriter[] = [];
  try {
    const t = new LineCursor(job.target);
    cursors.push(t);
    const b = job.base ? new LineCursor(job.base.file) : null;
    if (b) cursors.push(b);
    const out = new LineWriter(job.temp);
    writers.push(out);
    const removed = job.base ? new LineWriter(removedFile) : null;
    if (removed) writers.push(removed);
    const base = job.base ? JSON.stringify(job.base.id) : 'null';
    out.add(`{"snapshot":${JSON.stringify(job.snapshot)},"base":${base},"changed":[`);
    let changes = 0;
    const change = (line: string) => out.add(changes++ === 0 ? entryOf(line) : `,${entryOf(line)}`);
    let gone = 0;
    const remove = (key: string) => removed?.add(gone++ === 0 ? key : `,${key}`);
    while (t.line !== null || (b !== null && b.line !== null)) {
      const tk = t.line === null ? null : keyOf(t.line);
      const bk = b === null || b.line === null ? null : keyOf(b.line);
      if (bk === null || (tk !== null && tk < bk)) {
        change(t.line as string);
        t.next();
      } else if (tk === null || bk < tk) {
        remove(bk);
        b?.next();
      } else {
        const now = entryOf(t.line as string);
        const then = entryOf(b?.line as string);
        if (now !== then) {
          const x = JSON.parse(then) as ManifestEntry;
          const y = JSON.parse(now) as ManifestEntry;
          if (x.type !== y.type) remove(bk);
          // a mark alone is a change too: the same bytes, made by the agent or master's own, are
          // served otherwise (a made variant is never served by name)
          if (!same(x, y) || x.made !== y.made) change(t.line as string);
        }
        t.next();
        b?.next();
      }
    }
    out.add('],"removed":[');
    if (removed) {
      removed.end();
      out.append(removedFile);
    }
    out.add(']}');
    out.end();
    renameSync(job.temp, job.into);
    return out.size;
  } catch (err) {
    rmSync(job.temp, { force: true });
    throw err;
  } finally {
    for (const w of writers) w.close();
    for (const c of cursors) c.close();
    rmSync(removedFile, { force: true });
  }
}

/** Sorted runs read as one sorted stream: a heap of cursors, one chunk of each in memory. */
export class MergedRuns {
  readonly #heap: LineCursor[] = [];
  readonly #all: LineCursor[] = [];

  constructor(files: readonly string[]) {
    try {
      for (const f of files) this.#all.push(new LineCursor(f));
    } catch (err) {
      this.close();
      throw err;
    }
    this.#heap = this.#all.filter((c) => c.line !== null);
    for (let i = (this.#heap.length >> 1) - 1; i >= 0; i--) this.#down(i);
  }

  /** The least line not yet passed; null at the end. */
  get line(): string | null {
    return this.#heap[0]?.line ?? null;
  }

  /** Pass the current line; the next least one. */
  next(): string | null {
    const top = this.#heap[0];
    if (!top) return null;
    top.next();
    if (top.line === null) {
      const last = this.#heap.pop() as LineCursor;
      if (this.#heap.length > 0) this.#heap[0] = last;
    }
    if (this.#heap.length > 0) this.#down(0);
    return this.line;
  }

  #down(i: number): void {
    const heap = this.#heap;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let least = i;
      if (l < heap.length && (heap[l]?.line as string) < (heap[least]?.line as string)) least = l;
      if (r < heap.length && (heap[r]?.line as string) < (heap[least]?.line as string)) least = r;
      if (least === i) return;
      [heap[i], heap[least]] = [heap[least] as LineCursor, heap[i] as LineCursor];
      i = least;
    }
  }

  close(): void {
    for (const c of this.#all) c.close();
  }
}
