import { exec } from 'node:child_process';
import { lstat } from 'node:fs/promises';
import { hostname } from 'node:os';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { EpochWatcher } from '../../middleware/mount/epoch-watcher.js';
import { FleetReadiness } from '../../middleware/mount/fleet-readiness.js';
import { HeartbeatWriter } from '../../middleware/mount/heartbeat-writer.js';
import type { ReadinessState } from '../../middleware/mount/mount-state.js';
import type { WatchMode } from '../../middleware/options.js';
import { type EpochRecord, slotRoot } from '../store/epoch-file.js';
import type { Logger } from '../core/logger.js';
import type { SlotMap, SlotName, StoreLayout } from '../store/store-layout.js';
import { StoreLock } from '../store/store-lock.js';
import { writeInclude } from './include-file.js';
import {
  ageOf,
  configProblem,
  isWorker,
  masterNamedBy,
  readMasterPid,
  runningMasters,
  workersOf,
} from './nginx-processes.js';

export interface NginxCompanionOptions {
  layout: StoreLayout;
  /** The include file the companion owns (nginx's server block includes it). */
  includeFile: string;
  /** nginx's pid file: the master is sent SIGHUP, and its workers are watched. */
  pidFile: string;
  /** Run instead of SIGHUP to reload (through `sh -c`); nginx's pid file is still read to watch workers. */
  reloadCmd?: string;
  /** How long a reload may take to start new workers before it counts as failed. */
  reloadTimeout: number;
  /** After a failed reload, try again this often while the epoch is not served. */
  retryInterval: number;
  serverId: string;
  heartbeatInterval: number;
  watch: WatchMode;
  pollInterval: number;
  logger: Logger;
}

export const NGINX_DEFAULTS = {
  reloadTimeout: 5_000,
  retryInterval: 5_000,
  /** How often retired workers and nginx's master are looked at. */
  checkInterval: 100,
  /** A companion started before nginx warns only if no master is named after this long. */
  missingMasterWarning: 30_000,
} as const;

/** The longest delay a Node timer holds (2^31 - 1 ms, 24.8 days). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** A master younger than this may still be forking its first workers: a switch waits for them to settle. */
const YOUNG_MASTER_MS = 2000;
/** How long a young master's workers must stay the same before a switch takes them as all there. */
const SETTLE_MS = 200;
/**
 * How long after an include written while nginx was down the copies the
 * include before it reached stay held: an nginx started as it was replaced
 * may have read that one, and writes its pid file (which the companion finds
 * it by) only after reading its configuration and opening its sockets, which
 * it tries five times, 500 ms apart, when the port is taken (2 s).
 */
const START_GRACE_MS = 3000;

/** The default heartbeat id: one per host, so a restarted companion takes over its predecessor's. */
export function defaultNginxServerId(): string {
  return `nginx-${hostname().replace(/[^A-Za-z0-9._-]/g, '_')}`.slice(0, 128);
}

/** What the companion knows nginx serves. */
interface Served {
  epoch: number;
  slot: SlotName;
  publishedAt: string;
  /** Every copy the include lets a request reach: the mounted one, and the retained ones pins reach. */
  slots: readonly SlotName[];
}

class ReloadFailed extends Error {}

/**
 * The copies a retired worker may serve from (the mounted one of its
 * configuration, and the retained ones its pins reach), or `unknown` for a
 * worker that was running before this companion knew what nginx had loaded
 * (one it found at start). An unknown worker is counted in flight on every
 * slot: it may serve any, so none is reported free while it lives.
 */
export type RetiredOn = readonly SlotName[] | 'unknown';

/**
 * Makes a running nginx a web server of the store. On each new epoch it
 * rewrites the include that sets nginx's root and reloads nginx; nginx's
 * graceful reload is the drain (new workers take new connections with the
 * new root, old workers finish what they hold and exit). The companion
 * writes the heartbeat on nginx's behalf: the new epoch once new workers are
 * up (a reload nginx refused is never reported as a switch), and as many
 * requests in flight on a slot as retired workers that served it still live
 * (a worker's requests are not counted from outside; while it lives, it may
 * hold some). So the agent's drain waits for exactly the workers nginx still
 * serves the old copy from.
 */
export class NginxCompanion {
  readonly #opts: NginxCompanionOptions;
  readonly registry = new Registry();
  readonly #watcher: EpochWatcher;
  readonly #heartbeat: HeartbeatWriter;
  /** The host's fleet membership stamp, on a fleet host: what /readyz judges besides nginx itself. */
  readonly #fleet: FleetReadiness;
  #wanted: EpochRecord | null = null;
  /** The epoch whose include is on disk: any nginx (re)started reads it. */
  #written: Served | null = null;
  /**
   * Set when an include was written while nginx was down: an nginx starting
   * meanwhile may have read the include before it, and shows no pid file
   * until later. Until `until`, the copies that include reached count one
   * in flight (`START_GRACE_MS`). `until` is on the monotonic clock
   * (`performance.now()`): a step of the wall clock neither ends the hold
   * early nor stretches it into a drain timeout.
   */
  #mayBeStarting: { on: RetiredOn; until: number } | null = null;
  #served: Served | null = null;
  /** Workers started on the include of `#served`; while that is null, on an include not known. */
  #current = new Set<number>();
  /** Retired workers still alive, and the slot each may serve from. */
  readonly #retired = new Map<number, RetiredOn>();
  #master: number | null = null;
  #lastError: string | null = null;
  #heartbeatStarted = false;
  /** The epoch nginx serves and since when (ms since 1970): the heartbeat's switchedAt; null while it is down. */
  #switched: { epoch: number; at: number } | null = null;
  #converging: Promise<void> | null = null;
  #again = false;
  /** Set when a look between switches saw nginx's master change: the next pass of `#converge` takes it on. */
  #masterChanged = false;
  #retryTimer: NodeJS.Timeout | undefined;
  #checkTimer: NodeJS.Timeout | undefined;
  #warnTimer: NodeJS.Timeout | undefined;
  /** Fires when the next release the include lists reaches its `until`. */
  #expiryTimer: NodeJS.Timeout | undefined;
  /** Times a listed release reached its `until`, and how many of them a written include has taken in. */
  #expiries = 0;
  #expiriesTaken = 0;
  #closed = false;

  readonly #metrics = {
    epoch: new Gauge({ name: 'mirrorswap_nginx_epoch', help: 'Epoch nginx serves new requests from', registers: [] }),
    wanted: new Gauge({ name: 'mirrorswap_nginx_wanted_epoch', help: 'Epoch published by the agent', registers: [] }),
    reloads: new Counter({ name: 'mirrorswap_nginx_reloads_total', help: 'Reloads that took effect', registers: [] }),
    failures: new Counter({
      name: 'mirrorswap_nginx_reload_failures_total',
      help: 'Reloads nginx refused or did not carry out',
      registers: [],
    }),
    retired: new Gauge({
      name: 'mirrorswap_nginx_old_workers',
      help: 'Retired nginx workers still alive, by the slot they may serve from',
      labelNames: ['slot'],
      registers: [],
    }),
    up: new Gauge({ name: 'mirrorswap_nginx_up', help: '1 while nginx runs (its master is alive)', registers: [] }),
    switchSeconds: new Histogram({
      name: 'mirrorswap_nginx_switch_seconds',
      help: 'From the publish of an epoch to nginx serving it (new workers up)',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [],
    }),
    lastError: new Gauge({
      name: 'mirrorswap_nginx_reload_error',
      help: '1 while the last reload failed (the reason is in the log and in status)',
      registers: [],
    }),
  };

  readonly #lock: StoreLock;

  private constructor(opts: NginxCompanionOptions, lock: StoreLock) {
    this.#opts = opts;
    this.#lock = lock;
    for (const m of Object.values(this.#metrics)) this.registry.registerMetric(m);
    this.#watcher = new EpochWatcher({
      epochFile: opts.layout.epochFile,
      mode: opts.watch,
      pollInterval: opts.pollInterval,
      onAdvance: async (record) => {
        this.#wanted = record;
        this.#metrics.wanted.set(record.epoch);
        this.#converge();
      },
      onError: (err) => opts.logger.warn({ err: err.message }, 'epoch file'),
    });
    this.#heartbeat = new HeartbeatWriter({
      serversDir: opts.layout.serversDir,
      id: opts.serverId,
      interval: opts.heartbeatInterval,
      kind: 'nginx',
      snapshot: () => ({
        epoch: this.#served?.epoch ?? 0,
        mounted: this.#served?.slot ?? null,
        ...(this.#switched !== null ? { switchedAt: new Date(this.#switched.at).toISOString() } : {}),
        inflight: this.#inflight(),
      }),
      onError: (err) => opts.logger.warn({ err: err.message }, 'could not write the heartbeat'),
    });
    this.#fleet = new FleetReadiness(opts.layout.epochFile, opts.heartbeatInterval);
  }

  static async start(opts: NginxCompanionOptions): Promise<NginxCompanion> {
    const missing =
      (await readMasterPid(opts.pidFile)) === null && !(opts.reloadCmd && (await masterNamedBy(opts.reloadCmd)));
    const pidFileThere = await lstat(opts.pidFile).then(
      () => true,
      () => false,
    );
    if (missing && pidFileThere) {
      // said loudly: a wrong --nginx-pid looks exactly like nginx stopped, which holds no copy
      opts.logger.warn(
        { pidFile: opts.pidFile },
        `no running nginx master is named by ${opts.pidFile} (a pid file left by an nginx that died, or not nginx's): nginx is taken as stopped until one is; if nginx runs, --nginx-pid must name its pid file`,
      );
    } else if (missing) {
      // the normal order (the companion first: it writes the include nginx's configuration needs)
      opts.logger.info(
        { pidFile: opts.pidFile },
        `nginx is not running yet (there is no ${opts.pidFile}): it will serve the published epoch when it starts`,
      );
    }
    // One companion per include: a second would reload nginx and write the same heartbeat,
    // each counting the other's retired workers as its own current ones.
    const lock = await StoreLock.acquire(`${opts.includeFile}.lock`, 'mirrorswap nginx companion');
    const companion = new NginxCompanion(opts, lock);
    await companion.#fleet.start();
    await companion.#watcher.start();
    // the companion's own loop: it keeps the process alive until close()
    companion.#checkTimer = setInterval(() => void companion.#check(), NGINX_DEFAULTS.checkInterval);
    if (missing) companion.#warnIfStillMissing();
    await companion.settled();
    return companion;
  }

  /**
   * Said loudly, but only once nginx has had time to start: a wrong
   * --nginx-pid looks exactly like nginx stopped, which holds no copy.
   */
  #warnIfStillMissing(): void {
    this.#warnTimer = setTimeout(async () => {
      if (this.#closed || this.#master !== null || (await this.#findMaster()) !== null) return;
      const others = await runningMasters().catch(() => []);
      this.#opts.logger.warn(
        { pidFile: this.#opts.pidFile, masters: others },
        `no running nginx master has been named by ${this.#opts.pidFile} for ${NGINX_DEFAULTS.missingMasterWarning / 1000} s since the companion started${others.length > 0 ? `, but nginx masters run (pid ${others.join(', ')})` : ''}: nginx is taken as stopped; if nginx runs, --nginx-pid must name its pid file`,
      );
    }, NGINX_DEFAULTS.missingMasterWarning);
    this.#warnTimer.unref();
  }

  /**
   * nginx's master: the one its pid file names, or, with `--reload-cmd` and
   * no such file, the one that command addresses (its `-c`), if exactly one.
   */
  async #findMaster(): Promise<number | null> {
    const named = await readMasterPid(this.#opts.pidFile);
    if (named !== null || !this.#opts.reloadCmd) return named;
    return masterNamedBy(this.#opts.reloadCmd);
  }

  /**
   * What the heartbeat reports in flight: one per retired worker still alive
   * on each copy its configuration reached (on every slot for an unknown one),
   * and, for a retained copy the include lets pins reach, every current worker.
   * nginx's requests are not counted one by one; no copy is reported free
   * while a worker that may serve it lives.
   */
  #inflight(): SlotMap<number> {
    const inflight: SlotMap<number> = { a: 0, b: 0 };
    const add = (slot: SlotName, n: number) => {
      inflight[slot] = (inflight[slot] ?? 0) + n;
    };
    const every = Object.keys(this.#wanted?.roots ?? { a: '', b: '' }) as SlotName[];
    const slotsOf = (on: RetiredOn) => (on === 'unknown' ? every : on);
    for (const on of this.#retired.values()) for (const slot of slotsOf(on)) add(slot, 1);
    const starting = this.#mayBeStarting;
    if (starting !== null && performance.now() < starting.until) for (const slot of slotsOf(starting.on)) add(slot, 1);
    const served = this.#served;
    if (served && this.#current.size > 0) {
      for (const slot of served.slots) if (slot !== served.slot) add(slot, this.#current.size);
    } else if (!served) {
      // workers of a master that may have read any include (#followMaster): held on every slot until reloaded.
      // At least one while the master runs: it names itself in its pid file before it forks its workers, and
      // a worker is listed only once it set its title; none listed yet, its workers to come were counted nowhere
      const held = this.#master !== null ? Math.max(1, this.#current.size) : this.#current.size;
      for (const slot of every) add(slot, held);
    }
    return inflight;
  }

  /** What the companion knows: for `status`, tests and the log. */
  status() {
    return {
      wanted: this.#wanted?.epoch ?? null,
      served: this.#served,
      master: this.#master,
      workers: [...this.#current],
      // one slot as its name (a store of two copies), several joined by commas
      retired: Object.fromEntries([...this.#retired].map(([pid, on]) => [pid, on === 'unknown' ? on : on.join(',')])),
      lastError: this.#lastError,
    };
  }

  /**
   * Whether nginx should take traffic (the companion's /readyz, for a load
   * balancer in front of nginx): nginx runs and serves an epoch, and on a
   * fleet host the host's membership holds and nginx serves the committed
   * epoch. From memory and the clock: it never waits.
   */
  readiness(now = Date.now()): ReadinessState {
    const served = this.#served;
    const base = { epoch: served?.epoch ?? 0, slot: served?.slot ?? null, fleet: this.#fleet.view() };
    if (this.#closed) return { ...base, ready: false, reason: 'the nginx companion is stopping' };
    if (this.#master === null) return { ...base, ready: false, reason: 'nginx is not running' };
    if (!served) return { ...base, ready: false, reason: 'nginx serves no epoch of the store yet' };
    return { ...base, ...this.#fleet.judge(served.epoch, now) };
  }

  /** Resolves once no switch is under way (one may fail: see `status().lastError`). */
  async settled(): Promise<void> {
    while (this.#converging) await this.#converging;
  }

  /** Bring nginx to the wanted epoch; calls made meanwhile fold into one more pass. */
  #converge(): void {
    if (this.#converging) {
      this.#again = true;
      return;
    }
    this.#converging = (async () => {
      do {
        this.#again = false;
        if (this.#masterChanged && !this.#closed) {
          this.#masterChanged = false;
          try {
            await this.#followMaster();
          } catch (err) {
            this.#opts.logger.warn({ err: (err as Error).message }, 'could not look at the nginx master');
          }
        }
        const wanted = this.#wanted;
        // the same epoch again once a release it retains reached its end: the include drops it
        const expiries = this.#expiries;
        if (!wanted || this.#closed) continue;
        if (this.#served && this.#served.epoch >= wanted.epoch && expiries === this.#expiriesTaken) continue;
        try {
          await this.#switchTo(wanted);
          this.#expiriesTaken = expiries;
          if (this.#lastError !== null) this.#opts.logger.info({ epoch: wanted.epoch }, 'nginx reloads again');
          this.#lastError = null;
          this.#metrics.lastError.set(0);
        } catch (err) {
          this.#failed(wanted, err as Error);
          // an nginx runs that did not switch: the agent waits for it, so it must hear of it (a companion
          // started beside an nginx that refuses the reload wrote no heartbeat, and nginx was not waited for).
          // A heartbeat that cannot be written is said, and tried again with the switch
          await this.#beat().catch((e: Error) =>
            this.#opts.logger.warn({ err: e.message }, 'could not write the heartbeat'),
          );
        }
      } while (this.#again && !this.#closed);
    })().finally(() => {
      this.#converging = null;
    });
  }

  /**
   * Have the include written again, and nginx reloaded, when the first of
   * `listed` reaches its `until` (`--skew-max-age`): pins to it then get the
   * mounted release, as mirrorStatic's do. Workers of the reload before keep
   * counting in flight on its copy until they exit, so the agent reuses it
   * only after them. A time past what a timer holds (24.8 days) is looked at
   * again then, at the cost of one reload.
   */
  #expireAt(listed: readonly { until?: string }[], now: number): void {
    clearTimeout(this.#expiryTimer);
    this.#expiryTimer = undefined;
    if (this.#closed) return; // a switch that ran on past close() arms nothing
    const ends = listed.flatMap((r) => (r.until === undefined ? [] : [Date.parse(r.until)]));
    if (ends.length === 0) return;
    const wait = Math.min(Math.max(0, Math.min(...ends) - now) + 1, MAX_TIMER_MS);
    this.#expiryTimer = setTimeout(() => {
      this.#expiries++;
      this.#converge();
    }, wait);
    this.#expiryTimer.unref();
  }

  #failed(wanted: EpochRecord, err: Error): void {
    this.#lastError = err.message;
    this.#metrics.failures.inc();
    this.#metrics.lastError.set(1);
    this.#opts.logger.error(
      { epoch: wanted.epoch, slot: wanted.mounted, serving: this.#served?.epoch ?? null, reason: err.message },
      `nginx did not switch to epoch ${wanted.epoch}: it serves on from epoch ${this.#served?.epoch ?? 'unknown'}, and the agent's drain waits for it; tried again in ${this.#opts.retryInterval} ms (--retry-interval), each try waiting up to ${this.#opts.reloadTimeout} ms for new workers (--reload-timeout): a try every ${this.#opts.retryInterval + this.#opts.reloadTimeout} ms or so while it fails`,
    );
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => this.#converge(), this.#opts.retryInterval);
    this.#retryTimer.unref();
  }

  async #switchTo(record: EpochRecord): Promise<void> {
    const slot = record.mounted;
    const root = slotRoot(record, this.#opts.layout.epochFile, slot);
    // a store keeping more releases: pinned requests reach the retained copies, each until its `until`
    const now = Date.now();
    const servable = (record.retained ?? []).filter((r) => r.until === undefined || Date.parse(r.until) > now);
    this.#expireAt(servable, now);
    const retained = servable.map((r) => ({
      slot: r.slot,
      root: slotRoot(record, this.#opts.layout.epochFile, r.slot),
      names: [String(r.epoch), ...(r.release !== undefined ? [r.release] : [])],
    }));
    // every nginx (re)started from here on reads the new root
    const readBefore: RetiredOn = this.#written?.slots ?? 'unknown';
    await writeInclude(this.#opts.includeFile, record.epoch, slot, root, retained);
    const writtenAt = performance.now(); // after the rename: an nginx started later reads this include
    this.#written = {
      epoch: record.epoch,
      slot,
      publishedAt: record.publishedAt,
      slots: [slot, ...retained.map((r) => r.slot)],
    };
    const master = await this.#findMaster();
    if (master === null) {
      // nginx is not running: it serves nothing now, and will start on this root. One starting as the
      // include was replaced may have read the one before, and names itself in its pid file only once
      // its configuration is read: the copies that include reached stay held a while
      this.#master = null;
      this.#retire(this.#current, this.#served?.slots);
      this.#current = new Set();
      this.#mayBeStarting = { on: readBefore, until: writtenAt + START_GRACE_MS };
      await this.#nowServing(this.#written, 'down');
      return;
    }
    this.#master = master;
    // nginx writes its pid file before it forks its first workers: a worker of a master started moments
    // ago that is not listed yet would pass below for one the reload started, serving the old root
    if ((await ageOf(master)) < YOUNG_MASTER_MS) await this.#workersSettled(master);
    const known = new Set(this.#current);
    // workers this companion did not see start (at its own start, all of them): their root is unknown, and
    // they are held on every slot from now, the reload done or not (nginx may refuse it)
    const found = (await workersOf(master)).filter((pid) => !known.has(pid) && !this.#retired.has(pid));
    this.#retire(found, 'unknown');
    // retired workers still draining are children of the master too: none of them is a new one
    const before = new Set([...known, ...found, ...this.#retired.keys()]);
    const started = performance.now();
    if (this.#opts.reloadCmd) await runReloadCommand(this.#opts.reloadCmd);
    else process.kill(master, 'SIGHUP');
    const fresh = await this.#newWorkers(master, before, started);
    // the workers from before serve the old root
    this.#retire(known, this.#served?.slots ?? 'unknown');
    // the hold ends with them (not when the master was found: the heartbeat is written at any await)
    this.#mayBeStarting = null;
    this.#current = new Set(fresh);
    this.#metrics.reloads.inc();
    await this.#nowServing(this.#written, this.#served?.epoch === record.epoch ? 'expired' : 'reload');
  }

  /**
   * Wait until `master`'s workers have not changed for `SETTLE_MS` (at most
   * `--reload-timeout`): a master just started has forked them all by then
   * (it forks them one after another, its signals blocked meanwhile, and a
   * worker is listed once it has set its title).
   */
  async #workersSettled(master: number): Promise<void> {
    // intervals on the monotonic clock, as every wait of the companion's
    const until = performance.now() + this.#opts.reloadTimeout;
    let last = (await workersOf(master)).sort().join();
    let since = performance.now();
    while (performance.now() - since < SETTLE_MS && performance.now() < until) {
      await new Promise((r) => setTimeout(r, 10));
      const now = (await workersOf(master)).sort().join();
      if (now !== last) {
        last = now;
        since = performance.now();
      }
    }
  }

  /**
   * Wait for workers that were not there before the reload; they run the
   * new configuration. nginx refuses a broken configuration by logging why
   * and keeping its old workers, so none comes: after the timeout, nginx is
   * asked why (`nginx -t` as the master was started). Its answer is only
   * ever the reason of a failure seen, never a failure by itself: a check
   * run with other rights than nginx's may fail where nginx does not.
   * `started`: when the reload was asked for, on the monotonic clock
   * (`performance.now()`).
   */
  async #newWorkers(master: number, before: Set<number>, started: number): Promise<number[]> {
    for (;;) {
      const fresh = (await workersOf(master)).filter((pid) => !before.has(pid));
      if (fresh.length > 0) return fresh;
      if ((await this.#findMaster()) !== master) throw new ReloadFailed('nginx stopped during the reload');
      if (performance.now() - started > this.#opts.reloadTimeout) {
        const problem = await configProblem(master);
        throw new ReloadFailed(
          problem
            ? `nginx refused the new configuration: ${problem}`
            : `nginx started no new worker within ${this.#opts.reloadTimeout} ms of the reload`,
        );
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  #retire(pids: Iterable<number>, on: RetiredOn | undefined): void {
    for (const pid of pids) if (!this.#retired.has(pid)) this.#retired.set(pid, on ?? 'unknown');
    this.#countRetired();
  }

  async #nowServing(served: Served, how: 'reload' | 'expired' | 'down'): Promise<void> {
    const viaReload = how === 'reload';
    // nginx serves this epoch from now (not while it is down): the heartbeat's switchedAt
    if (how === 'down') this.#switched = null;
    else if (served.epoch !== this.#switched?.epoch) this.#switched = { epoch: served.epoch, at: Date.now() };
    this.#served = served;
    this.#metrics.epoch.set(served.epoch);
    if (viaReload) this.#metrics.switchSeconds.observe(Math.max(0, Date.now() - Date.parse(served.publishedAt)) / 1000);
    this.#opts.logger.info(
      { epoch: served.epoch, slot: served.slot, retired: this.#retired.size, nginx: this.#master },
      {
        reload: 'nginx serves the new epoch',
        expired: 'nginx reloaded without the retained releases past their --skew-max-age',
        down: 'nginx is not running: it will serve this epoch when it starts',
      }[how],
    );
    await this.#beat();
  }

  /** Write the heartbeat now, starting it the first time. */
  async #beat(): Promise<void> {
    if (!this.#heartbeatStarted) {
      this.#heartbeatStarted = true;
      await this.#heartbeat.start();
    } else await this.#heartbeat.writeNow();
  }

  /**
   * Look at nginx between switches: retired workers that exited (the drain
   * ends when none is left), and a master that stopped or was started again
   * (its workers read the include as it is on disk).
   */
  async #check(): Promise<void> {
    if (this.#closed || this.#converging) return;
    let changed = false;
    for (const pid of [...this.#retired.keys()]) {
      if (!(await isWorker(pid))) {
        this.#retired.delete(pid);
        changed = true;
      }
    }
    const master = await this.#findMaster().catch(() => null);
    this.#metrics.up.set(master === null ? 0 : 1);
    // a master that stopped or was started again is taken on by a pass of #converge, never here: a switch
    // under way would have its epoch reported before its reload (#followMaster)
    if (master !== this.#master) {
      this.#masterChanged = true;
      this.#converge();
    }
    // a reload is taken as done at its first new worker; the others start a moment later (and nginx
    // respawns a worker that died with the same configuration): they serve what the last reload set, or,
    // while what the master read is unknown, are held on every slot as its others are
    if (master !== null && master === this.#master && !this.#converging) {
      const workers = await workersOf(master);
      if (!this.#converging && master === this.#master) {
        for (const pid of workers) if (!this.#retired.has(pid)) this.#current.add(pid);
      }
    }
    if (changed) {
      this.#countRetired();
      await this.#heartbeat.writeNow();
    }
  }

  /**
   * Take on nginx's master as it is now, when a look between switches saw it
   * change: stopped, or started again. A master started again is never
   * trusted to serve the include on disk: nothing tells when it read its
   * configuration (a daemon's master, nginx's default, is forked only after
   * reading it and opening its sockets, which it retries for seconds when
   * the port is taken), so the pass's switch reloads it, and retires its
   * workers as of an unknown copy. Until then (and for as long as nginx
   * refuses the reload) they are held on every slot. The cost is one reload
   * each time nginx starts. Run only as a pass of `#converge`, the one owner
   * of what nginx is said to serve: run beside a switch, a look took the
   * switch's include, written a moment before its reload, for what a new
   * master had read, and the heartbeat reported the new epoch served by
   * workers of the old one.
   */
  async #followMaster(): Promise<void> {
    const master = await this.#findMaster();
    if (master === this.#master) return;
    const previous = this.#master;
    this.#master = master;
    if (master === null) {
      this.#opts.logger.warn({ previous }, 'nginx stopped');
      return;
    }
    this.#opts.logger.info({ master, previous }, 'nginx started: it is reloaded onto the include on disk');
    const workers = await workersOf(master);
    // what it read is taken into account from here, with no await between: the heartbeat is written at
    // any await, and one without the hold and before what follows let the agent's drain end
    this.#mayBeStarting = null;
    this.#retire(this.#current, this.#served?.slots);
    this.#current = new Set(workers);
    this.#served = null;
  }

  #countRetired(): void {
    const counts: Record<string, number> = { a: 0, b: 0, unknown: 0 };
    for (const on of this.#retired.values()) {
      for (const slot of on === 'unknown' ? ['unknown'] : on) counts[slot] = (counts[slot] ?? 0) + 1;
    }
    for (const [slot, n] of Object.entries(counts)) this.#metrics.retired.set({ slot }, n);
  }

  /**
   * Stop following the store. The heartbeat stays on disk while nginx runs:
   * nginx still serves the copy it reports, and the file ages out of the
   * agent's lease (restart the companion within it: systemd does).
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#retryTimer);
    clearInterval(this.#checkTimer);
    clearTimeout(this.#warnTimer);
    clearTimeout(this.#expiryTimer);
    this.#fleet.close();
    await this.#watcher.close();
    await this.settled();
    const running = (await this.#findMaster().catch(() => null)) !== null;
    await this.#heartbeat.close({ keepFile: running });
    await this.#lock.release();
  }
}

function runReloadCommand(cmd: string): Promise<void> {
  return new Promise((resolve, reject) => {
    exec(cmd, { timeout: 30_000 }, (err, _stdout, stderr) => {
      if (!err) resolve();
      else reject(new ReloadFailed(`reload command "${cmd}" failed: ${stderr.trim() || err.message}`.slice(0, 2000)));
    });
  });
}
