import { FLEET_DEFAULTS, HOST_DEFAULTS } from '../fleet-defaults.js';
import { mkdir } from 'node:fs/promises';
import { hostname } from 'node:os';
import { writeFileAtomic } from '../../store/atomic-write.js';
import { waitForServers } from '../../store/drain.js';
import { inflightOn } from '../../store/heartbeat.js';
import { publishEpoch } from '../../store/publish.js';
import { StoreLock } from '../../store/store-lock.js';
import { type EpochRecord, type RetainedRelease, readEpochFile, releaseEpochOf } from '../../store/epoch-file.js';
import { MirrorswapError } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import { readSmallFile } from '../../store/read-small-file.js';
import {
  ALL_SLOTS,
  MAX_KEEP,
  type SlotMap,
  type SlotName,
  type StoreLayout,
  isSlotName,
  keptSlots,
} from '../../store/store-layout.js';
import { RETENTION_DEFAULTS, retainedAfter } from '../../store/retained-releases.js';
import type { Etcd } from '../etcd.js';
import {
  type AckRecord,
  type CoordinatorRecord,
  type FleetEpoch,
  type FleetKeys,
  type MemberRecord,
  type Prepared,
  type SwapProposal,
  fleetKeys,
  parseJson,
} from '../fleet-keys.js';
import { LeaseKeeper } from '../lease.js';
import { type MembershipStamp, writeMembership } from '../../store/membership.js';
import { CoalescedRun } from '../../core/coalesced-run.js';
import { type PeerPull, type PullStats, pullSnapshot } from './pull.js';
import { PeerFinder } from './peer-finder.js';
import { PullProgress } from './pull-progress.js';
import { putNewKey } from './sharing-key.js';
import { PeerServer, type PeerServeStats } from './peer-serve.js';
import type { IncomingMessage, ServerResponse } from 'node:http';

export interface HostAgentOptions {
  etcd: Etcd;
  fleet: string;
  hostId?: string | undefined;
  /** The fleet token: what the coordinator's content endpoints ask for. */
  token: string;
  layout: StoreLayout;
  log: Logger;
  /** This host agent's status URL, for the coordinator's status (null when it does not listen). */
  url?: string | null;
  leaseTtlSeconds?: number;
  serverTtlMs?: number;
  /** Longest wait for this host's servers to let go of a slot. */
  drainTimeoutMs?: number;
  /** fsync pulled content before saying it is prepared. */
  durable?: boolean;
  /** How often etcd is read besides the watch: the most a lost watch event delays this host. */
  backstopMs?: number;
  /**
   * Where peers reach this host agent to pull files of the snapshots it
   * holds (default its `url`); null, or `peerServe` 0, serves no peers.
   */
  advertise?: string | null;
  /** Peer pulls served at once (beyond: 503); 0 serves none. */
  peerServe?: number;
  /** A peer's answer: its head within this, and no silence longer. */
  peerTimeoutMs?: number;
  /** Longest a pull waits, in all, for peers before it fetches from the coordinator. */
  peerWaitMs?: number;
  /**
   * Copies this host keeps (2 to 8, default 2). Above 2, the releases the
   * fleet committed before stay servable to requests pinned to them: the
   * mounted one, up to `keep - 2` retained, and one copy always free for the
   * next pull (`#freeSlots`).
   */
  keep?: number;
  /** Keeping releases: how long a replaced one stays servable to pinned requests (0: until its copy is reused). */
  skewMaxAgeMs?: number;
}

/** What each slot of this host holds, in `state/fleet-slots.json`. */
interface SlotRecord {
  /** The coordinator's snapshot the slot holds complete; null when unknown. */
  snapshot: string | null;
  /** A pull into it started and did not finish: its content is mixed. */
  copying: boolean;
}

export interface HostStatus {
  host: string;
  fleet: string;
  ready: boolean;
  epoch: number;
  mounted: SlotName | null;
  fleetEpoch: number | null;
  /** Copies kept (`--keep`), and the releases other copies hold, servable to pinned requests, newest first. */
  keep: number;
  retained: readonly RetainedRelease[];
  slots: SlotMap<SlotRecord>;
  phase: 'idle' | 'preparing' | 'switching' | 'catching_up' | 'draining';
  /** The last pull: its counts, bytes from the coordinator and from peers included, and whether it was a seed's. */
  lastPull: (PullStats & { snapshot: string; ms: number; seed: boolean }) | null;
  /** This host as a peer: where peers reach it (null: it serves none) and what it served them. */
  peers: PeerServeStats & { url: string | null };
  /** The pull under way: into which slot, of which snapshot, since when, and its counts so far of its totals. */
  pulling: (PullStats & { slot: SlotName; snapshot: string; startedAt: string }) | null;
  lastError: string | null;
  etcdReachable: boolean;
  /** A fleet member now (its lease surely holds), and until when, unless renewed. */
  member: boolean;
  memberUntil: string | null;
}

/** A pull under way: what it is for, how to abandon it, and its counts once it has them. */
interface Pulling {
  snapshot: string;
  epoch: number;
  forCommit: boolean;
  abort: AbortController;
  slot: SlotName;
  startedAt: string;
  stats?: Readonly<PullStats>;
}

const SLOTS_FILE_FORMAT = 1;

type ResolvedHostOptions = Required<Omit<HostAgentOptions, 'hostId' | 'url' | 'advertise'>> & {
  url: string | null;
  advertise: string | null;
};

/**
 * The host agent of one web host in a fleet: it owns the host's slots and
 * epoch file (there is no master here). It prepares each proposed swap by
 * pulling the coordinator's snapshot into its standby, switches its servers
 * the moment the commit lands in etcd, acknowledges once they drained, and
 * catches up by itself after any gap: whatever it missed, it makes its
 * standby the committed snapshot by comparing what it holds with it.
 */
export class HostAgent {
  readonly host: string;
  readonly #opts: ResolvedHostOptions;
  readonly #keys: FleetKeys;
  readonly #lease: LeaseKeeper;
  readonly #lock: StoreLock;
  /** This host's side of peers sharing the bytes: serves the snapshots its slots hold whole. */
  readonly #peerServer: PeerServer;
  #slots: SlotMap<SlotRecord>;
  #local: EpochRecord | null;
  /**
   * The store kept releases when this host agent started (its epoch file
   * retains some), whatever `keep` is now: a server still on such an epoch
   * may take pinned requests to a copy it retains.
   */
  readonly #keptReleases: boolean;
  #fleetEpoch: FleetEpoch | null = null;
  #proposal: SwapProposal | null = null;
  /** Proposals answered (by epoch and snapshot), so one is prepared once. */
  #answered = new Set<string>();
  #acked = 0;
  /** Set while another host agent holds this host id in etcd (see #putMember): why this one stands aside. */
  #impostor: string | null = null;
  /** The epoch every live server of this host was last seen serving. */
  #switched = 0;
  #phase: HostStatus['phase'] = 'idle';
  #lastPull: HostStatus['lastPull'] = null;
  #lastError: string | null = null;
  #etcdReachable = true;
  #running = false;
  #again = false;
  #closed = false;
  #watches: { close(): void }[] = [];
  /** The pull under way: abandoned when a newer proposal or commit names another snapshot. */
  #pulling: Pulling | null = null;
  #backstop: NodeJS.Timeout | undefined;
  #retry: NodeJS.Timeout | undefined;
  /** Until when etcd surely holds this host's lease (ms since the epoch); 0 while it holds none. */
  #memberUntil = 0;
  /**
   * The committed epoch the stamp tells this host's servers to serve (or be
   * not ready). Moved only once they switched to it, or when this host must
   * catch up: a host that prepared a swap is never reported behind during the
   * milliseconds between the commit and its servers' switch.
   */
  #stampEpoch: number | null = null;
  /** Why this host is not a fleet member now, for the stamp its servers read. */
  #notMember: string | null = 'not registered in the fleet yet';
  /** Writes of the membership stamp: one at a time, the last always with the latest state. */
  readonly #stamps = new CoalescedRun(
    () => this.#writeStamp(),
    () => false,
  );

  private constructor(
    opts: ResolvedHostOptions,
    host: string,
    lock: StoreLock,
    slots: SlotMap<SlotRecord>,
    local: EpochRecord | null,
  ) {
    this.#opts = opts;
    this.host = host;
    this.#lock = lock;
    this.#slots = slots;
    this.#local = local;
    this.#keptReleases = (local?.retained?.length ?? 0) > 0;
    this.#keys = fleetKeys(opts.fleet);
    this.#peerServer = new PeerServer({
      token: opts.token,
      roots: opts.layout.slots,
      limit: opts.advertise ? opts.peerServe : 0,
      graceMs: HOST_DEFAULTS.peerCutGraceMs,
      log: opts.log,
    });
    for (const [slot, held] of slotEntries(slots)) if (!held.copying) this.#peerServer.hold(slot, held.snapshot);
    this.#lease = new LeaseKeeper(opts.etcd, opts.leaseTtlSeconds, {
      granted: async (lease) => {
        await this.#putMember(lease);
        // an ack lives on the lease too: a new lease must say it again
        if (this.#acked > 0 && !this.#impostor)
          await this.#opts.etcd.put(this.#keys.ack(this.host), JSON.stringify(ackOf(this.#acked)), lease);
        // A host back from a lost lease (stopped, cut off) may have missed commits: before the renewal
        // says it is a member again, the stamp names the epoch the fleet is at now, so its servers
        // say not ready until they serve it (a watch event about it may still be on its way).
        const committed = parseJson<FleetEpoch>((await this.#opts.etcd.get(this.#keys.epoch))?.value);
        if (committed) {
          this.#stampEpoch = Math.max(this.#stampEpoch ?? 0, committed.epoch);
          this.#sawEpoch(committed);
        }
        this.#etcdReachable = true;
      },
      lost: (reason) => {
        // answers lived on the lease: a proposal still open must be answered again
        this.#answered.clear();
        this.#leftFleet(`its etcd lease ended (${reason}): the fleet no longer counts it until it registers again`);
        opts.log.warn({ reason }, 'fleet host lease lost: re-registering');
      },
      renewed: (until) => {
        if (this.#closed) return;
        this.#memberUntil = until;
        if (!this.#impostor) this.#notMember = null;
        void this.#stamps.run();
      },
      error: (err) => {
        this.#etcdReachable = false;
        opts.log.warn({ err: err.message }, 'cannot reach etcd; serving what this host has');
      },
    });
  }

  static async start(options: HostAgentOptions): Promise<HostAgent> {
    const { layout } = options;
    const host = options.hostId ?? hostname();
    const keep = options.keep ?? 2;
    if (!Number.isInteger(keep) || keep < 2 || keep > MAX_KEEP) {
      throw new TypeError(`keep option must be an integer from 2 to ${MAX_KEEP}, not ${keep}`);
    }
    const skewMaxAgeMs = options.skewMaxAgeMs ?? RETENTION_DEFAULTS.skewMaxAgeMs;
    if (!Number.isInteger(skewMaxAgeMs) || skewMaxAgeMs < 0) {
      throw new TypeError(`skewMaxAgeMs option must be a whole number of ms, 0 or more, not ${skewMaxAgeMs}`);
    }
    await mkdir(layout.stateDir, { recursive: true });
    await mkdir(layout.serversDir, { recursive: true });
    await mkdir(layout.slots.a, { recursive: true });
    await mkdir(layout.slots.b, { recursive: true });
    const lock = await StoreLock.acquire(layout.lockFile, `mirrorswap host agent (${host})`);
    try {
      const agent = new HostAgent(
        {
          etcd: options.etcd,
          fleet: options.fleet,
          token: options.token,
          layout,
          log: options.log,
          url: options.url ?? null,
          leaseTtlSeconds: options.leaseTtlSeconds ?? FLEET_DEFAULTS.leaseTtlMs / 1000,
          serverTtlMs: options.serverTtlMs ?? HOST_DEFAULTS.serverTtlMs,
          drainTimeoutMs: options.drainTimeoutMs ?? HOST_DEFAULTS.drainTimeoutMs,
          durable: options.durable ?? HOST_DEFAULTS.durable,
          backstopMs: options.backstopMs ?? HOST_DEFAULTS.backstopMs,
          advertise: options.advertise ?? options.url ?? null,
          peerServe: options.peerServe ?? HOST_DEFAULTS.peerServe,
          peerTimeoutMs: options.peerTimeoutMs ?? HOST_DEFAULTS.peerTimeoutMs,
          peerWaitMs: options.peerWaitMs ?? HOST_DEFAULTS.peerWaitMs,
          keep,
          skewMaxAgeMs,
        },
        host,
        lock,
        await readSlots(layout),
        await readEpochFile(layout.epochFile).catch(() => null),
      );
      agent.#begin();
      return agent;
    } catch (err) {
      await lock.release();
      throw err;
    }
  }

  #begin(): void {
    const { etcd } = this.#opts;
    this.#lease.start();
    const onError = (err: Error) => this.#opts.log.warn({ err: err.message }, 'fleet watch interrupted; resuming');
    this.#watches.push(
      etcd.watch(this.#keys.epoch, {
        onEvents: (events) => {
          for (const e of events) if (e.type === 'put') this.#sawEpoch(parseJson<FleetEpoch>(e.kv.value));
        },
        onCompacted: () => void this.#readState(),
        onError,
      }),
      etcd.watch(this.#keys.swap, {
        onEvents: (events) => {
          for (const e of events) this.#sawProposal(e.type === 'put' ? parseJson<SwapProposal>(e.kv.value) : null);
        },
        onCompacted: () => void this.#readState(),
        onError,
      }),
    );
    const backstop = () => {
      if (this.#closed) return;
      this.#backstop = setTimeout(async () => {
        await this.#readState();
        backstop();
      }, this.#opts.backstopMs);
      this.#backstop.unref();
    };
    void this.#readState();
    backstop();
  }

  /** A linearizable read of the proposal and the committed epoch: the backstop against a lost watch. */
  async #readState(): Promise<void> {
    try {
      const [swap, epoch] = await Promise.all([
        this.#opts.etcd.get(this.#keys.swap),
        this.#opts.etcd.get(this.#keys.epoch),
      ]);
      this.#etcdReachable = true;
      if (this.#impostor) await this.#putMember();
      this.#sawProposal(parseJson<SwapProposal>(swap?.value));
      this.#sawEpoch(parseJson<FleetEpoch>(epoch?.value));
    } catch (err) {
      this.#etcdReachable = false;
      this.#opts.log.warn(
        { err: (err as Error).message },
        'cannot read the fleet state from etcd; serving what this host has',
      );
    }
  }

  #sawEpoch(epoch: FleetEpoch | null): void {
    if (!epoch || (this.#fleetEpoch && epoch.epoch <= this.#fleetEpoch.epoch)) return;
    this.#fleetEpoch = epoch;
    this.#supersede(epoch.snapshot, epoch.epoch, true);
    this.#kick();
  }

  #sawProposal(proposal: SwapProposal | null): void {
    this.#proposal = proposal;
    if (proposal) {
      this.#supersede(proposal.snapshot, proposal.epoch, false);
      this.#kick();
    }
  }

  /**
   * A pull for a snapshot the fleet moved past is wasted (its coordinator
   * may be gone): stop it. A pull that prepares a proposal gives way to a
   * newer proposal or to any commit of another snapshot; a pull that
   * catches up with a commit gives way only to a newer commit (a proposal
   * may still be aborted, and the commit is what this host must serve).
   */
  #supersede(wanted: string, epoch: number, committed: boolean): void {
    const p = this.#pulling;
    if (!p || p.snapshot === wanted) return;
    const moved = committed ? epoch >= p.epoch || !p.forCommit : !p.forCommit && epoch >= p.epoch;
    if (moved) {
      this.#opts.log.warn(
        { abandoned: p.snapshot, wanted },
        'abandoning a pull: the fleet moved on to another snapshot',
      );
      p.abort.abort();
    }
  }

  /** Ready: this host's servers serve the fleet's committed epoch (what its member record says). */
  get ready(): boolean {
    return !this.#impostor && this.#fleetEpoch !== null && this.#switched >= this.#fleetEpoch.epoch;
  }

  /** Whether this host is a fleet member now: its lease surely holds (what its servers' stamp says). */
  #memberNow(): boolean {
    return this.#notMember === null && this.#memberUntil > Date.now();
  }

  status(): HostStatus {
    return {
      host: this.host,
      fleet: this.#opts.fleet,
      // what /readyz says: as its servers judge it, membership included (a host cut off from etcd is not)
      ready: this.ready && this.#memberNow(),
      member: this.#memberNow(),
      memberUntil: this.#memberUntil > 0 ? new Date(this.#memberUntil).toISOString() : null,
      epoch: this.#local?.epoch ?? 0,
      mounted: this.#local?.mounted ?? null,
      fleetEpoch: this.#fleetEpoch?.epoch ?? null,
      keep: this.#opts.keep,
      retained: this.#local?.retained ?? [],
      slots: this.#slots,
      phase: this.#phase,
      lastPull: this.#lastPull,
      peers: { ...this.#peerServer.stats(), url: this.#peerUrl },
      pulling: this.#pulling?.stats
        ? {
            ...this.#pulling.stats,
            slot: this.#pulling.slot,
            snapshot: this.#pulling.snapshot,
            startedAt: this.#pulling.startedAt,
          }
        : null,
      lastError: this.#impostor ?? this.#lastError,
      etcdReachable: this.#etcdReachable,
    };
  }

  /** Where peers reach this host, when it serves them. */
  get #peerUrl(): string | null {
    return this.#peerServer.serving ? this.#opts.advertise : null;
  }

  /**
   * Answer a peer's request for files (`POST /v1/fleet/files`) on the host
   * agent's listener: true when `req` was one.
   */
  servePeer(req: IncomingMessage, res: ServerResponse): boolean {
    return this.#peerServer.handle(req, res);
  }

  /** Run the next step, one at a time; a step asked for meanwhile runs after. */
  #kick(): void {
    if (this.#closed) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = true;
    void (async () => {
      try {
        do {
          this.#again = false;
          await this.#step();
        } while (this.#again && !this.#closed);
      } finally {
        this.#running = false;
        this.#phase = 'idle';
      }
    })();
  }

  async #step(): Promise<void> {
    try {
      const committed = this.#fleetEpoch;
      const local = this.#local?.epoch ?? 0;
      if (committed && committed.epoch > local) {
        await this.#follow(committed);
      } else if (this.#impostor) {
        // answers and acks in another host's name would be taken for its own
        return;
      } else if (this.#proposal && this.#proposal.epoch > local && !this.#answered.has(answerKey(this.#proposal))) {
        await this.#prepare(this.#proposal);
      } else if (committed && committed.epoch === local && this.#acked < local) {
        await this.#drainAndAck(local);
      } else return;
      this.#lastError = null;
      this.#again = true;
    } catch (err) {
      this.#lastError = (err as Error).message;
      this.#opts.log.error({ err: this.#lastError }, 'fleet host step failed; retrying');
      await this.#putMember().catch(() => {});
      clearTimeout(this.#retry);
      this.#retry = setTimeout(() => this.#kick(), 1000);
      this.#retry.unref();
    }
  }

  /**
   * The copies free to pull into: neither mounted nor retained by the epoch
   * in force. With two copies, the one not mounted. Keeping K, a commit
   * retains at most K - 2 releases, so one kept copy is always free, and no
   * retained release ever has to leave the epoch file before a pull (which
   * would take an epoch of this host's own: its epochs are the fleet's).
   * After `--keep` was lowered, the epoch in force may use every kept copy:
   * then a free copy past them, until the next commit retains fewer.
   */
  #freeSlots(): SlotName[] {
    const local = this.#local;
    const used = new Set<SlotName>(local ? [local.mounted, ...(local.retained ?? []).map((r) => r.slot)] : []);
    const kept = keptSlots(this.#opts.keep).filter((s) => !used.has(s));
    return kept.length > 0 ? kept : ALL_SLOTS.filter((s) => !used.has(s));
  }

  /** Whether `slot` holds `snapshot` whole. */
  #holds(slot: SlotName | null | undefined, snapshot: string): slot is SlotName {
    const held = slot ? this.#slots[slot] : undefined;
    return held !== undefined && held.snapshot === snapshot && !held.copying;
  }

  /** The copy to pull `snapshot` into: a free one, the one holding it if any, else one holding a whole snapshot. */
  #standby(snapshot: string): SlotName {
    const free = this.#freeSlots();
    if (free.length === 0) {
      // only an epoch file from a single-host store keeping 8 releases uses every slot
      throw new MirrorswapError(
        'FLEET_PULL',
        `every copy of this host (${ALL_SLOTS.join(', ')}) is mounted or retained by its epoch file: none is free to pull into; start this host on a store of its own`,
      );
    }
    const whole = (s: SlotName) => this.#slots[s]?.snapshot != null && !this.#slots[s]?.copying;
    return free.find((s) => this.#holds(s, snapshot)) ?? free.find(whole) ?? (free[0] as SlotName);
  }

  /**
   * Keeping releases: the copy that holds `snapshot` whole, if any, the
   * mounted one first, then the retained ones (a rollback mounts one as it
   * is), then the free ones; none is written.
   */
  #holding(snapshot: string): SlotName | null {
    const local = this.#local;
    const order = [local?.mounted, ...(local?.retained ?? []).map((r) => r.slot), ...this.#freeSlots()];
    return order.find((s) => this.#holds(s, snapshot)) ?? null;
  }

  async #prepare(proposal: SwapProposal): Promise<void> {
    this.#phase = 'preparing';
    const key = answerKey(proposal);
    let answer: Prepared;
    try {
      // a member the proposal does not name a seed pulls the files from peers that prepared it
      const fromPeers = proposal.seeds && !proposal.seeds.includes(this.host) ? proposal.seeds : null;
      // keeping releases, a copy already holding it answers (a rollback to a retained release)
      const slot =
        (this.#opts.keep > 2 ? this.#holding(proposal.snapshot) : null) ??
        (await this.#fill(
          this.#standby(proposal.snapshot),
          proposal.snapshot,
          proposal.url,
          proposal.epoch,
          false,
          fromPeers
            ? {
                from: 'prepared',
                seeds: fromPeers,
                // waiting for peers never costs the swap: a quarter of the coordinator's prepare timeout at most
                waitMs: Math.min(this.#opts.peerWaitMs, (proposal.prepareTimeoutMs ?? Number.POSITIVE_INFINITY) / 4),
              }
            : null,
        ));
      const peer = this.#peerUrl;
      answer = { ok: true, slot, snapshot: proposal.snapshot, ...(peer ? { peer } : {}) };
    } catch (err) {
      answer = { ok: false, snapshot: proposal.snapshot, error: (err as Error).message };
      this.#lastError = answer.error;
    }
    const lease = this.#lease.lease;
    if (!lease) throw new MirrorswapError('FLEET_ETCD', 'no lease to answer the proposal on (etcd unreachable?)');
    await this.#opts.etcd.put(this.#keys.preparedBy(proposal.snapshot, this.host), JSON.stringify(answer), lease);
    this.#answered.add(key);
    if (this.#answered.size > 64) this.#answered = new Set([...this.#answered].slice(-32));
  }

  /**
   * Make `slot` hold `snapshot` (it may already): wait for this host's
   * servers and its peers' pulls to let go of it, then pull; the files from
   * peers when `peers` says where to find them, the coordinator the fallback.
   */
  async #fill(
    slot: SlotName,
    snapshot: string,
    from: string,
    epoch: number,
    forCommit: boolean,
    peers: { from: 'prepared' | 'members'; seeds: readonly string[]; waitMs: number } | null,
  ): Promise<SlotName> {
    const held = this.#slots[slot] ?? UNKNOWN_SLOT;
    if (this.#holds(slot, snapshot)) return slot;
    // Keeping releases (or having kept them: --keep lowered to 2), a server still on an epoch
    // before the one in force may take pinned requests to a release that epoch retained on this
    // copy: it must be past it first. With two copies only, mounting it or requests on it hold it.
    const inForce = this.#opts.keep > 2 || this.#keptReleases ? (this.#local?.epoch ?? 0) : 0;
    await waitForServers({
      serversDir: this.#opts.layout.serversDir,
      ttlMs: this.#opts.serverTtlMs,
      timeoutMs: this.#opts.drainTimeoutMs,
      what: `this host's servers to let go of slot ${slot} before pulling into it`,
      done: (hb) => inflightOn(hb, slot) === 0 && hb.mounted !== slot && hb.epoch >= inForce,
      describe: (hb) =>
        hb.mounted === slot
          ? `still mounts slot ${slot}`
          : hb.epoch < inForce
            ? `is still at epoch ${hb.epoch}, which may retain slot ${slot}`
            : `still has ${hb.inflight[slot]} requests in flight on slot ${slot}`,
    });
    await mkdir(this.#opts.layout.slots[slot], { recursive: true });
    const base = held.copying ? null : held.snapshot;
    // peers pulling what the slot held are cut first: nothing reads a copy being rewritten
    await this.#peerServer.release(slot);
    await this.#recordSlot(slot, { snapshot: null, copying: true });
    const started = performance.now();
    const pulling: Pulling = {
      snapshot,
      epoch,
      forCommit,
      abort: new AbortController(),
      slot,
      startedAt: new Date().toISOString(),
    };
    this.#pulling = pulling;
    const finder = peers
      ? new PeerFinder({
          etcd: this.#opts.etcd,
          keys: this.#keys,
          snapshot,
          self: this.host,
          from: peers.from,
          seeds: peers.seeds,
          waitMs: peers.waitMs,
          backstopMs: this.#opts.backstopMs,
          log: this.#opts.log,
        })
      : null;
    // a swap's pull (not a catch-up: the commit is made, nobody waits on it) serves each file to
    // peers once placed, from when it has a source for them (`sharing`), so the rounds overlap
    const share = !forCommit && this.#peerUrl !== null ? this.#sharePull(slot, snapshot, finder) : null;
    let stats: PullStats;
    try {
      stats = await pullSnapshot({
        from,
        token: this.#opts.token,
        snapshot,
        base,
        into: this.#opts.layout.slots[slot],
        // keeping releases, copies share what did not change: linked from the mounted one
        ...(this.#opts.keep > 2 && this.#local && this.#local.mounted !== slot
          ? { share: this.#opts.layout.slots[this.#local.mounted] }
          : {}),
        durable: this.#opts.durable,
        timeoutMs: this.#opts.drainTimeoutMs,
        signal: pulling.abort.signal,
        onStart: (live) => {
          pulling.stats = live;
        },
        ...(share ? { progress: share.progress, onSource: share.announce } : {}),
        ...(finder
          ? {
              peers: {
                pick: (avoid, signal) => finder.pick(avoid, signal),
                sharing: (url) => finder.isSharing(url),
                waited: (ms) => finder.waited(ms),
                timeoutMs: this.#opts.peerTimeoutMs,
                minBytesPerSecond: HOST_DEFAULTS.peerMinBytesPerSecond,
                maxFailures: HOST_DEFAULTS.peerFailures,
                onFailure: (peer, err) =>
                  this.#opts.log.warn({ peer, snapshot, err: err.message }, 'a peer failed a pull: asking another'),
              } satisfies PeerPull,
            }
          : {}),
      });
    } catch (err) {
      share?.failed(err as Error);
      throw err;
    } finally {
      finder?.close();
      if (this.#pulling === pulling) this.#pulling = null;
    }
    share?.progress.finish();
    await this.#recordSlot(slot, { snapshot, copying: false });
    this.#peerServer.hold(slot, snapshot);
    this.#lastPull = { ...stats, snapshot, ms: performance.now() - started, seed: finder === null };
    this.#opts.log.info({ slot, snapshot, ...stats }, `pulled the coordinator's snapshot into slot ${slot}`);
    return slot;
  }

  /**
   * Serving the files of a pull into `slot` to peers as they are placed:
   * `announce` (awaited before each files request: once, when the pull first
   * has a source) makes the slot's files servable and puts
   * `sharing/<snapshot>/<host>` on this host's lease; its create revision
   * then bounds whom the finder picks (only hosts that said so before). A
   * failed pull cuts the answers waiting on it and takes the key back.
   */
  #sharePull(slot: SlotName, snapshot: string, finder: PeerFinder | null) {
    const progress = new PullProgress();
    const key = this.#keys.sharingBy(snapshot, this.host);
    let announced: Promise<void> | null = null;
    const announce = (): Promise<void> => {
      announced ??= (async () => {
        const peer = this.#peerUrl;
        const lease = this.#lease.lease;
        if (peer === null || !lease) return;
        try {
          // the order is the key's create revision, as other hosts read it: a key made now
          const revision = await putNewKey(this.#opts.etcd, key, JSON.stringify({ snapshot, peer }), lease);
          finder?.ownRevision(revision); // a seed has no finder: its key is put all the same
          // served from now, not before: a key left from before could have been picked by a host
          // this one pulls from (it is told 410, and passes this host over a moment)
          this.#peerServer.share(slot, snapshot, progress);
        } catch (err) {
          // other hosts may see the key or not: this host then pulls only from hosts holding the
          // snapshot whole (or the coordinator), so none of them can be waiting on it
          finder?.ownRevision(0);
          this.#opts.log.warn(
            { err: (err as Error).message, snapshot },
            'cannot say in etcd that this host shares its pull; it pulls from hosts holding the snapshot whole',
          );
        }
      })();
      return announced;
    };
    const failed = (err: Error) => {
      progress.fail(err);
      this.#peerServer.unshare(slot);
      if (announced) void this.#opts.etcd.delete(key).catch(() => {});
    };
    return { progress, announce, failed };
  }

  /** Switch this host to the committed epoch: at once when a slot holds it, else after catching up. */
  async #follow(epoch: FleetEpoch): Promise<void> {
    const keeping = this.#opts.keep > 2;
    const mounted = this.#local?.mounted ?? null;
    let slot: SlotName | null = keeping ? this.#holding(epoch.snapshot) : null;
    if (!keeping) {
      for (const s of [this.#standby(epoch.snapshot), mounted]) if (this.#holds(s, epoch.snapshot)) slot = s;
    }
    if (slot === null) {
      this.#phase = 'catching_up';
      // this host's servers are behind the fleet until it has caught up: they say so from now on
      this.#stampEpoch = Math.max(this.#stampEpoch ?? 0, epoch.epoch);
      await this.#stamps.run();
      this.#opts.log.warn(
        { epoch: epoch.epoch, snapshot: epoch.snapshot },
        `this host does not hold epoch ${epoch.epoch}: catching up from the coordinator`,
      );
      // from the coordinator elected now: the one that committed may have moved or given way to another,
      // which holds the committed copy again once it is elected
      const current = parseJson<CoordinatorRecord>((await this.#opts.etcd.get(this.#keys.coordinator))?.value);
      slot = await this.#fill(
        this.#standby(epoch.snapshot),
        epoch.snapshot,
        current?.url ?? epoch.url,
        epoch.epoch,
        true,
        {
          from: 'members',
          seeds: [],
          // a host catching up asks the members that hold the commit, and waits for none
          waitMs: this.#opts.peerTimeoutMs,
        },
      );
    }
    this.#phase = 'switching';
    // a retained release mounted again (a rollback) keeps the epoch that published it: pins name it so
    const local = this.#local;
    const again =
      !keeping || !local
        ? undefined
        : local.mounted === slot
          ? releaseEpochOf(local)
          : local.retained?.find((r) => r.slot === slot)?.epoch;
    this.#local = await publishEpoch(this.#opts.layout, epoch.epoch, slot, {
      lease: this.#opts.serverTtlMs,
      release: epoch.release,
      current: this.#local,
      ...(keeping
        ? {
            keep: this.#opts.keep,
            // the release mounted until now joins the retained ones, the oldest past keep - 2 leave:
            // their copies are free for the next pulls once this host's servers let go of them
            retained: this.#local
              ? retainedAfter(this.#local, slot, this.#opts.skewMaxAgeMs).slice(0, this.#opts.keep - 2)
              : [],
            ...(again !== undefined ? { since: again } : {}),
          }
        : {}),
    });
    this.#opts.log.info({ epoch: epoch.epoch, slot }, `switched to fleet epoch ${epoch.epoch}`);
    await this.#putMember().catch(() => {});
  }

  async #drainAndAck(epoch: number): Promise<void> {
    this.#phase = 'draining';
    const local = this.#local;
    if (!local) return;
    // the copies the epoch neither mounts nor retains: the one mounted before, with two copies
    const used = new Set([local.mounted, ...(local.retained ?? []).map((r) => r.slot)]);
    const freed = ALL_SLOTS.filter((s) => !used.has(s));
    const old = freed.filter((s) => keptSlots(this.#opts.keep).includes(s)).join(', ');
    // first every server of this host serves the epoch (the host is ready), then the old copy drains (the ack)
    await waitForServers({
      serversDir: this.#opts.layout.serversDir,
      ttlMs: this.#opts.serverTtlMs,
      timeoutMs: this.#opts.drainTimeoutMs,
      what: `this host's servers to switch to epoch ${epoch}`,
      done: (hb) => hb.epoch >= epoch,
      describe: (hb) => `is still at epoch ${hb.epoch}`,
    });
    this.#switched = epoch;
    this.#stampEpoch = Math.max(this.#stampEpoch ?? 0, epoch);
    void this.#stamps.run();
    await this.#putMember().catch(() => {});
    await waitForServers({
      serversDir: this.#opts.layout.serversDir,
      ttlMs: this.#opts.serverTtlMs,
      timeoutMs: this.#opts.drainTimeoutMs,
      what: `this host's servers to switch to epoch ${epoch} and drain slot ${old}`,
      done: (hb) => hb.epoch >= epoch && freed.every((s) => inflightOn(hb, s) === 0),
      describe: (hb) =>
        hb.epoch < epoch
          ? `is still at epoch ${hb.epoch}`
          : `still has ${freed.reduce((n, s) => n + inflightOn(hb, s), 0)} requests in flight on slot ${old}`,
    });
    const lease = this.#lease.lease;
    if (!lease) throw new MirrorswapError('FLEET_ETCD', 'no lease to acknowledge on (etcd unreachable?)');
    await this.#opts.etcd.put(this.#keys.ack(this.host), JSON.stringify(ackOf(epoch)), lease);
    this.#acked = epoch;
  }

  /**
   * Register (or update) this host's member key, on its lease. The key is
   * only ever taken when free or already ours: a second host agent started
   * with the same --host-id would otherwise answer proposals and acknowledge
   * epochs in the first one's name. Such a one follows the fleet's commits
   * for its own servers, but takes no part in swaps and is not ready.
   */
  async #putMember(lease = this.#lease.lease): Promise<void> {
    if (!lease) return;
    const record: MemberRecord = {
      host: this.host,
      url: this.#opts.url,
      peer: this.#peerUrl,
      epoch: this.#local?.epoch ?? 0,
      mounted: this.#local?.mounted ?? null,
      slots: Object.fromEntries(slotEntries(this.#slots).map(([s, held]) => [s, held.snapshot])) as SlotMap<
        string | null
      >,
      ready: this.ready,
      lastError: this.#lastError,
      at: new Date().toISOString(),
    };
    const key = this.#keys.member(this.host);
    const put = [{ put: { key, value: JSON.stringify(record), lease } }];
    const ours = await this.#opts.etcd.txn([{ key, target: 'lease', result: 'equal', lease }], put);
    const taken =
      ours.succeeded ||
      (await this.#opts.etcd.txn([{ key, target: 'create', result: 'equal', createRevision: 0 }], put)).succeeded;
    if (taken) {
      if (this.#impostor) this.#opts.log.info({ host: this.host }, 'this host id is free again: taking part in swaps');
      this.#impostor = null;
      return;
    }
    const holder = await this.#opts.etcd.get(key);
    const why = `host id ${this.host} is registered by another host agent (etcd lease ${holder?.lease ?? '?'}; or by this one before a restart, until that lease ends): give each host its own --host-id; this one follows the fleet but takes no part in its swaps`;
    if (this.#impostor !== why) this.#opts.log.error({ host: this.host }, why);
    this.#impostor = why;
    this.#leftFleet(why);
  }

  async #recordSlot(slot: SlotName, record: SlotRecord): Promise<void> {
    const next = { ...this.#slots, [slot]: record };
    await writeFileAtomic(
      slotsFile(this.#opts.layout),
      `${JSON.stringify({ format: SLOTS_FILE_FORMAT, fleet: this.#opts.fleet, slots: next })}\n`,
    );
    this.#slots = next;
  }

  /** This host is out of the fleet: its servers say not ready from now on. */
  #leftFleet(why: string): void {
    this.#memberUntil = 0;
    this.#notMember = why;
    void this.#stamps.run();
  }

  /**
   * Write what this host's servers judge their readiness by
   * (`state/fleet-member.json`): whether it is a member, until when its lease
   * surely holds, and the fleet's committed epoch. A failed write is logged;
   * the stamp on disk then runs out by itself.
   */
  async #writeStamp(): Promise<void> {
    const member = this.#notMember === null && this.#memberUntil > 0;
    const stamp: MembershipStamp = {
      format: 1,
      fleet: this.#opts.fleet,
      host: this.host,
      pid: process.pid,
      member,
      until: member ? new Date(this.#memberUntil).toISOString() : null,
      fleetEpoch: this.#stampEpoch,
      reason: member ? null : (this.#notMember ?? 'no lease held'),
      at: new Date().toISOString(),
    };
    try {
      await writeMembership(this.#opts.layout.stateDir, stamp);
    } catch (err) {
      this.#opts.log.warn({ err: (err as Error).message }, 'cannot write the fleet membership stamp');
    }
  }

  /** Stop. `leave` gives the lease back, so the fleet stops counting this host at once. */
  async close(leave = true): Promise<void> {
    this.#closed = true;
    this.#leftFleet('its host agent stopped');
    await this.#stamps.settled();
    this.#pulling?.abort.abort();
    clearTimeout(this.#backstop);
    clearTimeout(this.#retry);
    for (const w of this.#watches) w.close();
    await this.#lease.close(leave);
    for (let i = 0; i < 500 && this.#running; i++) await new Promise((r) => setTimeout(r, 10));
    await this.#lock.release();
  }
}

function answerKey(p: SwapProposal): string {
  return `${p.epoch}/${p.snapshot}`;
}

function ackOf(epoch: number): AckRecord {
  return { epoch, at: new Date().toISOString() };
}

function slotsFile(layout: StoreLayout): string {
  return `${layout.stateDir}/fleet-slots.json`;
}

/** A slot whose content is not known: it is compared whole with the next snapshot pulled into it. */
const UNKNOWN_SLOT: SlotRecord = { snapshot: null, copying: false };

/** The slots `slots` has a record of, in order. */
function slotEntries(slots: SlotMap<SlotRecord>): [SlotName, SlotRecord][] {
  return ALL_SLOTS.flatMap((s) => (slots[s] ? [[s, slots[s]] as [SlotName, SlotRecord]] : []));
}

async function readSlots(layout: StoreLayout): Promise<SlotMap<SlotRecord>> {
  const text = (await readSmallFile(slotsFile(layout), 64 * 1024).catch(() => null))?.toString('utf8');
  const parsed = parseJson<{ format: number; slots: Record<string, unknown> }>(text);
  const out: SlotMap<SlotRecord> = { a: UNKNOWN_SLOT, b: UNKNOWN_SLOT };
  if (parsed?.format !== SLOTS_FILE_FORMAT || typeof parsed.slots !== 'object' || parsed.slots === null) return out;
  for (const [slot, held] of Object.entries(parsed.slots)) {
    const r = held as Partial<SlotRecord> | null;
    // a record of another shape is not trusted: that copy is compared whole when next pulled into
    if (
      isSlotName(slot) &&
      r &&
      (typeof r.snapshot === 'string' || r.snapshot === null) &&
      typeof r.copying === 'boolean'
    ) {
      out[slot] = { snapshot: r.snapshot, copying: r.copying };
    }
  }
  return out;
}
