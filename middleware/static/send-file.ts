import { constants, createReadStream } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { pipeline } from 'node:stream';
import fresh from 'fresh';
import parseRange from 'range-parser';
import type { BodyArena } from './body-arena.js';
import type { FileEntry, Representation } from './file-cache.js';
import { chooseEncoding } from './negotiate.js';
import type { Pin } from '../mount/mount-state.js';
import type { ResolvedStaticOptions } from '../options.js';

/** Read size for streamed files: fewer, larger reads than the 64 KiB default. */
const STREAM_CHUNK = 256 * 1024;

/** Split a list header (If-Match, If-None-Match) into its tags. */
function parseTokenList(value: string): string[] {
  return value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

function parseHttpDate(value: string | undefined): number {
  const t = value ? Date.parse(value) : Number.NaN;
  return Number.isNaN(t) ? Number.NaN : t;
}

/** The validators the response carries: ours, or those an earlier middleware set (as send uses them). */
interface Validators {
  etag: string | undefined;
  lastModifiedMs: number;
}

function validatorsOf(res: ServerResponse): Validators {
  const etag = res.getHeader('ETag');
  return {
    etag: typeof etag === 'string' ? etag : undefined,
    lastModifiedMs: parseHttpDate(res.getHeader('Last-Modified') as string | undefined),
  };
}

/** RFC 9110 13.1.1 and 13.1.4: If-Match, then If-Unmodified-Since when there is no If-Match. */
function preconditionFailed(req: IncomingMessage, v: Validators): boolean {
  const ifMatch = req.headers['if-match'];
  if (ifMatch) {
    if (ifMatch.trim() === '*') return false;
    if (v.etag === undefined) return true;
    const tags = parseTokenList(ifMatch);
    // a strong tag (from the content hash) is compared strongly, as RFC 9110 13.1.1 says: only the same strong tag
    if (!v.etag.startsWith('W/')) return !tags.includes(v.etag);
    // a weak one (size and mtime) weakly, as serve-static does
    const bare = v.etag.slice(2);
    return !tags.some((t) => t === v.etag || t === bare);
  }
  const since = parseHttpDate(req.headers['if-unmodified-since']);
  return !Number.isNaN(since) && !Number.isNaN(v.lastModifiedMs) && v.lastModifiedMs > since;
}

/**
 * If-Range: the range applies only while the representation is unchanged.
 * `variant`: the representation is a precompressed variant. Only a strong
 * tag vouches for its bytes (RFC 9110 13.1.5 compares strongly): its
 * Last-Modified is its original's, and its weak tag (`etag: 'weak'`) is made
 * of its size and that same time, so neither tells it from another variant
 * of the same file (master's own `X.gz` made again, another copy's, another
 * level). With either, the condition is false and the whole variant is sent
 * rather than a range of other bytes spliced onto the client's. The file as
 * it is keeps serve-static's comparisons.
 */
function rangeStillValid(req: IncomingMessage, v: Validators, variant: boolean): boolean {
  const header = req.headers['if-range'];
  if (!header) return true;
  const ifRange = Array.isArray(header) ? header.join(',') : header;
  if (ifRange.includes('"')) {
    if (v.etag === undefined || (variant && v.etag.startsWith('W/'))) return false;
    // a strong tag must be the same strong tag; a weak one is compared as serve-static does
    return parseTokenList(ifRange).includes(v.etag);
  }
  if (variant) return false;
  const date = parseHttpDate(ifRange);
  return !Number.isNaN(date) && !Number.isNaN(v.lastModifiedMs) && v.lastModifiedMs <= date;
}

/** Headers of ours that an earlier middleware may have set: those it set stand, as with serve-static. */
const YIELDING = ['content-type', 'cache-control', 'etag', 'last-modified', 'accept-ranges'] as const;

/** True when an earlier middleware set a status or a header that this response must keep. */
function presetByEarlier(res: ServerResponse): boolean {
  if (res.statusCode !== 200) return true;
  for (const name of YIELDING) if (res.hasHeader(name)) return true;
  return false;
}

/** Add `Accept-Encoding` to the Vary an earlier middleware set, unless it is there already (or `*`). */
function mergeVary(res: ServerResponse, vary: string): void {
  const existing = res.getHeader('Vary');
  if (existing === undefined) {
    res.setHeader('Vary', vary);
    return;
  }
  const text = Array.isArray(existing) ? existing.join(', ') : String(existing);
  const names = text.split(',').map((s) => s.trim().toLowerCase());
  if (names.includes('*') || names.includes(vary.toLowerCase())) return;
  res.setHeader('Vary', text.trim() === '' ? vary : `${text}, ${vary}`);
}

function applyHeaders(res: ServerResponse, entry: FileEntry, rep: Representation, opts: ResolvedStaticOptions): void {
  for (const [name, value] of Object.entries(rep.headers)) {
    if (value === undefined || name === 'Content-Length') continue;
    if (name === 'Vary') mergeVary(res, value as string);
    // the coding is the body's: never left to what an earlier middleware said
    else if (name === 'Content-Encoding' || !res.hasHeader(name)) res.setHeader(name, value);
  }
  if (opts.setHeaders && entry.stats) opts.setHeaders(res, entry.path, entry.stats);
}

/** Headers that describe a body, dropped from an answer that has none of it (304) or another (412, 416). */
function dropBodyHeaders(res: ServerResponse, rep: Representation): void {
  if (rep.headers['Content-Encoding'] !== undefined) res.removeHeader('Content-Encoding');
}

function notModified(res: ServerResponse): number {
  for (const name of ['Content-Type', 'Content-Length', 'Content-Range', 'Content-Encoding']) res.removeHeader(name);
  res.statusCode = 304;
  res.end();
  return 304;
}

/** True when a request asks for the whole file, unconditionally. */
function isPlain(req: IncomingMessage): boolean {
  const h = req.headers;
  return (
    h.range === undefined &&
    h['if-none-match'] === undefined &&
    h['if-modified-since'] === undefined &&
    h['if-match'] === undefined &&
    h['if-unmodified-since'] === undefined
  );
}

/**
 * Open the file an entry was built from, and check that it is that file:
 * same device, inode, size and mtime as the stat the headers came from. Null
 * when it is another (the copy was rewritten under this server) or gone.
 */
async function openSame(entry: Representation): Promise<FileHandle | null> {
  let handle: FileHandle;
  try {
    // O_NONBLOCK: a FIFO swapped in for the file must not hold a thread of the pool (its fstat refuses it)
    handle = await open(entry.path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return null;
  }
  try {
    const st = await handle.stat();
    const was = entry.identity;
    if (st.dev === was.dev && st.ino === was.ino && st.size === was.size && st.mtimeMs === was.mtimeMs) return handle;
  } catch {
    // fall through: an entry that cannot be checked is not sent
  }
  await handle.close();
  return null;
}

/**
 * Answer a GET or HEAD for a file of the mounted copy; returns the status sent
 * (or a promise of it, when the body is streamed from disk).
 *
 * Small files come from memory with headers computed once per epoch, from the
 * same descriptor their bytes were read from. Large ones are streamed from a
 * descriptor opened first and checked against the stat the headers were built
 * from: a body is never sent under another file's headers, and `'changed'`
 * (nothing sent) tells the caller the copy changed under it. The pin is
 * released once the copy is no longer read: at once for a body in memory, at
 * the end of the response for a stream; the arena's bytes are held until the
 * response closes.
 */
export function sendFile(
  req: IncomingMessage,
  res: ServerResponse,
  entry: FileEntry,
  opts: ResolvedStaticOptions,
  pin: Pin<unknown>,
  arena: BodyArena,
): number | Promise<number | 'changed'> {
  const plain = isPlain(req);
  // the representation sent: the file as it is, or the variant the request's Accept-Encoding prefers
  const rep: Representation =
    entry.variantMask === 0
      ? entry
      : (entry.variants?.[chooseEncoding(req.headers['accept-encoding'], entry.variantMask)] ?? entry);
  // The body's bytes, held until the response closes (the socket may write from them until then);
  // null when streamed, or when the arena reused its room since the entry was found. Never a copy,
  // even for a response queued behind a reader that stalls: a connection that pipelines thousands
  // of requests and reads nothing would make thousands of copies, where views cost nothing more
  // than the arena already holds (it may pin the arena meanwhile; others' bodies are then streamed).
  const body = rep.body && arena.take(rep.body, pin);
  // fast path: an unconditional full response from memory, headers computed once per epoch
  if (
    plain &&
    opts.setHeaders === undefined &&
    body !== null &&
    !presetByEarlier(res) &&
    (entry.variantMask === 0 || !res.hasHeader('vary'))
  ) {
    res.writeHead(200, rep.headers);
    res.end(req.method === 'HEAD' ? undefined : body);
    pin.release();
    return 200;
  }
  if (body !== null || req.method === 'HEAD') {
    const { status } = respond(req, res, entry, rep, opts, plain, null, body);
    pin.release();
    return status;
  }
  return openSame(rep).then((handle) => {
    if (handle === null) {
      pin.release();
      return 'changed';
    }
    if (res.destroyed) {
      // the client is gone: nothing to send, and the descriptor must not stay open
      pin.release();
      void handle.close();
      return 499;
    }
    const { status, streaming } = respond(req, res, entry, rep, opts, plain, handle, null);
    if (!streaming) {
      void handle.close();
      pin.release();
    }
    return status;
  });
}

function respond(
  req: IncomingMessage,
  res: ServerResponse,
  entry: FileEntry,
  rep: Representation,
  opts: ResolvedStaticOptions,
  plain: boolean,
  handle: FileHandle | null,
  body: Buffer | null,
): { status: number; streaming: boolean } {
  const h = req.headers;
  const size = rep.identity.size;
  applyHeaders(res, entry, rep, opts);
  const validators = validatorsOf(res);
  if (preconditionFailed(req, validators)) {
    res.removeHeader('Content-Length');
    dropBodyHeaders(res, rep);
    res.statusCode = 412;
    res.setHeader('Content-Type', 'text/plain; charset=utf-8');
    // its own length: Node frames nothing itself once a Content-Length was removed, and would chunk it
    res.setHeader('Content-Length', '20');
    res.end('Precondition Failed\n');
    return { status: 412, streaming: false };
  }
  // A status an earlier middleware set other than 2xx (a 404 page, say) is answered as it is: no 304.
  const cachable = (res.statusCode >= 200 && res.statusCode < 300) || res.statusCode === 304;
  if (
    !plain &&
    cachable &&
    fresh(h, {
      etag: validators.etag,
      'last-modified': res.getHeader('Last-Modified') as string | undefined,
    })
  ) {
    return { status: notModified(res), streaming: false };
  }

  let start = 0;
  let end = size - 1;
  let status = res.statusCode;
  if (opts.acceptRanges && h.range !== undefined && rangeStillValid(req, validators, rep !== entry)) {
    const ranges = parseRange(size, h.range, { combine: true });
    if (ranges === -1) {
      res.statusCode = 416;
      dropBodyHeaders(res, rep);
      res.setHeader('Content-Range', `bytes */${size}`);
      res.setHeader('Content-Type', 'text/plain; charset=utf-8');
      res.setHeader('Content-Length', '22');
      res.end('Range Not Satisfiable\n');
      return { status: 416, streaming: false };
    }
    // malformed ranges are ignored; several ranges get the whole file rather than multipart
    if (ranges !== -2 && ranges.length === 1 && ranges.type === 'bytes') {
      const range = ranges[0] as parseRange.Range;
      start = range.start;
      end = range.end;
      status = 206;
      res.setHeader('Content-Range', `bytes ${start}-${end}/${size}`);
    }
  }
  const length = size === 0 ? 0 : end - start + 1;
  res.statusCode = status;
  res.setHeader('Content-Length', String(length));
  if (req.method === 'HEAD' || length === 0) {
    res.end();
    return { status, streaming: false };
  }
  if (body !== null) {
    res.end(body.subarray(start, end + 1));
    return { status, streaming: false };
  }
  if (handle === null) throw new Error(`no descriptor for a streamed body: ${rep.path}`);
  const stream = createReadStream('', { fd: handle, start, end, highWaterMark: STREAM_CHUNK, autoClose: true });
  // pipeline ends both ways: a client gone (even before this) destroys the stream and closes the
  // descriptor, and a read error cuts the connection, since the headers are gone already
  pipeline(stream, res, () => {});
  return { status, streaming: true };
}
