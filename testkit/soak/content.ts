/**
 * Soak content built so that tearing shows: every file of version k is the
 * token of k, repeated, so a body (or an aligned slice of one) holding two
 * versions is caught by one comparison.
 */
import { tarOf } from '../tar.js';

export const TOKEN = 9;
const token = (k: number) => `${String(k).padStart(8, '0')}\n`;

export interface SoakFile {
  path: string;
  size: number;
}

export const SMALL: SoakFile[] = Array.from({ length: 20 }, (_, i) => ({ path: `s/f${i}.txt`, size: 2 * 1024 }));
export const LARGE: SoakFile[] = Array.from({ length: 2 }, (_, i) => ({ path: `l/big${i}.bin`, size: 512 * 1024 }));
export const FILES: SoakFile[] = [...SMALL, ...LARGE];
const MAX_SIZE = Math.max(...FILES.map((f) => f.size));

/** The content of a file of `size` bytes at version k (cut to whole tokens). */
export function body(k: number, size: number): string {
  return token(k)
    .repeat(Math.ceil(size / TOKEN))
    .slice(0, Math.floor(size / TOKEN) * TOKEN);
}

/**
 * The write batch that puts every file at version k, as a tar archive: the
 * format a publisher of whole trees sends, streamed by the agent straight to
 * disk. Bodies are filled with the token, not built as strings: the publisher
 * stands in for writers on other hosts, so its own CPU should stay out of the
 * measurement.
 */
export function batchTar(k: number): Promise<Buffer> {
  return tarOf(FILES.map((f) => [{ name: f.path }, Buffer.alloc(Math.floor(f.size / TOKEN) * TOKEN, token(k))]));
}

/** Each version's body, long enough for the largest file, built once: checking a response is one memcmp. */
const bodies = new Map<number, Buffer>();
function versionBody(k: number): Buffer {
  let b = bodies.get(k);
  if (b === undefined) {
    b = Buffer.from(body(k, MAX_SIZE));
    bodies.set(k, b);
    // versions only go up: keep the last few, for the responses still on their way
    for (const old of bodies.keys()) if (bodies.size > 8 && old < k) bodies.delete(old);
  }
  return b;
}

/** The one version a body (or an aligned slice of one) holds, or -1 if it mixes versions. */
export function versionOf(buf: Buffer): number {
  if (buf.length < TOKEN || buf.length % TOKEN !== 0 || buf.length > MAX_SIZE) return -1;
  const first = buf.toString('latin1', 0, TOKEN);
  if (!/^\d{8}\n$/.test(first)) return -1;
  const k = Number(first);
  return buf.equals(versionBody(k).subarray(0, buf.length)) ? k : -1;
}
