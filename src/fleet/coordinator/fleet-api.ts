import { errorBody } from '../../core/errors.js';
import createError from 'http-errors';
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { readSmallFile } from '../../store/read-small-file.js';
import { join } from 'node:path';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { hasBodyOfType, pathOf, queryOf, readBody, sendJson } from '../../core/http-io.js';
import { bearerMatches } from '../../core/token-match.js';
import type { Logger } from '../../core/logger.js';
import { type ManifestEntry, badPath } from '../../tree/manifest.js';
import type { Snapshots } from './snapshots.js';

/** Files at most this large are read whole and sent with the snapshot's hash. */
const WHOLE_READ = 1024 * 1024;

/** Most paths one files request may name: a host asks in batches. */
export const MAX_PATHS_PER_REQUEST = 4096;

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

/** Most bytes of a files request's JSON body. */
const MAX_REQUEST_BODY = 4 * 1024 * 1024;

/**
 * A request handler for node:http mounted under `/v1/fleet`: `req.url` is the
 * part below it. What it does not answer goes to `next()`; a body it cannot
 * read goes to `next(err)`, with the error's status.
 */
export type FleetApi = (req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void) => void;

/**
 * The coordinator's content endpoints, under /v1/fleet: a snapshot's
 * manifest (or what changed in it since one the host holds) and the content
 * of named files. Both need the fleet token; both read only a slot that
 * holds the snapshot named, and count as pulls on it while they run.
 */
/**
 * A snapshot's files by path, made once per manifest (a manifest never
 * changes once read): a host asks in batches, and a large snapshot would
 * otherwise be indexed again for every batch of every host.
 */
const fileIndexes = new WeakMap<readonly ManifestEntry[], Map<string, ManifestEntry>>();
function filesOf(manifest: readonly ManifestEntry[]): Map<string, ManifestEntry> {
  let index = fileIndexes.get(manifest);
  if (!index) {
    index = new Map();
    for (const e of manifest) if (e.type === 'file') index.set(e.path, e);
    fileIndexes.set(manifest, index);
  }
  return index;
}

export function fleetRouter(snapshots: Snapshots, token: string, log: Logger): FleetApi {
  return (req, res, next) => {
    if (!bearerMatches(req.headers.authorization, token)) {
      sendJson(res, 401, errorBody('UNAUTHORIZED', 'the fleet token is required'));
      return;
    }
    const path = pathOf(req.url).toLowerCase();
    if ((req.method === 'GET' || req.method === 'HEAD') && (path === '/manifest' || path === '/manifest/')) {
      manifest(req, res);
    } else if (req.method === 'POST' && (path === '/files' || path === '/files/')) {
      const body = hasBodyOfType(req, 'application/json') ? readJson(req) : Promise.resolve(undefined);
      body.then((json) => files(req, res, json)).catch(next);
    } else next();
  };

  function manifest(req: IncomingMessage, res: ServerResponse): void {
    const query = queryOf(req);
    const pull = snapshots.open(String(query.snapshot ?? ''), query.since ? String(query.since) : null);
    if (!pull) {
      sendJson(res, 410, errorBody('SNAPSHOT_GONE', 'no slot holds that snapshot any more'));
      return;
    }
    try {
      sendJson(
        res,
        200,
        pull.delta
          ? { snapshot: query.snapshot, base: query.since, ...pull.delta }
          : { snapshot: query.snapshot, base: null, changed: pull.manifest, removed: [] },
      );
    } finally {
      pull.done();
    }
  }

  async function files(req: IncomingMessage, res: ServerResponse, body: unknown): Promise<void> {
    const paths = (body as { paths?: unknown } | undefined)?.paths;
    if (!Array.isArray(paths) || paths.length > MAX_PATHS_PER_REQUEST || paths.some((p) => badPath(p))) {
      sendJson(res, 400, errorBody('BAD_REQUEST', `paths: a list of at most ${MAX_PATHS_PER_REQUEST} relative paths`));
      return;
    }
    // cut when the slot is to be rewritten: the host sees a cut answer and starts over
    const pull = snapshots.open(String(queryOf(req).snapshot ?? ''), null, () => res.destroy());
    if (!pull) {
      sendJson(res, 410, errorBody('SNAPSHOT_GONE', 'no slot holds that snapshot any more'));
      return;
    }
    const files = filesOf(pull.manifest);
    const unknown = (paths as string[]).find((p) => !files.has(p));
    if (unknown !== undefined) {
      pull.done();
      sendJson(res, 400, errorBody('BAD_REQUEST', 'a path asked for is not a file of the snapshot'));
      return;
    }
    res.once('close', pull.done);
    res.setHeader('content-type', 'application/x-mirrorswap-files');
    try {
      for (const path of paths as string[]) {
        const entry = files.get(path) as ManifestEntry;
        const abs = join(pull.root, path);
        if (!res.write(frameHeader(path, entry.size))) await drained(res);
        if (entry.size <= WHOLE_READ && entry.hash) {
          // small files in one read; the hash sent is the snapshot's, so a file changed under it
          // arrives as damaged and is never taken
          // never through a link, never blocked by a FIFO or a device put in its place
          const data = await readSmallFile(abs, entry.size);
          if (data?.length !== entry.size) throw new Error(`${path} changed in slot ${pull.slot} under the snapshot`);
          res.write(data);
          if (!res.write(Buffer.from(entry.hash, 'hex'))) await drained(res);
          continue;
        }
        // the file checked is the file read: opened once, without following a link or waiting on a FIFO
        const handle = await open(abs, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
        const hash = createHash('sha256');
        let sent = 0;
        try {
          const st = await handle.stat();
          if (!st.isFile() || st.size !== entry.size)
            throw new Error(`${path} changed in slot ${pull.slot} under the snapshot`);
          for await (const chunk of handle.createReadStream({
            autoClose: false,
            highWaterMark: 256 * 1024,
            start: 0,
            end: entry.size - 1,
          })) {
            hash.update(chunk as Buffer);
            sent += (chunk as Buffer).length;
            if (!res.write(chunk)) await drained(res);
          }
        } finally {
          await handle.close();
        }
        if (sent !== entry.size) throw new Error(`${path} ended at ${sent} of ${entry.size} bytes`);
        if (!res.write(hash.digest())) await drained(res);
      }
      res.end();
    } catch (err) {
      // the host sees a cut answer and fails its pull: never a wrong file. One it hung up on, or
      // that was cut for a copy into its slot, is no fault of the coordinator's.
      const gone = res.destroyed;
      log[gone ? 'warn' : 'error'](
        { err: (err as Error).message, slot: pull.slot },
        gone ? 'a fleet host pull ended before its answer did' : 'a fleet host pull failed',
      );
      res.destroy();
    } finally {
      pull.done();
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
function drained(res: ServerResponse): Promise<void> {
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
