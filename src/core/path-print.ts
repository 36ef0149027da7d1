/*
 * Prints of paths: a number per path where a set of the paths themselves
 * would cost too much (a pull of a million files held a set of a million
 * strings), kept in a sorted Float64Array (8 bytes a path, cloned to a walk
 * thread as one block) and looked up by binary search.
 */

/**
 * A path's print: 52 bits of two 32-bit multiplicative hashes of its UTF-16
 * code units (a number exact in a double). Among a million paths, some two
 * share a print with odds of about one in 9,000, and a path outside a set of
 * a million has the print of one in it with odds of one in 4 billion: what a
 * print stands for must bear that. A pull's wait does (a path not fetched
 * is waited for as the fetched one is); so does a made mark (a fleet host
 * takes master's own `X.gz` for a made variant: not served under its own
 * name there, while its `X` is still sent gzip-coded from it).
 */
export function pathPrint(path: string): number {
  let a = 0x811c9dc5;
  let b = 0x01000193 ^ path.length;
  for (let i = 0; i < path.length; i++) {
    const c = path.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x5bd1e995);
    b ^= b >>> 15;
  }
  return (a >>> 0) * 0x100000 + ((b >>> 0) & 0xfffff);
}

/** Where `print` is in `sorted` (ascending); -1 when it is not. */
export function indexOfPrint(sorted: Float64Array, print: number): number {
  let lo = 0;
  let hi = sorted.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const p = sorted[mid] as number;
    if (p === print) return mid;
    if (p < print) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}
