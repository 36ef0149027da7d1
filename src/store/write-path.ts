import { SYSTEM_LIMITS, pathTooLong } from '../core/path-limits.js';
import { isReservedRootName } from './store-layout.js';

/** Why a path given to the write API was refused; the message is safe to show the writer. */
export class WritePathError extends Error {
  readonly status = 400;
  constructor(message: string) {
    super(message);
    this.name = 'WritePathError';
  }
}

/**
 * Why the characters of `s` may not name anything in a tree, or null: a
 * lone surrogate (not well-formed Unicode: two different strings would then
 * name the same file, each lone surrogate written as U+FFFD), a C0 control
 * or DEL (legal in POSIX names, but never in a web path we publish), or a
 * backslash. The write API and a fleet host's checks of what a coordinator
 * sends (paths, link targets, frame headers) refuse the same characters.
 */
export function pathCharacterProblem(s: string): string | null {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0) return 'a NUL byte';
    if (c < 0x20 || c === 0x7f) return 'a control character';
    if (c === 0x5c) return 'a backslash';
    if (c >= 0xd800 && c <= 0xdbff) {
      const next = s.charCodeAt(i + 1); // NaN past the end
      if (!(next >= 0xdc00 && next <= 0xdfff)) return 'a lone surrogate (not well-formed Unicode)';
      i++;
    } else if (c >= 0xdc00 && c <= 0xdfff) return 'a lone surrogate (not well-formed Unicode)';
  }
  return null;
}

/**
 * Validate a path for the write API and return it relative to master, with
 * "/" separators. Strict on purpose: a writer may only name plain segments
 * below master, so the result can be joined to any tree without escaping it.
 */
export function parseWritePath(encoded: string): string {
  let path: string;
  try {
    path = decodeURIComponent(encoded);
  } catch {
    throw new WritePathError('path is not valid percent-encoding');
  }
  const bad = pathCharacterProblem(path);
  if (bad) throw new WritePathError(`path contains ${bad}`);
  if (path === '') throw new WritePathError('path is empty');
  if (path.startsWith('/')) throw new WritePathError('path must be relative to master (no leading "/")');
  const segments = path.split('/');
  for (const s of segments) {
    if (s === '') throw new WritePathError('path has an empty segment ("//" or a trailing "/")');
    if (s === '.' || s === '..') throw new WritePathError('path has a "." or ".." segment');
  }
  // the system's own limits here; the writer checks the store's file systems' before logging anything
  const tooLong = pathTooLong(path, SYSTEM_LIMITS);
  if (tooLong) throw new WritePathError(tooLong);
  if (isReservedRootName(segments[0] as string)) throw new WritePathError(`"${segments[0]}" is reserved`);
  return path;
}
