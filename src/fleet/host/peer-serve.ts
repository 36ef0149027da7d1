import type { IncomingMessage, ServerResponse } from 'node:http';
import { setTimeout as delay } from 'node:timers/promises';
import { errorBody } from '../../core/errors.js';
import { pathOf, queryOf, sendJson } from '../../core/http-io.js';
import type { Logger } from '../../core/logger.js';
import { bearerMatches } from '../../core/token-match.js';
import type { SlotMap, SlotName } from '../../store/store-layout.js';
import { BAD_PATHS, readFilesRequest, writeFrames } from '../fleet-files.js';
import type { PullProgress } from './pull-progress.js';

export interface PeerServeOptions {
  /** The fleet token: what peers give, as they give the coordinator. */
  token: string;
  roots: Readonly<SlotMap<string>>;
  /** Peer pulls served at once; more are answered 503. 0 serves none. */
  limit: number;
  /** How long pulls of a slot about to be rewritten run on before they are cut. */
  graceMs: number;
  /** How long a peer may take to send its request (a short list of paths); default `PEER_REQUEST_MS`. */
  requestTimeoutMs?: number;
  log: Logger;
}

/** What this host served its peers, for status and metrics. */
export interface PeerServeStats {
  /** Peer pulls being served now. */
  active: number;
  /** Peer pulls answered in all, and their bytes (frames included). */
  pulls: number;
  bytes: number;
  /** Peer pulls refused busy (503: at the limit), and cut before a slot was rewritten. */
  busy: number;
  cut: number;
}

/** A peer whose answer takes nothing for this long is cut (its place goes to another). */
const PEER_IDLE_MS = 15_000;

/**
 * Serving a snapshot still being pulled, how long a file not yet placed is
 * waited for before the answer ends, after the whole frames sent so far (the
 * peer asks again for the rest, here or elsewhere): what a peer asks for
 * (`?wait=`, half its silence bound), at most MAX_FILE_WAIT_MS; this when it
 * names none.
 */
const DEFAULT_FILE_WAIT_MS = 1000;
const MAX_FILE_WAIT_MS = 10_000;

/**
 * The whole time a peer has to send its request: a list of at most
 * MAX_PATHS_PER_REQUEST paths, about a megabyte at most. A request sent a
 * byte now and then is never idle long enough for a socket timeout, and
 * would hold one of the `limit` places for as long as Node's own (5 min).
 */
const PEER_REQUEST_MS = 10_000;

interface SlotState {
  /** The snapshot the slot holds whole, served to peers; null while it is being rewritten or unknown. */
  id: string | null;
  /** The snapshot being pulled into the slot, served as its files are placed (`share`); null when none. */
  pulling: { id: string; progress: PullProgress } | null;
  /** Peer pulls reading the slot now, each with how to cut it. */
  pulls: Set<() => void>;
}

/**
 * A host's side of peers sharing the bytes: the files of a snapshot one of
 * its slots holds whole, served to other hosts as the coordinator serves
 * them (`POST /v1/fleet/files?snapshot=S`, the fleet token, the same
 * frames); and, while the host still pulls a snapshot into a slot, each file
 * of it once placed (`share`: a file not yet there is waited for as long as
 * the peer asks, then the answer ends after whole frames and the peer asks
 * again; so the rounds of pulls overlap). Only while the slot holds it (or
 * the pull goes on): before the host rewrites a slot,
 * `release` stops new pulls of it and cuts those under way (the peer sees a
 * cut answer and asks elsewhere). A file is read only as a regular file
 * under real directories of the slot, whatever path is asked for; the side
 * that pulls checks every file against the coordinator's manifest.
 */
export class PeerServer {
  readonly #opts: PeerServeOptions;
  /** Each slot the host has held a snapshot in (a and b, and c… on a host keeping releases). */
  readonly #slots = new Map<SlotName, SlotState>();
  readonly #stats: PeerServeStats = { active: 0, pulls: 0, bytes: 0, busy: 0, cut: 0 };

  constructor(opts: PeerServeOptions) {
    this.#opts = opts;
  }

  /** Whether this host serves peers at all. */
  get serving(): boolean {
    return this.#opts.limit > 0;
  }

  stats(): PeerServeStats {
    return { ...this.#stats };
  }

  /** The snapshot `slot` holds whole now (after a pull into it, or as recorded at start): served from now on. */
  hold(slot: SlotName, id: string | null): void {
    const state = this.#state(slot);
    state.id = id;
    state.pulling = null;
  }

  /**
   * `slot` is being pulled into, to hold `id`: its files are served as
   * `progress` says they are placed, until `hold` (the pull is done) or
   * `release`. A pull that fails cuts the answers waiting on it (`PullProgress.fail`).
   */
  share(slot: SlotName, id: string, progress: PullProgress): void {
    const state = this.#state(slot);
    state.id = null;
    state.pulling = { id, progress };
  }

  /** Stop serving what `slot` is being pulled to hold (the pull failed); answers under way are cut by their progress. */
  unshare(slot: SlotName): void {
    this.#state(slot).pulling = null;
  }

  #state(slot: SlotName): SlotState {
    let state = this.#slots.get(slot);
    if (state === undefined) {
      state = { id: null, pulling: null, pulls: new Set() };
      this.#slots.set(slot, state);
    }
    return state;
  }

  /**
   * Before `slot` is rewritten: no new peer pull of it starts, and those
   * under way get `graceMs`, then are cut; resolves once they ended (a cut
   * answer ends at once; at most a few seconds are waited in all).
   */
  async release(slot: SlotName): Promise<void> {
    const state = this.#state(slot);
    state.id = null;
    state.pulling = null;
    const started = Date.now();
    let cut = false;
    while (state.pulls.size > 0 && Date.now() - started < this.#opts.graceMs + 5000) {
      if (!cut && Date.now() - started >= this.#opts.graceMs) {
        this.#stats.cut += state.pulls.size;
        for (const cutPull of [...state.pulls]) cutPull();
        cut = true;
      }
      await delay(10);
    }
  }

  /** Answer `req` if it is a peer's files request (true), else leave it (false). */
  handle(req: IncomingMessage, res: ServerResponse): boolean {
    const path = pathOf(req.url).toLowerCase();
    if (path !== '/v1/fleet/files' && path !== '/v1/fleet/files/') return false;
    void this.#files(req, res);
    return true;
  }

  async #files(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!bearerMatches(req.headers.authorization, this.#opts.token)) {
      sendJson(res, 401, errorBody('UNAUTHORIZED', 'the fleet token is required'));
      return;
    }
    if (req.method !== 'POST') {
      res.setHeader('allow', 'POST');
      sendJson(res, 405, errorBody('METHOD_NOT_ALLOWED', 'a files request is a POST'));
      return;
    }
    // refused before its body is read: a busy host answers at once, and the peer asks another
    if (this.#stats.active >= this.#opts.limit) {
      this.#stats.busy++;
      res.setHeader('connection', 'close');
      sendJson(
        res,
        503,
        errorBody(
          'PEER_BUSY',
          this.serving ? `this host serves ${this.#opts.limit} peer pulls already` : 'this host serves no peers',
        ),
      );
      return;
    }
    const query = queryOf(req);
    const snapshot = String(query.snapshot ?? '');
    // how long the peer lets a file of a pull under way be waited for before the answer ends there
    const asked = Number(query.wait);
    const waitMs = Number.isFinite(asked) && asked >= 0 ? Math.min(asked, MAX_FILE_WAIT_MS) : DEFAULT_FILE_WAIT_MS;
    // a slot holding it whole first; else one it is being pulled into
    const slotOf = (): [SlotName, PullProgress | null] | undefined => {
      if (snapshot === '') return undefined;
      for (const [slot, s] of this.#slots) if (s.id === snapshot) return [slot, null];
      for (const [slot, s] of this.#slots) if (s.pulling?.id === snapshot) return [slot, s.pulling.progress];
      return undefined;
    };
    this.#stats.active++;
    let state: SlotState | null = null;
    const cut = () => res.destroy();
    try {
      let paths: string[] | null;
      const requestDeadline = setTimeout(cut, this.#opts.requestTimeoutMs ?? PEER_REQUEST_MS);
      try {
        paths = await readFilesRequest(req);
      } catch (err) {
        const status = (err as { status?: number }).status ?? 400;
        sendJson(res, status, errorBody('BAD_REQUEST', (err as Error).message));
        return;
      } finally {
        clearTimeout(requestDeadline);
      }
      if (paths === null) {
        sendJson(res, 400, errorBody('BAD_REQUEST', BAD_PATHS));
        return;
      }
      // looked up once the body is read: the slot may have been released meanwhile
      const found = slotOf();
      const [slot, progress] = found ?? [undefined, null];
      const root = slot === undefined ? undefined : this.#opts.roots[slot];
      if (slot === undefined || root === undefined) {
        sendJson(res, 410, errorBody('SNAPSHOT_GONE', 'no slot of this host holds that snapshot (now)'));
        return;
      }
      state = this.#state(slot);
      state.pulls.add(cut);
      // a peer that stops reading (stopped, cut off) does not hold a place for ever
      res.setTimeout(PEER_IDLE_MS, cut);
      this.#stats.pulls++;
      res.setHeader('content-type', 'application/x-mirrorswap-files');
      // the answer's head at once: the peer times it, and the first file may still be on its way here
      const hungUp = new AbortController();
      res.once('close', () => hungUp.abort(new Error('the peer hung up')));
      if (progress) res.flushHeaders();
      await writeFrames(
        res,
        root,
        paths.map((path) => ({ path })),
        {
          realParents: true,
          where: `slot ${slot}`,
          ...(progress ? { ready: (path: string) => progress.ready(path, waitMs, hungUp.signal) } : {}),
          sent: (n) => {
            this.#stats.bytes += n;
          },
        },
      );
      res.end();
    } catch (err) {
      // the peer sees a cut answer and asks another: never a wrong file
      this.#opts.log.warn(
        { err: (err as Error).message, snapshot },
        res.destroyed ? 'a peer pull ended before its answer did' : 'a peer pull failed',
      );
      res.destroy();
    } finally {
      state?.pulls.delete(cut);
      this.#stats.active--;
    }
  }
}
