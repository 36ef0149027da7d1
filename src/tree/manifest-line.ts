import type { ManifestEntry, WalkedEntry } from './manifest-entry.js';

/*
 * A line of a manifest file (`manifest-file.ts`), tab-separated:
 *
 *   key  ino  ctimeMs  size  entry
 *
 * `key` is the path as a JSON string, `entry` the ManifestEntry as JSON (what
 * a host is sent, the path first, a file's hash last), `ino`, `ctimeMs` and
 * `size` what tells the next walk a file is still the one it hashed. JSON
 * escapes tabs and newlines, so neither is ever inside a field.
 *
 * Lines are sorted by their code units. A JSON string is never a prefix of
 * another (its closing quote would be escaped in the longer one), so that is
 * the order of the keys, and a path sorts before every path under it.
 */

/** The line of a walked entry, its file's hash not known yet. */
export function walkedLine(e: WalkedEntry): string {
  const entry: ManifestEntry = { path: e.path, type: e.type, mode: e.mode, size: e.size, mtimeMs: e.mtimeMs };
  if (e.type === 'link') entry.target = e.target;
  if (e.made === true) entry.made = true;
  return `${JSON.stringify(e.path)}\t${e.ino}\t${e.ctimeMs}\t${e.size}\t${JSON.stringify(entry)}`;
}

export const keyOf = (line: string): string => line.slice(0, line.indexOf('\t'));

/** The entry as a host is sent it. */
export const entryOf = (line: string): string => line.slice(line.lastIndexOf('\t') + 1);

/** Everything before the entry: the key, and what tells a file is the one hashed. */
export const stampOf = (line: string): string => line.slice(0, line.lastIndexOf('\t'));

/** A file's entry as written here ends with its hash: `,"hash":"<64 hex>"}`. */
export const hashOfLine = (line: string): string => line.slice(-66, -2);

/** Whether the line is a file's: its entry reads `{"path":<key>,"type":"file"`. */
export const isFileLine = (line: string, key: string): boolean =>
  line.startsWith('"type":"file"', line.lastIndexOf('\t') + 1 + 9 + key.length);

/** Whether a file's line with its hash is marked `made`: its entry ends `,"made":true,"hash":"<64 hex>"}`. */
export const isMadeLine = (line: string): boolean => line.startsWith(',"made":true,"hash":"', line.length - 87);

/** A walked file's line with its hash: the hash goes last in its entry. */
export const withHash = (line: string, hash: string): string => `${line.slice(0, -1)},"hash":"${hash}"}`;

/**
 * The type of a host's delta line (`key\tentry`, the entry as a host checked
 * it: `{"path":<key>,"type":"<type>"...`), read in place: a pass over a
 * million lines for their directories parses none of them.
 */
export function typeOfDeltaLine(line: string): 'file' | 'dir' | 'link' {
  const k = line.indexOf('\t');
  const at = 2 * k + 18; // after the key, its tab, `{"path":`, the key again and `,"type":"`
  return line.startsWith('file', at) ? 'file' : line.startsWith('dir', at) ? 'dir' : 'link';
}
