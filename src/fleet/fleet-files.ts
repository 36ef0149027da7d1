import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, open } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import createError from 'http-errors';
import { hasBodyOfType, readBody } from '../core/http-io.js';
import { badPath } from '../tree/manifest.js';
import { readSmallFile } from '../store/read-small-file.js';

/**
 * The files answer of fleet content transfer, served by the coordinator and
 * by every host that holds a snapshot (its peers pull from it): the same
 * request, the same frames, the same checks on the side that pulls.
 */

/** Most paths one files request may name: a host asks in batches. */
export const MAX_PATHS_PER_REQUEST = 4096;

/** Files at most this large, of a known size and hash, are read whole and sent with that hash. */
const WHOLE_READ = 1024 * 1024;

/** Most bytes of a files request's JSON body. */
const MAX_REQUEST_BODY = 4 * 1024 * 1024;

/**
 * Frame of one file in a files answer: a 4-byte big-endian header length,
 * the header (JSON: path, size), the content, then its SHA-256 (32 bytes),
 * computed as it was read. The host checks size and hash before it renames
 * the file into place.
 */
export function frameHeader(path: string, size: number): Buffer {
  const header = Buffer.from(JSON.stringify({ path, size }), 'utf8');
  const length = Buffer.alloc(4);
  length.writeUInt32BE(header.length);
  return Buffer.concat([length, header]);
}

/** One file to send: its size and SHA-256 when the sender knows them (its manifest), else read from the file. */
export interface FileToSend {
  path: string;
  size?: number;
  hash?: string | undefined;
}

/** What a files request that names no valid list of paths is answered (400). */
export const BAD_PATHS = `paths: a list of at most ${MAX_PATHS_PER_REQUEST} relative paths`;

/**
 * The paths a files request names (`{"paths": [...]}`, at most
 * MAX_PATHS_PER_REQUEST relative paths), or null when it names no such list
 * (a body of another type included). A body that cannot be read fails with
 * its status (400; 413 over 4 MiB; 415 in another charset).
 */
export async function readFilesRequest(req: IncomingMessage): Promise<string[] | null> {
  if (!hasBodyOfType(req, 'application/json')) return null;
  const body = await readJson(req);
  const paths = (body as { paths?: unknown } | undefined)?.paths;
  if (!Array.isArray(paths) || paths.length > MAX_PATHS_PER_REQUEST || paths.some((p) => badPath(p))) return null;
  return paths as string[];
}

/**
 * Write the frames of `files`, read from the tree at `root`, to `res`; fails
 * (the caller cuts the answer: the other side sees it cut, never a wrong
 * file) when a file is not there as it should be. A file is never read
 * through a link nor blocked on by a FIFO or device put in its place; with
 * `realParents`, each of its parent directories must be a real directory of
 * the tree too (a host serving peers from a slot whose tree holds links:
 * `link/passwd` must not read what `link` points to). `sent` hears the bytes
 * written.
 */
export async function writeFrames(
  res: ServerResponse,
  root: string,
  files: readonly FileToSend[],
  opts: {
    realParents: boolean;
    sent?: (bytes: number) => void;
    where: string;
    /**
     * Waited for before each file is read (a host serving a snapshot it is
     * still pulling: `PullProgress`); false ends the answer there, whole
     * frames only (the file is not there yet: the peer asks again for the rest).
     */
    ready?: (path: string) => Promise<boolean>;
  },
): Promise<void> {
  const parents = opts.realParents ? new RealParents(root) : null;
  const out = async (chunk: Buffer) => {
    opts.sent?.(chunk.length);
    if (!res.write(chunk)) await drained(res);
  };
  for (const file of files) {
    const abs = join(root, file.path);
    if (opts.ready && !(await opts.ready(file.path))) return;
    await parents?.check(file.path);
    if (file.size !== undefined && file.size <= WHOLE_READ && file.hash) {
      // small files in one read; the hash sent is the snapshot's, so a file changed under it
      // arrives as damaged and is never taken
      const data = await readSmallFile(abs, file.size);
      if (data?.length !== file.size) throw new Error(`${file.path} changed in ${opts.where} under the snapshot`);
      await out(frameHeader(file.path, file.size));
      await out(data);
      await out(Buffer.from(file.hash, 'hex'));
      continue;
    }
    // the file checked is the file read: opened once, without following a link or waiting on a FIFO
    const handle = await open(abs, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    const hash = createHash('sha256');
    let sent = 0;
    let size = 0;
    try {
      const st = await handle.stat();
      size = file.size ?? st.size;
      if (!st.isFile() || st.size !== size) throw new Error(`${file.path} changed in ${opts.where} under the snapshot`);
      await out(frameHeader(file.path, size));
      if (size > 0) {
        for await (const chunk of handle.createReadStream({
          autoClose: false,
          highWaterMark: 256 * 1024,
          start: 0,
          end: size - 1,
        })) {
          hash.update(chunk as Buffer);
          sent += (chunk as Buffer).length;
          await out(chunk as Buffer);
        }
      }
    } finally {
      await handle.close();
    }
    if (sent !== size) throw new Error(`${file.path} ended at ${sent} of ${size} bytes`);
    await out(hash.digest());
  }
}

/** Checks, once per directory, that a path's parents are real directories under `root` (never links). */
class RealParents {
  readonly #root: string;
  readonly #known = new Set<string>(['']);
  constructor(root: string) {
    this.#root = root;
  }
  async check(path: string): Promise<void> {
    const parts = path.split('/');
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      if (this.#known.has(dir)) continue;
      const st = await lstat(join(this.#root, dir));
      if (!st.isDirectory()) throw new Error(`${dir} is not a directory of the tree served`);
      this.#known.add(dir);
    }
  }
}

/**
 * A JSON body of at most MAX_REQUEST_BODY bytes: an object or a list (none: `{}`), in UTF-8 or UTF-16.
 * A body that is not one fails with status 400; one in another charset with 415.
 */
async function readJson(req: IncomingMessage): Promise<unknown> {
  const charset =
    /;\s*charset\s*=\s*"?([^";\s]+)/i.exec(String(req.headers['content-type']))?.[1]?.toLowerCase() ?? 'utf-8';
  if (!charset.startsWith('utf-')) throw createError(415, `unsupported charset "${charset.toUpperCase()}"`);
  const bytes = await readBody(req, MAX_REQUEST_BODY);
  let text: string;
  try {
    text = new TextDecoder(charset).decode(bytes);
  } catch {
    throw createError(415, `unsupported charset "${charset.toUpperCase()}"`);
  }
  if (bytes.length === 0) return {};
  const first = text.trimStart()[0];
  if (first !== '{' && first !== '[') throw createError(400, 'the body is not a JSON object or list');
  try {
    return JSON.parse(text);
  } catch (err) {
    throw createError(400, (err as Error).message);
  }
}

/**
 * Wait until `res` takes more, or fail once it is closed (the host hung up,
 * or the pull was cut): an answer nobody reads is not read on to its end.
 */
export function drained(res: ServerResponse): Promise<void> {
  if (res.destroyed) return Promise.reject(new Error('the answer was closed'));
  return new Promise((resolve, reject) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', closed);
      resolve();
    };
    const closed = () => {
      res.off('drain', done);
      reject(new Error('the answer was closed'));
    };
    res.once('drain', done);
    res.once('close', closed);
  });
}
