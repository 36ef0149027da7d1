/** The types a manifest is made of, apart from the code that makes and reads them (no import circle). */

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
