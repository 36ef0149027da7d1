import { errorBody } from '../../core/errors.js';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { pathOf, queryOf, send, sendJson } from '../../core/http-io.js';
import { bearerMatches } from '../../core/token-match.js';
import type { Logger } from '../../core/logger.js';
import type { ManifestEntry } from '../../tree/manifest.js';
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
    const pull = snapshots.open(String(query.snapshot ?? ''), query.since ? String(query.since) : null);
    if (!pull) {
      sendJson(res, 410, errorBody('SNAPSHOT_GONE', 'no slot holds that snapshot any more'));
      return;
    }
    try {
      const body = Buffer.from(
        JSON.stringify(
          pull.delta
            ? { snapshot: query.snapshot, base: query.since, ...pull.delta }
            : { snapshot: query.snapshot, base: null, changed: pull.manifest, removed: [] },
        ),
      );
      snapshots.sentManifest(body.length);
      send(res, 200, body, 'application/json; charset=utf-8');
    } finally {
      pull.done();
    }
  }

  async function files(req: IncomingMessage, res: ServerResponse, paths: string[]): Promise<void> {
    // cut when the slot is to be rewritten: the host sees a cut answer and starts over
    const pull = snapshots.open(String(queryOf(req).snapshot ?? ''), null, () => res.destroy());
    if (!pull) {
      sendJson(res, 410, errorBody('SNAPSHOT_GONE', 'no slot holds that snapshot any more'));
      return;
    }
    const files = filesOf(pull.manifest);
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
          const entry = files.get(path) as ManifestEntry;
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
