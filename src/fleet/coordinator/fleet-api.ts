import { errorBody } from '../../core/errors.js';
import { once } from 'node:events';
import { createReadStream } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import { pathOf, queryOf, sendJson } from '../../core/http-io.js';
import { bearerMatches } from '../../core/token-match.js';
import type { Logger } from '../../core/logger.js';
import { BAD_PATHS, readFilesRequest, writeFrames } from '../fleet-files.js';
import type { Snapshots } from './snapshots.js';

export { MAX_PATHS_PER_REQUEST, frameHeader } from '../fleet-files.js';

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
      readFilesRequest(req)
        .then((paths) => {
          if (paths !== null) return files(req, res, paths);
          sendJson(res, 400, errorBody('BAD_REQUEST', BAD_PATHS));
          return undefined;
        })
        .catch(next);
    } else next();
  };

  function manifest(req: IncomingMessage, res: ServerResponse): void {
    const query = queryOf(req);
    const snapshot = String(query.snapshot ?? '');
    // cut, as a files answer, when the slot is to be rewritten: the host starts over
    const pull = snapshots.open(snapshot, () => res.destroy());
    if (!pull) {
      sendJson(res, 410, errorBody('SNAPSHOT_GONE', 'no slot holds that snapshot any more'));
      return;
    }
    res.once('close', pull.done);
    snapshots
      .answer(snapshot, query.since ? String(query.since) : null)
      .then(async ({ file, bytes }) => {
        // a host that hung up while its answer was made: nothing to open, nothing to send
        if (res.destroyed) return;
        // made once, on disk: sent as it is, never held whole in memory
        const body = createReadStream(file);
        // the file is closed with the response, however the response ends: a pipeline
        // handed a response already gone is not trusted to close its source
        res.once('close', () => body.destroy());
        await once(body, 'open');
        if (res.destroyed) return;
        res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': bytes });
        if (req.method === 'HEAD') {
          res.end();
          return;
        }
        await pipeline(body, res);
        snapshots.sentManifest(bytes);
      })
      .catch((err: Error) => {
        if (res.headersSent || res.destroyed) {
          log.warn({ err: err.message, slot: pull.slot }, 'a fleet host manifest answer ended early');
          res.destroy();
          return;
        }
        log.error({ err: err.message, slot: pull.slot }, 'a fleet manifest answer could not be made');
        sendJson(res, 500, errorBody('FLEET_MANIFEST', err.message));
      })
      .finally(pull.done);
  }

  async function files(req: IncomingMessage, res: ServerResponse, paths: string[]): Promise<void> {
    // cut when the slot is to be rewritten: the host sees a cut answer and starts over
    const pull = snapshots.open(String(queryOf(req).snapshot ?? ''), () => res.destroy());
    if (!pull) {
      sendJson(res, 410, errorBody('SNAPSHOT_GONE', 'no slot holds that snapshot any more'));
      return;
    }
    const files = await pull.manifest.files(paths).catch((err: Error) => err);
    if (files instanceof Error) {
      pull.done();
      log.error({ err: files.message, slot: pull.slot }, 'a fleet manifest could not be read');
      sendJson(res, 500, errorBody('FLEET_MANIFEST', files.message));
      return;
    }
    const unknown = paths.find((p) => !files.has(p));
    if (unknown !== undefined) {
      pull.done();
      sendJson(res, 400, errorBody('BAD_REQUEST', 'a path asked for is not a file of the snapshot'));
      return;
    }
    res.once('close', pull.done);
    res.setHeader('content-type', 'application/x-mirrorswap-files');
    try {
      await writeFrames(
        res,
        pull.root,
        paths.map((path) => {
          const entry = files.get(path) as { size: number; hash: string };
          return { path, size: entry.size, hash: entry.hash };
        }),
        { realParents: false, where: `slot ${pull.slot}`, sent: (n) => snapshots.sentFiles(n) },
      );
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
