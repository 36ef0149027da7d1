import { SYSTEM_LIMITS, pathTooLong } from '../core/path-limits.js';
import { TEMP_DIR_NAME } from './store-layout.js';

/** Why a path given to the write API was refused; the message is safe to show the writer. */
export class WritePathError extends Error {
  readonly status = 400;
  constructor(message: string) {
    super(message);
    this.name = 'WritePathError';
  }
}

/** C0 controls and DEL: legal in POSIX names, but never in a web path we publish. */
function hasControl(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
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
  if (path.includes('\0')) throw new WritePathError('path contains a NUL byte');
  if (hasControl(path)) throw new WritePathError('path contains a control character');
  if (path.includes('\\')) throw new WritePathError('path contains a backslash');
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
  if (segments[0] === TEMP_DIR_NAME) throw new WritePathError(`"${TEMP_DIR_NAME}" is reserved`);
  return path;
}
