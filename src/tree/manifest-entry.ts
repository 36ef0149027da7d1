/** The types a manifest is made of, and how two entries compare, apart from the code that makes and reads them (no import circle). */

/**
 * One entry of a tree as a fleet host must reproduce it: what rsync's quick
 * check compares (type, size, mtime to the millisecond) plus the mode and a
 * link's target. Paths are relative, "/"-separated, parents before children.
 */
export interface ManifestEntry {
  path: string;
  type: 'file' | 'dir' | 'link';
  mode: number;
  size: number;
  /** Modification time in whole milliseconds (floored), as copies keep it. */
  mtimeMs: number;
  target?: string;
  /**
   * A file's SHA-256 (hex). Sizes and times cannot tell every change apart
   * (a tool that keeps times, a rewrite of the same size within the
   * millisecond), so manifests that say what changed compare content.
   */
  hash?: string;
  /**
   * A file the agent made beside its original (`app.js.br`), not one of
   * master's: the copy's content index names it so. A host records it as
   * made, and its servers never serve it under its own name. Absent for any
   * other file (and from a coordinator before this mark), never `false`.
   */
  made?: true;
}

/** Whether two entries of a path describe the same thing (rsync's quick check, then content when both know it). */
export function same(x: ManifestEntry, y: ManifestEntry): boolean {
  if (x.type !== y.type || x.mode !== y.mode) return false;
  if (x.type === 'link') return x.target === y.target;
  if (x.type === 'dir') return x.mtimeMs === y.mtimeMs;
  if (x.size !== y.size || x.mtimeMs !== y.mtimeMs) return false;
  // content decides when both sides know it
  return x.hash === undefined || y.hash === undefined || x.hash === y.hash;
}

/** An entry as a walk thread reads it: what identifies the file's content for the hash cache too. */
export interface WalkedEntry extends ManifestEntry {
  ino: number;
  ctimeMs: number;
}

/** A small file, checked, for a walk thread to write beside the slot and rename into place. */
export interface PlacedFile {
  path: string;
  data: Uint8Array;
  mode: number;
  /** utimes seconds (msInside). */
  mtime: number;
}
