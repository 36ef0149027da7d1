import type { IncomingMessage, ServerResponse } from 'node:http';
import encodeUrl from 'encodeurl';
import escapeHtml from 'escape-html';
import { Gauge } from 'prom-client';
import { httpError } from '../../src/core/errors.js';
import type { SlotName } from '../../src/store/store-layout.js';
import { BodyArena } from './body-arena.js';
import { type Entry, FileCache } from './file-cache.js';
import { HotCounter, RequestCounter } from '../mount/metrics.js';
import { type MountSurface, type MountView, MountState, type Pin, mountSurface } from '../mount/mount-state.js';
import { type ResolvedStaticOptions, type StaticOptions, resolveStaticOptions } from '../options.js';
import { NOT_FOUND, REDIRECT, requestPath, resolveRequestPath } from './path-resolver.js';
import { sendFile } from './send-file.js';

type Next = (err?: unknown) => void;

/** What a request can learn about the copy it is pinned to (`res.locals.mirrorswap` under Express). */
export interface PinnedMount {
  readonly epoch: number;
  readonly slot: SlotName;
  readonly root: string;
}

export interface MirrorStatic extends MountSurface {
  (req: IncomingMessage, res: ServerResponse, next: Next): void;
  /** Stop watching and heartbeating and remove the heartbeat file. Idempotent. */
  close(): Promise<void>;
}

function collapseLeadingSlashes(s: string): string {
  return s.replace(/^\/+/, '/');
}

/** serve-static's small HTML page for a redirect. */
function redirectDocument(location: string): string {
  const body = `Redirecting to ${escapeHtml(location)}`;
  return `<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>Redirecting</title>\n</head>\n<body>\n<pre>${body}</pre>\n</body>\n</html>\n`;
}

/**
 * Redirect a directory (or the mount point itself) to its trailing-slash
 * form, exactly as serve-static does: the original URL with "/" after its
 * path, the query kept, leading slashes collapsed (so "//evil.test" stays on
 * this site), percent-encoded (a path rewritten with "☃" by an earlier
 * middleware is sent as %E2%98%83), in serve-static's HTML page and headers.
 */
function redirectToDirectory(req: IncomingMessage, res: ServerResponse): void {
  const original = (req as IncomingMessage & { originalUrl?: string }).originalUrl ?? req.url ?? '/';
  const q = original.indexOf('?');
  const pathname = q === -1 ? original : original.slice(0, q);
  const search = q === -1 ? '' : original.slice(q);
  const location = encodeUrl(collapseLeadingSlashes(`${pathname}/`) + search);
  const doc = redirectDocument(location);
  res.statusCode = 301;
  res.setHeader('Content-Type', 'text/html; charset=UTF-8');
  res.setHeader('Content-Length', Buffer.byteLength(doc));
  res.setHeader('Content-Security-Policy', "default-src 'none'");
  res.setHeader('X-Content-Type-Options', 'nosniff');
  res.setHeader('Location', location);
  res.end(doc);
}

/** True for a request at the mount point itself without its slash: Express gives `/`, originalUrl lacks it. */
function atBareMountPoint(req: IncomingMessage, key: string): boolean {
  if (key !== '/') return false;
  const original = (req as IncomingMessage & { originalUrl?: string }).originalUrl;
  if (original === undefined) return false;
  const q = original.indexOf('?');
  return !(q === -1 ? original : original.slice(0, q)).endsWith('/');
}

/** What a retained release's cache remembers: paths and their headers, never bodies. */
const RETAINED_CACHE_BYTES = 4 * 1024 * 1024;
const RETAINED_CACHE_ENTRIES = 5000;

/** Bodies are cached for the mounted release only (`arena` when the cache admitted the path). */
function arenaFor(view: MountView<FileCache>, admitted: boolean, arena: BodyArena): BodyArena | null {
  return admitted && view.retainedUntil === undefined ? arena : null;
}

/** At most this many of the old copy's paths are looked up again in the new one, after a switch. */
const WARM_MAX_KEYS = 1000;
/** How long the lookups may go on after the switch, in the background, among the requests. */
const WARM_AFTER_MS = 100;
const WARM_CONCURRENCY = 4;

/**
 * Look up in the new copy the paths found in the old one, from the switch
 * on, for up to `WARM_AFTER_MS` while the new copy is still the one mounted.
 * The switch never waits for it: a request for a path being looked up waits
 * for that one lookup (the cache coalesces them), never for the warm-up.
 * Bounded in keys and time, so a huge cache cannot load a server for long.
 */
function warmCache(
  next: MountView<FileCache>,
  keys: string[],
  opts: ResolvedStaticOptions,
  arena: BodyArena,
  stillMounted: () => boolean,
): void {
  let i = 0;
  const until = performance.now() + WARM_AFTER_MS;
  const worker = async () => {
    while (i < keys.length && performance.now() < until && stillMounted()) {
      const key = keys[i++] as string;
      await next.data
        // a body read for a cache already let go (another epoch came) would only take the arena's room
        .resolve(key, (admitted) =>
          resolveRequestPath(key, next, opts, admitted && stillMounted() ? arena : null, next.data),
        )
        .catch(() => {});
    }
  };
  for (let w = 0; w < WARM_CONCURRENCY; w++) void worker();
}

/**
 * Serve files from whichever copy the epoch file mounts, each request wholly
 * from the copy it started on. A drop-in for `express.static` / serve-static.
 */
export function mirrorStatic(options: StaticOptions): MirrorStatic {
  const opts: ResolvedStaticOptions = resolveStaticOptions(options);
  // One arena for every epoch's bodies: a new epoch reuses the room of the old one's, in turn.
  // Entries are sure of a quarter of the budget, so bodies can never crowd them all out.
  const arena = new BodyArena({
    maxBodyBytes: opts.cacheMaxFileSize,
    maxSegmentBytes: (opts.cacheMaxBytes * 3) / 4,
    room: () => opts.cacheMaxBytes - Math.max(mount.view?.data.entryBytes ?? 0, opts.cacheMaxBytes / 4),
  });
  const mount: MountState<FileCache> = new MountState<FileCache>(opts, 'static', {
    // a retained release (skew protection) remembers paths but keeps no bodies: pinned
    // requests are few, and its bodies must not crowd out the mounted release's
    makeData: (view) =>
      view.retainedUntil === undefined
        ? new FileCache({ maxBytes: opts.cacheMaxBytes, maxEntries: opts.cacheMaxEntries }, arena)
        : new FileCache({ maxBytes: RETAINED_CACHE_BYTES, maxEntries: RETAINED_CACHE_ENTRIES }, arena),
    onDrop: (old) => old.data.clear(),
    warm: (next, previous) =>
      // the same cache may be mounted again under a new view (a publish that only retires a release)
      warmCache(next, previous.data.foundKeys(WARM_MAX_KEYS), opts, arena, () => mount.view?.data === next.data),
  });
  const registry = mount.metrics.registry;
  const requests = new RequestCounter(
    'mirrorswap_server_requests_total',
    'Requests answered from a mounted copy, by slot and status class',
    registry,
  );
  const cacheHits = new HotCounter(
    'mirrorswap_server_cache_hits_total',
    'Path lookups answered from the per-epoch cache (or by a lookup of the same path under way)',
    registry,
  );
  const cacheMisses = new HotCounter(
    'mirrorswap_server_cache_misses_total',
    'Path lookups that went to the file system',
    registry,
  );
  new Gauge({
    name: 'mirrorswap_server_cache_bytes',
    help: 'Memory the cache holds, by kind: bodies (the arena, at its real allocation) and entries (their estimated cost)',
    labelNames: ['kind'],
    registers: [registry],
    collect() {
      this.set({ kind: 'bodies' }, arena.bytes);
      this.set({ kind: 'entries' }, mount.view?.data.entryBytes ?? 0);
    },
  });
  new Gauge({
    name: 'mirrorswap_server_cache_pinned_bytes',
    help: 'Bytes of cached bodies that responses still send from: not reusable until those responses end',
    registers: [registry],
    collect() {
      this.set(arena.pinnedBytes);
    },
  });
  new Gauge({
    name: 'mirrorswap_server_cache_entries',
    help: 'Entries in the cache of the mounted epoch, by kind: files, directory redirects, negative (missing or refused)',
    labelNames: ['kind'],
    registers: [registry],
    collect() {
      const counts = mount.view?.data.counts ?? { file: 0, redirect: 0, negative: 0 };
      for (const kind of ['file', 'redirect', 'negative'] as const) this.set({ kind }, counts[kind]);
    },
  });

  function refuse(status: number, next: Next): void {
    if (opts.fallthrough) next();
    else if (status === 503) next(httpError(503, 'no copy is mounted yet'));
    // serve-static's 404 does not expose its message (the file system's, naming a path); ours says
    // only "Not Found", but a handler that reads `expose` must see what it saw before
    else if (status === 404) next(httpError(404, undefined, { expose: false }));
    else next(httpError(status));
  }

  /** Hand a refused path to the next handler, telling it which copy the request was resolved against. */
  function pass(res: ServerResponse, pin: Pin<FileCache>, status: number, next: Next): void {
    const { view } = pin;
    const locals = (res as ServerResponse & { locals?: Record<string, unknown> }).locals;
    if (locals) locals.mirrorswap = { epoch: view.epoch, slot: view.slot, root: view.root } satisfies PinnedMount;
    pin.release();
    refuse(status, next);
  }

  function answer(
    req: IncomingMessage,
    res: ServerResponse,
    next: Next,
    pin: Pin<FileCache>,
    entry: Entry,
    again: boolean,
  ): void {
    const { view } = pin;
    if (entry.kind === 'refused') {
      if (entry.status === 404 && fallsBack(req, view)) fallBack(req, res, next, pin, again, 0);
      else pass(res, pin, entry.status, next);
      return;
    }
    if (entry.kind === 'redirect') {
      redirectToDirectory(req, res);
      pin.release();
      requests.inc(view.slot, 301);
      return;
    }
    // the pin lasts as long as the copy is read: to the end of a stream, or no further than a body in memory
    const sent = sendFile(req, res, entry, opts, pin, arena);
    if (typeof sent === 'number') {
      requests.inc(view.slot, sent);
      return;
    }
    sent.then(
      (status) => {
        if (typeof status === 'number') {
          requests.inc(view.slot, status);
          return;
        }
        // The file opened is not the one the headers were built from: the copy was rewritten
        // under this server (it stalled past its lease). Never send one under the other's
        // headers: re-read the epoch file and start the request again, once.
        pin.release();
        if (again) refuse(503, next);
        else retryAfterRenewal(req, res, next, true);
      },
      (err: unknown) => {
        pin.release();
        if (res.headersSent) res.destroy(err as Error);
        else next(err);
      },
    );
  }

  /** Whether a 404 of the mounted release may be answered from a retained one (`assetFallback`). */
  function fallsBack(req: IncomingMessage, view: MountView<FileCache>): boolean {
    return (
      opts.assetFallback !== false &&
      view === mount.view &&
      mount.retained.length > 0 &&
      opts.assetFallback.test(requestPath(req.url))
    );
  }

  /**
   * Skew protection for a request that names no release: the path the mounted
   * release lacks, from the newest retained release that has it (from `i` on).
   * Each is looked up under a pin of its own, so the agent cannot reuse the
   * copy while it is read; none has it: the mounted release's 404.
   */
  function fallBack(
    req: IncomingMessage,
    res: ServerResponse,
    next: Next,
    mounted: Pin<FileCache>,
    again: boolean,
    i: number,
  ): void {
    const retained = mount.retained;
    const key = requestPath(req.url);
    for (; i < retained.length; i++) {
      const view = retained[i] as MountView<FileCache>;
      if (!mount.servable(view)) continue;
      const pin = mount.acquire(res, view);
      if (pin === null) break;
      if (pin.view !== view) {
        pin.release();
        continue;
      }
      const from = i;
      view.data
        .resolve(key, (admitted) => resolveRequestPath(key, view, opts, arenaFor(view, admitted, arena), view.data))
        .then(
          (entry) =>
            guarded(res, next, () => {
              if (entry.kind !== 'file') {
                pin.release();
                fallBack(req, res, next, mounted, again, from + 1);
                return;
              }
              mounted.release();
              mount.countServed(view, 'fallback');
              answer(req, res, next, pin, entry, again);
            }),
          (err: unknown) => {
            pin.release();
            mounted.release();
            next(err);
          },
        );
      return;
    }
    pass(res, mounted, 404, next);
  }

  /**
   * Run a step of the request path; whatever it throws (an input no check
   * foresaw) ends in `next(err)`, or a cut connection once headers are out:
   * never a rejection nobody handles, never a hung request.
   */
  function guarded(res: ServerResponse, next: Next, step: () => void): void {
    try {
      step();
    } catch (err) {
      if (res.headersSent) res.destroy(err as Error);
      else next(err);
    }
  }

  /** A request's way in: past its lease, the server renews it (re-reading the epoch file) first. */
  function handle(req: IncomingMessage, res: ServerResponse, next: Next, again: boolean): void {
    mount.admit(
      () => guarded(res, next, () => serve(req, res, next, again)),
      () => refuse(503, next),
    );
  }

  /** Renew now (the copy changed under this server), then take the request again. */
  function retryAfterRenewal(req: IncomingMessage, res: ServerResponse, next: Next, again: boolean): void {
    mount.renew().then(
      () => handle(req, res, next, again),
      () => refuse(503, next),
    );
  }

  function serve(req: IncomingMessage, res: ServerResponse, next: Next, again: boolean): void {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      if (opts.fallthrough) {
        next();
        return;
      }
      res.statusCode = 405;
      res.setHeader('Allow', 'GET, HEAD');
      res.setHeader('Content-Length', '0');
      res.end();
      return;
    }
    const pin = mount.acquire(res, mount.pinnedFor(req, res));
    if (pin === null) {
      refuse(503, next);
      return;
    }
    const { view } = pin;
    const key = requestPath(req.url);
    // the mount point itself ("/static" under app.use('/static', …)) redirects to "/static/", as serve-static does
    if (atBareMountPoint(req, key)) {
      answer(req, res, next, pin, opts.redirect ? REDIRECT : NOT_FOUND, again);
      return;
    }
    const cached = view.data.get(key);
    if (cached !== undefined) {
      cacheHits.inc();
      answer(req, res, next, pin, cached, again);
      return;
    }
    // a path the warm-up is looking up already is answered by that lookup: not a second trip to the disk
    if (view.data.isPending(key)) cacheHits.inc();
    else cacheMisses.inc();
    view.data
      .resolve(key, (admitted) => resolveRequestPath(key, view, opts, arenaFor(view, admitted, arena), view.data))
      .then(
        (entry) => guarded(res, next, () => answer(req, res, next, pin, entry, again)),
        (err: unknown) => {
          pin.release();
          next(err);
        },
      );
  }

  const middleware = function mirrorStaticMiddleware(req: IncomingMessage, res: ServerResponse, next: Next): void {
    handle(req, res, next, false);
  } as MirrorStatic;

  return Object.assign(middleware, { ...mountSurface(mount), close: () => mount.close() });
}
