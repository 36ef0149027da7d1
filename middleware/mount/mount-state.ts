import type { IncomingMessage, ServerResponse } from 'node:http';
import { realpath } from 'node:fs/promises';
import { DEFAULT_LEASE_MS, type EpochRecord, releaseEpochOf, slotRoot } from '../../src/store/epoch-file.js';
import { MirrorswapError } from '../../src/core/errors.js';
import type { Heartbeat, ServedCounts } from '../../src/store/heartbeat.js';
import type { SlotMap, SlotName } from '../../src/store/store-layout.js';
import { Gauge } from 'prom-client';
import { EpochWatcher } from './epoch-watcher.js';
import { type FleetMembershipView, FleetReadiness } from './fleet-readiness.js';
import { HeartbeatWriter } from './heartbeat-writer.js';
import { answerPrivately, pinOf } from './release-pins.js';
import { ServerMetrics, metricsHandler } from './metrics.js';
import type { ResolvedMountOptions } from '../options.js';

/** What `MountState.pinnedFor` says of a request with no response yet (an upgrade). */
export interface PinNote {
  /** Pinned to a retained release outside the URL: its answer is `PINNED_PRIVATELY`. */
  privately: boolean;
}

/** One mounted epoch, as a request sees it for its whole life. */
export interface MountView<T> {
  readonly epoch: number;
  readonly slot: SlotName;
  /** The release id the epoch's sync named, if any. */
  readonly release?: string | undefined;
  /** The epoch that published this release: what a pin names it by when it has no id. */
  readonly releaseEpoch: number;
  /**
   * Set for a retained release (skew protection): served only to requests
   * pinned to it, or as an asset fallback; until this time (ms since 1970;
   * Infinity when `--skew-max-age` sets no end).
   */
  readonly retainedUntil?: number;
  /** The slot root as configured. */
  readonly root: string;
  /** The same root with symlinks resolved: containment checks compare against it. */
  readonly realRoot: string;
  /** Per-epoch data of the middleware (a cache, an upstream); dropped with the epoch. */
  readonly data: T;
}

/**
 * A request's hold on the view it started on. `release()` may be called any
 * number of times and counts once; it is also called by itself when the
 * response (or upgraded socket) it was taken for closes, which it does however
 * it ends, or at once if it had already closed when it was taken: no path out
 * of a request can leak it.
 */
export interface Pin<T> {
  readonly view: MountView<T>;
  /** The request no longer reads the copy (idempotent; also done when the response closes). */
  release(): void;
  /** Run `fn` when the response closes (at once if it has): for what must outlive the copy's pin, like bytes a socket may still be writing. */
  untilClose(fn: () => void): void;
}

/** What a middleware keeps per epoch, and what it does as epochs come and go. */
export interface MountHooks<T> {
  /** The per-epoch data of a new view (a cache, an upstream). */
  makeData: (view: Omit<MountView<T>, 'data'>) => T;
  /** Called once a view is no longer mounted (its requests may still be running). */
  onDrop?: (view: MountView<T>) => void;
  /**
   * Called as `next` is mounted, before `previous` is dropped: start what makes
   * the new view fast (in the background: the switch never waits on it). A
   * throw is ignored.
   */
  warm?: (next: MountView<T>, previous: MountView<T>) => void;
}

/**
 * The server side of the contract: which epoch is mounted, how many requests
 * hold each slot, and the heartbeat that tells the agent both.
 *
 * Requests take the current view with `acquire()` and give it back with
 * `release()`. This is the SRCU pattern of the design: a reader pins the
 * slot it started on, the writer (the epoch switch) never waits for readers,
 * and the agent learns from the heartbeat when the old slot's count is zero.
 * JavaScript runs `acquire()` to completion without interleaving, so the
 * increment and the read of the current view cannot be split by a switch and
 * the re-check that threads would need is not required here.
 */
export class MountState<T> {
  readonly metrics: ServerMetrics;
  readonly #opts: ResolvedMountOptions;
  readonly #hooks: MountHooks<T>;
  readonly #watcher: EpochWatcher;
  readonly #heartbeat: HeartbeatWriter;
  readonly #fleet: FleetReadiness;
  readonly #inflight: SlotMap<number> = { a: 0, b: 0 };
  /** When the view in use was mounted (ms since 1970): the heartbeat's `switchedAt`. */
  #switchedAt: number | null = null;
  #view: MountView<T> | null = null;
  /** Views of the releases the epoch file retains, newest first (skew protection). */
  #retained: MountView<T>[] = [];
  /** Requests served from each retained release (by the epoch that published it), for the heartbeat. */
  readonly #served = new Map<number, ServedCounts>();
  #lastError = '';
  #closing: Promise<void> | undefined;
  /** Set while close() waits for the requests in flight to finish. */
  #drained: (() => void) | undefined;
  /** When the last heartbeat on disk was stamped (ms since the epoch): the lease runs from there. */
  #renewedAt = 0;
  /** The first heartbeat was tried: from then on, a server that never renewed holds no lease at all. */
  #started = false;
  /** The lease the epoch file states (the agent's server TTL). */
  #lease = DEFAULT_LEASE_MS;
  #renewing: Promise<void> | undefined;
  /** When a renewal last failed: requests fail fast for a heartbeat interval instead of each retrying. */
  #renewFailedAt = Number.NEGATIVE_INFINITY;
  readonly ready: Promise<void>;

  constructor(opts: ResolvedMountOptions, kind: Heartbeat['kind'], hooks: MountHooks<T>) {
    this.#opts = opts;
    this.#hooks = hooks;
    this.metrics = new ServerMetrics(opts.registry, () => this.#inflight);
    this.#watcher = new EpochWatcher({
      epochFile: opts.epochFile,
      mode: opts.watch,
      pollInterval: opts.pollInterval,
      onAdvance: (record) => this.#advance(record),
      onError: (err) => this.#reportEpochError(err),
    });
    this.#heartbeat = new HeartbeatWriter({
      serversDir: opts.serversDir,
      id: opts.serverId,
      interval: opts.heartbeatInterval,
      kind,
      snapshot: () => ({
        epoch: this.#view?.epoch ?? 0,
        mounted: this.#view?.slot ?? null,
        ...(this.#switchedAt !== null ? { switchedAt: new Date(this.#switchedAt).toISOString() } : {}),
        inflight: { ...this.#inflight },
        ...(this.#served.size > 0 ? { served: Object.fromEntries(this.#served) } : {}),
      }),
      onError: (err) => this.#log('warn', { err: err.message, file: this.#heartbeat.file }, 'heartbeat write failed'),
      onWritten: (at) => {
        this.#renewedAt = Math.max(this.#renewedAt, at);
      },
    });
    this.#fleet = new FleetReadiness(opts.epochFile, opts.heartbeatInterval);
    this.#registerReadinessMetrics();
    this.ready = this.#start();
    // Callers that never await `ready` must not see an unhandled rejection; errors are logged.
    this.ready.catch(() => {});
  }

  async #start(): Promise<void> {
    try {
      await this.#watcher.start();
      await this.#heartbeat.start();
      await this.#fleet.start();
    } finally {
      this.#started = true;
    }
  }

  get view(): MountView<T> | null {
    return this.#view;
  }

  get serverId(): string {
    return this.#opts.serverId;
  }

  get watchMode(): 'native' | 'poll' {
    return this.#watcher.mode;
  }

  inflight(): Readonly<SlotMap<number>> {
    return { ...this.#inflight };
  }

  /** The retained releases' views, newest first (expired ones included: see `pinned`). */
  get retained(): readonly MountView<T>[] {
    return this.#retained;
  }

  /**
   * The view of the release `name` names (its id, or the epoch that published
   * it): the mounted one or a retained one still servable. 'expired' for a
   * retained one past its `--skew-max-age`; null for none.
   */
  pinned(name: string, now = Date.now()): MountView<T> | 'expired' | null {
    const view = this.#view;
    if (view === null) return null;
    // a release id first: one made of digits must not be taken for another release's epoch
    for (const names of [
      (v: MountView<T>) => v.release === name,
      (v: MountView<T>) => String(v.releaseEpoch) === name,
    ]) {
      if (names(view)) return view;
      for (const r of this.#retained) {
        if (!names(r)) continue;
        return (r.retainedUntil ?? Number.POSITIVE_INFINITY) >= now ? r : 'expired';
      }
    }
    return null;
  }

  /**
   * The retained release a request names (skew protection: `pinQuery`,
   * `pinHeader`, `pinCookie`), counted in `mirrorswap_server_pinned_requests_total`;
   * undefined for the mounted release (named, or nothing named, or one not
   * retained). To be passed to `acquire` in the same turn. An answer pinned by
   * the header or the cookie is marked `Cache-Control: private, no-cache` on
   * `res`: the URL alone does not say which release it is. An upgrade has no
   * response yet: given a `PinNote`, it is told instead (`privately`), for
   * the answer of an upstream that declines the upgrade.
   */
  pinnedFor(req: IncomingMessage, res?: ServerResponse | PinNote): MountView<T> | undefined {
    if (this.#retained.length === 0) return undefined;
    const pin = pinOf(req, this.#opts.pins);
    if (pin === null) return undefined;
    const found = this.pinned(pin.name);
    if (found === null) this.metrics.pins.inc({ result: 'unknown' });
    else if (found === 'expired') this.metrics.pins.inc({ result: 'expired' });
    else if (found !== this.#view) {
      this.countServed(found, 'pinned');
      // named outside the URL: a shared cache keyed by the URL must not keep this answer for others
      if (res !== undefined && pin.via !== 'query') {
        if ('setHeader' in res) answerPrivately(res);
        else res.privately = true;
      }
      return found;
    }
    return undefined;
  }

  /**
   * Count a request served from the retained release `view`: named by a pin,
   * or as an asset the mounted release lacks (`mirrorswap_server_pinned_requests_total`,
   * and per release in the heartbeat, which status sums over the servers).
   */
  countServed(view: MountView<T>, how: keyof ServedCounts): void {
    this.metrics.pins.inc({ result: how });
    let counts = this.#served.get(view.releaseEpoch);
    if (counts === undefined) {
      counts = { pinned: 0, fallback: 0 };
      this.#served.set(view.releaseEpoch, counts);
    }
    counts[how]++;
  }

  /** Whether `view` may still be served from: the mounted one, or one retained and not expired. */
  servable(view: MountView<T>, now = Date.now()): boolean {
    if (view === this.#view) return true;
    return this.#retained.includes(view) && (view.retainedUntil ?? Number.POSITIVE_INFINITY) >= now;
  }

  /** Requests in flight on every slot. */
  #inflightTotal(): number {
    let total = 0;
    for (const n of Object.values(this.#inflight)) total += n;
    return total;
  }

  /**
   * Pin the mounted view for one request; null while nothing is mounted (or
   * while closing). The pin is released when `res` (the response, or an
   * upgraded socket) finishes or closes, even if it already has.
   */
  acquire(
    res: NodeJS.EventEmitter & (NodeJS.WritableStream | NodeJS.ReadableStream),
    pinnedTo?: MountView<T>,
  ): Pin<T> | null {
    // a view other than the mounted one only while servable (`pinned`, `servable`: checked by the caller in the same turn)
    const view = pinnedTo !== undefined && this.servable(pinnedTo) ? pinnedTo : this.#view;
    if (view === null || this.#closing) return null;
    this.#inflight[view.slot] = (this.#inflight[view.slot] ?? 0) + 1;
    const pin = new RequestPin(view, () => this.#release(view));
    // One listener, not stream.finished(): a response emits 'close' however it ends (finished,
    // client gone, destroyed), and one already closed is released at once. finished() would add
    // eight listeners to every request of the hot path for the same guarantee.
    if ((res as { destroyed?: boolean }).destroyed || (res as { closed?: boolean }).closed) pin.closed();
    else {
      res.once('close', pin.closed);
      closeWithConnection(res);
    }
    return pin;
  }

  /** Unpin; when a slot no longer mounted drains to zero, tell the agent at once. */
  #release(view: MountView<T>): void {
    const left = (this.#inflight[view.slot] ?? 1) - 1;
    this.#inflight[view.slot] = left;
    // the agent may be waiting for this slot: one neither mounted nor retained any more
    if (left === 0 && this.#view?.slot !== view.slot && !this.#retained.some((r) => r.slot === view.slot)) {
      void this.#heartbeat.writeNow();
    }
    if (this.#drained && this.#inflightTotal() === 0) this.#drained();
  }

  /**
   * Whether this server went longer than half its lease without renewing its
   * heartbeat (a stopped process, a paused VM, a hung mount): the agent may
   * already count it as dead and be rewriting the copy it mounts, so it must
   * re-read the epoch file (`renew()`) before it serves anything again. Half,
   * so a clock a little off or a slow write never leaves it serving past
   * the agent's own deadline.
   */
  leaseLapsed(now = Date.now()): boolean {
    // never renewed (its first heartbeat failed): the agent does not know this server, and may
    // rewrite the copy it mounts at any time
    if (this.#renewedAt === 0) return this.#started;
    return now - this.#renewedAt > this.#lease / 2;
  }

  /**
   * Re-read the epoch file, then write a heartbeat: the lease runs again. One
   * at a time; after a failure (a full or hung state disk) requests are
   * refused at once for a heartbeat interval rather than each trying again.
   */
  renew(): Promise<void> {
    if (Date.now() - this.#renewFailedAt < this.#opts.heartbeatInterval) {
      return Promise.reject(new MirrorswapError('LEASE', 'the heartbeat could not be renewed'));
    }
    this.#renewing ??= (async () => {
      try {
        const asked = Date.now();
        await this.#watcher.check();
        await this.#heartbeat.writeNow();
        if (this.#renewedAt < asked) throw new MirrorswapError('LEASE', 'the heartbeat could not be renewed');
      } catch (err) {
        this.#renewFailedAt = Date.now();
        throw err;
      } finally {
        this.#renewing = undefined;
      }
    })();
    return this.#renewing;
  }

  /**
   * Run `serve` for a request once this server may serve: at once while its
   * lease holds, after a renewal when it lapsed (the agent may count it dead
   * and be rewriting the copy it mounts), or `refuse` when it cannot renew.
   * Every middleware enters through here, on requests and upgrades alike.
   */
  admit(serve: () => void, refuse: () => void): void {
    if (!this.leaseLapsed()) serve();
    else this.renew().then(serve, refuse);
  }

  /**
   * Whether this server should take traffic (what `/readyz` says): a copy is
   * mounted, it is not closing, and on a fleet host its host agent's
   * membership holds and it serves the fleet's committed epoch. Computed from
   * memory and the clock: it never waits on a disk or a process.
   */
  readiness(now = Date.now()): ReadinessState {
    const epoch = this.#view?.epoch ?? 0;
    const fleet = this.#fleet.view();
    const base = { epoch, slot: this.#view?.slot ?? null, fleet };
    if (this.#closing) return { ...base, ready: false, reason: 'this server is shutting down' };
    if (epoch === 0) return { ...base, ready: false, reason: 'no copy is mounted yet (the store has had no sync)' };
    return { ...base, ...this.#fleet.judge(epoch, now) };
  }

  #registerReadinessMetrics(): void {
    const registers = [this.metrics.registry];
    const self = this;
    new Gauge({
      name: 'mirrorswap_server_ready',
      help: 'Whether this server should take traffic (what /readyz says): 1 ready, 0 not',
      registers,
      collect() {
        this.set(self.readiness().ready ? 1 : 0);
      },
    });
    new Gauge({
      name: 'mirrorswap_server_fleet_member',
      help: "On a fleet host: 1 while its host agent's fleet membership holds, 0 once it lapsed or was lost",
      labelNames: ['host'],
      registers,
      collect() {
        this.reset();
        const fleet = self.#fleet.view();
        if (!fleet) return;
        const until = fleet.until === null ? Number.NaN : Date.parse(fleet.until);
        this.set({ host: fleet.host }, fleet.member && until > Date.now() ? 1 : 0);
      },
    });
  }

  /** Re-read the epoch file now instead of waiting for the watcher. */
  refresh(): Promise<void> {
    return this.#watcher.check();
  }

  async #advance(record: EpochRecord): Promise<void> {
    const root = this.#opts.roots[record.mounted] ?? slotRoot(record, this.#opts.epochFile);
    let realRoot: string;
    try {
      realRoot = await realpath(root);
    } catch (err) {
      throw new MirrorswapError(
        'SLOT_ROOT',
        `epoch ${record.epoch} mounts slot ${record.mounted} at ${root}, which cannot be opened: ${(err as Error).message}; still serving the previous epoch`,
        { cause: err },
      );
    }
    this.#lease = record.lease ?? DEFAULT_LEASE_MS;
    const base = {
      epoch: record.epoch,
      slot: record.mounted,
      release: record.release,
      releaseEpoch: releaseEpochOf(record),
      root,
      realRoot,
    };
    const previous = this.#view;
    // The same release mounted again (a publish that only retires a retained copy): the copy
    // was not written meanwhile, so its per-epoch data (the cache) stays.
    const same = previous !== null && previous.slot === base.slot && previous.releaseEpoch === base.releaseEpoch;
    const next = same ? { ...base, data: previous.data } : { ...base, data: this.#hooks.makeData(base) };
    const retained = await this.#retainedViews(record);
    const dropped = this.#retained.filter((v) => !retained.includes(v));
    this.#view = next;
    this.#switchedAt = Date.now();
    this.#retained = retained;
    // counts of releases no longer retained leave the heartbeat (a release mounted again is not counted)
    for (const epoch of this.#served.keys())
      if (!retained.some((v) => v.releaseEpoch === epoch)) this.#served.delete(epoch);
    // The switch does not wait for the new copy to warm: on a machine where every web server wakes
    // at a fleet's commit, a head start of lookups held the last server's switch by tens of ms, to
    // spare its first requests lookups they now share with the warm-up (the cache coalesces them).
    if (previous && !same) {
      try {
        this.#hooks.warm?.(next, previous);
      } catch {
        // a warm-up is only ever a head start: the switch is done, and the old view must still be dropped
      }
      this.#hooks.onDrop?.(previous);
    }
    for (const v of dropped) this.#hooks.onDrop?.(v);
    this.#lastError = '';
    this.metrics.epoch.set(record.epoch);
    this.metrics.switches.inc();
    const lag = (this.#switchedAt - Date.parse(record.publishedAt)) / 1000;
    if (previous !== null && lag >= 0) this.metrics.switchLag.observe(lag);
    await this.#heartbeat.writeNow();
  }

  /**
   * The views of the releases `record` retains: the ones this server has for
   * the same release kept (their caches with them), the others made. One whose
   * root cannot be opened is left out (pinned requests then get the mounted
   * release), never failing the switch.
   */
  async #retainedViews(record: EpochRecord): Promise<MountView<T>[]> {
    const out: MountView<T>[] = [];
    for (const r of record.retained ?? []) {
      const until = r.until === undefined ? Number.POSITIVE_INFINITY : Date.parse(r.until);
      const had = this.#retained.find((v) => v.slot === r.slot && v.releaseEpoch === r.epoch);
      if (had) {
        out.push(had.retainedUntil === until ? had : { ...had, retainedUntil: until });
        continue;
      }
      const root = this.#opts.roots[r.slot] ?? slotRoot(record, this.#opts.epochFile, r.slot);
      let realRoot: string;
      try {
        realRoot = await realpath(root);
      } catch (err) {
        this.#log('warn', { slot: r.slot, root, err: (err as Error).message }, 'a retained release cannot be opened');
        continue;
      }
      // a release new to the list (the mounted one of a moment ago, say): a fresh cache of its own
      const base = { epoch: r.epoch, slot: r.slot, release: r.release, releaseEpoch: r.epoch, root, realRoot };
      const withEnd = { ...base, retainedUntil: until };
      try {
        out.push({ ...withEnd, data: this.#hooks.makeData(withEnd) });
      } catch (err) {
        // a proxy with no upstream for that slot, say: pins to it get the mounted release
        this.#log('warn', { slot: r.slot, err: (err as Error).message }, 'a retained release cannot be served');
      }
    }
    return out;
  }

  #reportEpochError(err: Error): void {
    this.metrics.epochReadErrors.inc();
    // Log each distinct problem once, not on every poll.
    if (err.message === this.#lastError) return;
    this.#lastError = err.message;
    this.#log('warn', { code: (err as MirrorswapError).code, epochFile: this.#opts.epochFile }, err.message);
  }

  #log(level: 'warn' | 'error', obj: object, msg: string): void {
    const logger = this.#opts.logger;
    if (logger) logger[level](obj, msg);
    else process.emitWarning(msg, { code: 'MIRRORSWAP', detail: JSON.stringify(obj) });
  }

  /**
   * Take no new requests, wait for those in flight to finish (at most
   * `closeTimeout`) while the heartbeat keeps reporting them, then stop
   * watching and heartbeating and remove this server's heartbeat file: the
   * agent never reuses a copy a closing server still reads. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.ready.catch(() => {});
      await this.#watcher.close();
      if (this.#inflightTotal() > 0) {
        let timer: NodeJS.Timeout | undefined;
        // armed before anything is awaited: a release that lands meanwhile must end the wait
        const drained = new Promise<void>((resolve) => {
          this.#drained = resolve;
          timer = setTimeout(resolve, this.#opts.closeTimeout);
        });
        await this.#heartbeat.writeNow(); // the agent sees what is still in flight now, not a second later
        if (this.#inflightTotal() > 0) await drained;
        clearTimeout(timer);
        this.#drained = undefined;
        const left = this.#inflightTotal();
        if (left > 0) {
          this.#log(
            'warn',
            { inflight: { ...this.#inflight }, closeTimeout: this.#opts.closeTimeout },
            `closing with ${left} requests still in flight after closeTimeout`,
          );
        }
      }
      await this.#heartbeat.close();
      this.#fleet.close();
      if (this.#view) this.#hooks.onDrop?.(this.#view);
      for (const v of this.#retained) this.#hooks.onDrop?.(v);
    })();
    return this.#closing;
  }
}

/**
 * A pipelined response queued behind earlier ones has no socket yet, and if
 * the connection dies before its turn, Node drops it without a word: no
 * 'close', ever. Its pin would count a request in flight for good (a drain
 * waiting on it forever), and the stream or upstream exchange it started
 * would stay open. So a queued response is closed with its connection here,
 * which ends it as a client hang-up ends any other. A response that has its
 * socket needs nothing: Node closes it with the socket.
 */
function closeWithConnection(res: NodeJS.EventEmitter): void {
  const response = res as ServerResponse;
  if (response.socket !== null || response.req?.socket == null) return;
  const connection = response.req.socket;
  // one listener per connection, however many responses queue on it
  let queued = queuedOn.get(connection);
  if (queued === undefined) {
    const responses = new Set<ServerResponse>();
    queued = responses;
    queuedOn.set(connection, responses);
    connection.once('close', () => {
      queuedOn.delete(connection);
      for (const r of responses) closeDropped(r);
    });
  }
  const set = queued;
  set.add(response);
  response.once('close', () => set.delete(response));
}

/** Responses queued behind others on a connection, by connection. */
const queuedOn = new WeakMap<NodeJS.EventEmitter, Set<ServerResponse>>();

/** End a response Node dropped with its connection, as a client hang-up ends one. */
function closeDropped(response: ServerResponse): void {
  response.destroy();
  // destroy() of a response without a socket waits for one that never comes: say it closed
  if (!response.closed) response.emit('close');
}

/**
 * One request's pin. A class rather than an object of closures: the hot path
 * makes one per request, and only the 'close' listener needs binding.
 */
class RequestPin<T> implements Pin<T> {
  readonly view: MountView<T>;
  #unpin: (() => void) | undefined;
  /** What runs at close: one function (the common case, a body's segment) or several. */
  #atClose: (() => void) | (() => void)[] | undefined;
  #isClosed = false;

  constructor(view: MountView<T>, unpin: () => void) {
    this.view = view;
    this.#unpin = unpin;
  }

  release(): void {
    const unpin = this.#unpin;
    this.#unpin = undefined;
    unpin?.();
  }

  untilClose(fn: () => void): void {
    if (this.#isClosed) fn();
    else if (this.#atClose === undefined) this.#atClose = fn;
    else if (typeof this.#atClose === 'function') this.#atClose = [this.#atClose, fn];
    else this.#atClose.push(fn);
  }

  /** The response closed: release, and run what waited for it. Bound: it is the 'close' listener. */
  readonly closed = (): void => {
    this.#isClosed = true;
    this.release();
    const atClose = this.#atClose;
    this.#atClose = undefined;
    if (typeof atClose === 'function') atClose();
    else if (atClose) for (const fn of atClose) fn();
  };
}

/** What `readiness()` answers: whether to take traffic, why not, and the fleet membership it judged. */
export interface ReadinessState {
  ready: boolean;
  reason: string | null;
  epoch: number;
  slot: SlotName | null;
  fleet: FleetMembershipView | null;
}

/** What every mirrorswap middleware exposes about its mount, besides handling requests. */
export interface MountSurface {
  /** Resolves once the epoch file has been read the first time and the heartbeat is written. */
  readonly ready: Promise<void>;
  readonly registry: import('prom-client').Registry;
  /** A handler to mount at `/metrics`. */
  readonly metrics: (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => void;
  /** The epoch and slot new requests are served from, and requests in flight per slot. */
  state(): {
    serverId: string;
    epoch: number;
    slot: SlotName | null;
    inflight: SlotMap<number>;
    watch: 'native' | 'poll';
  };
  /** Re-read the epoch file now. */
  refresh(): Promise<void>;
  /** Whether to take traffic (a load balancer's check): see README, "Readiness". */
  readiness(): ReadinessState;
}

export function mountSurface<T>(mount: MountState<T>): MountSurface {
  const registry = mount.metrics.registry;
  return {
    ready: mount.ready,
    registry,
    metrics: metricsHandler(registry),
    state: () => ({
      serverId: mount.serverId,
      epoch: mount.view?.epoch ?? 0,
      slot: mount.view?.slot ?? null,
      inflight: { ...mount.inflight() },
      watch: mount.watchMode,
    }),
    refresh: () => mount.refresh(),
    readiness: () => mount.readiness(),
  };
}
