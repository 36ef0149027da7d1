/**
 * The one way to say "nothing there" of a file system error, and its one
 * wider form; and the one way to say "the mode shuts this process out".
 * Callers that mean something else (an entry in the way, a directory not
 * empty) say so with their own codes.
 */

/** Nothing is at the path now: no such entry, a parent that is not a directory, a path too long to reach. */
const NOTHING_THERE: ReadonlySet<string> = new Set(['ENOENT', 'ENOTDIR', 'ENAMETOOLONG']);

/**
 * Nothing of the kind asked for is there, for an open that never follows a
 * final link: nothing there, a link (ELOOP under O_NOFOLLOW), a FIFO or socket
 * (ENXIO), a directory where a file was wanted (EISDIR).
 */
const NOT_OF_THAT_KIND: ReadonlySet<string> = new Set([...NOTHING_THERE, 'ELOOP', 'ENXIO', 'EISDIR']);

const codeOf = (err: unknown) => (err as NodeJS.ErrnoException | null)?.code ?? '';

export function isNothingThere(err: unknown): boolean {
  return NOTHING_THERE.has(codeOf(err));
}

export function isNotOfThatKind(err: unknown): boolean {
  return NOT_OF_THAT_KIND.has(codeOf(err));
}

/** The kernel refused for a mode (or an attribute: EPERM), not for want of the entry. */
export function isDenied(err: unknown): boolean {
  const code = codeOf(err);
  return code === 'EACCES' || code === 'EPERM';
}

/**
 * A read's failure (a `catch` handler) where a mode denying it means there
 * is nothing to read (drift that lasts, as a copy's modes while mounted):
 * null. Any other failure may pass (out of descriptors, an I/O error) and
 * is thrown, so that nothing is kept of it.
 */
export function deniedAsNone(err: unknown): null {
  if (isDenied(err)) return null;
  throw err;
}
