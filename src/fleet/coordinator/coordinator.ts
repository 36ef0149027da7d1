import { createHash } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import { runHook } from '../../store/hooks.js';
import { MirrorswapError } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import type { SeedSlot } from '../../store/store-layout.js';
import type { Compare, Etcd, KeyValue, Op } from '../etcd.js';
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
import { Snapshots } from './snapshots.js';
import { FLEET_DEFAULTS, type StragglerPolicy } from '../fleet-defaults.js';
import type { Counter, Registry } from 'prom-client';
import { registerCoordinatorMetrics } from './coordinator-metrics.js';
import type { FleetStatus, MemberStatus } from './fleet-status.js';

export type { StragglerPolicy } from '../fleet-defaults.js';

export type { FleetStatus, MemberStatus } from './fleet-status.js';

export interface CoordinatorOptions {
  etcd: Etcd;
  fleet: string;
  /** This coordinator's id (default: its URL). */
  id: string;
  /** Where hosts reach this coordinator's content endpoints. */
  url: string;
  slotRoots: Readonly<Record<SeedSlot, string>>;
  /** Where the snapshots' manifests are kept (emptied at start). */
  manifestsDir: string;
  log: Logger;
  leaseTtlSeconds: number;
  prepareTimeoutMs: number;
  straggler: StragglerPolicy;
  onEvict?: string | undefined;
  /**
   * The quorum: a swap commits only if at least this many hosts prepared it
   * (0: no floor). With `evict`, it bounds how many hosts a swap may leave
   * behind; with either policy, no swap is proposed while fewer hosts are live.
   */
  minMembers?: number;
  /**
   * Hosts that pull each swap's files from this coordinator (the seeds); the
   * other members pull them from hosts that prepared it (peers), this
   * coordinator their fallback. 0: every host pulls from the coordinator.
   */
  seeds?: number;
}

/** How long a host gone from the fleet is still named in status (a decommissioned host drops out after it). */
const GONE_NAMED_MS = 24 * 3600_000;

/** How often waits re-read etcd while they also watch it: a lost watch event costs at most this. */
const BACKSTOP_MS = 250;

/**
 * The fleet half of the agent beside master: elected through a lease on the
 * `coordinator` key, it turns each local swap into a fleet one. The local
 * copy into the standby becomes the snapshot every host pulls; the swap is
 * proposed, every member prepares it (or the swap is aborted, or stragglers
 * evicted), and one transaction fenced by this coordinator's election
 * commits it. Only then does anything switch, here or on any host.
 */
export class FleetCoordinator {
  readonly snapshots: Snapshots;
  readonly keys: FleetKeys;
  readonly #opts: CoordinatorOptions;
  readonly #etcd: Etcd;
  readonly #lease: LeaseKeeper;
  /** The create revision of our `coordinator` key: the fence of every commit; null while not elected. */
  #electedAt: number | null = null;
  #holder: string | null = null;
  #evicted: { host: string; epoch: number; at: string }[] = [];
  /** Every host seen live since this coordinator started, and when last: one whose lease ended is named gone. */
  readonly #seen = new Map<string, number>();
  #onElected: ((fleetEpoch: FleetEpoch | null) => Promise<void>) | undefined;
  #evictions: Counter<'fleet' | 'host'> | undefined;
  /** The revision of the last commit: acks come after it. */
  #committedAt = 0;
  #closed = false;
  #campaign: NodeJS.Timeout | undefined;
  /** The last failure to reach etcd while campaigning, cleared by the next success: said when a swap is refused. */
  #etcdError: string | null = null;

  constructor(opts: CoordinatorOptions) {
    this.#opts = opts;
    this.#etcd = opts.etcd;
    this.keys = fleetKeys(opts.fleet);
    this.snapshots = new Snapshots(opts.slotRoots, opts.manifestsDir);
    this.#lease = new LeaseKeeper(opts.etcd, opts.leaseTtlSeconds, {
      granted: (lease) => this.#campaignOnce(lease),
      lost: (reason) => {
        if (this.#electedAt !== null) opts.log.error({ reason }, 'fleet coordinator lost its lease: no longer elected');
        this.#electedAt = null;
      },
      error: (err) =>
        opts.log.warn({ err: err.message }, 'fleet coordinator cannot renew its lease (etcd unreachable?)'),
    });
  }

  /** Export the fleet's state with the agent's metrics. */
  registerMetrics(registry: Registry): void {
    this.#evictions = registerCoordinatorMetrics(registry, () => this.status());
  }

  get elected(): boolean {
    return this.#electedAt !== null;
  }

  /** Start campaigning; `onElected` runs each time this coordinator is elected, before any swap. */
  start(onElected: (fleetEpoch: FleetEpoch | null) => Promise<void>): void {
    this.#onElected = onElected;
    this.#lease.start();
    const again = () => {
      if (this.#closed) return;
      this.#campaign = setTimeout(async () => {
        if (this.#electedAt === null && this.#lease.lease) await this.#campaignOnce().catch(() => {});
        again();
      }, 500);
      this.#campaign.unref();
    };
    again();
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#campaign);
    await this.#lease.close(true);
  }

  /** Try once to become the coordinator: put our key if there is none. */
  async #campaignOnce(lease: string | null = this.#lease.lease): Promise<void> {
    if (!lease || this.#closed) return;
    const record: CoordinatorRecord = { id: this.#opts.id, url: this.#opts.url, since: new Date().toISOString() };
    const { succeeded } = await this.#etcd.txn(
      [{ key: this.keys.coordinator, target: 'create', result: 'equal', createRevision: 0 }],
      [{ put: { key: this.keys.coordinator, value: JSON.stringify(record), lease } }],
    );
    const kv = await this.#etcd.get(this.keys.coordinator);
    this.#etcdError = null;
    const holder = parseJson<CoordinatorRecord>(kv?.value);
    this.#holder = holder?.id ?? null;
    if (!succeeded && !(kv && kv.lease === lease)) return;
    if (!kv) return;
    this.#electedAt = kv.createRevision;
    this.#opts.log.info({ fleet: this.#opts.fleet, revision: kv.createRevision }, 'elected fleet coordinator');
    // not awaited: the lease's keep-alive waits on this, and re-reading a large copy's manifest can
    // outlast the lease
    void this.#recover().catch((err: Error) =>
      this.#opts.log.error({ err: err.message }, 'fleet coordinator could not recover the fleet state'),
    );
  }

  /** After an election: a proposal left by a coordinator that died is aborted; the committed epoch is followed. */
  async #recover(): Promise<void> {
    const swap = await this.#etcd.get(this.keys.swap);
    if (swap) {
      const { succeeded } = await this.#etcd.txn(this.#fence(), [{ delete: { key: this.keys.swap } }]);
      if (succeeded)
        this.#opts.log.warn(
          { proposal: parseJson<SwapProposal>(swap.value) },
          'aborted a swap proposed by a coordinator that stopped before committing it: nothing switched',
        );
    }
    await this.#onElected?.(await this.committed());
  }

  #fence() {
    if (this.#electedAt === null) throw new MirrorswapError('NOT_COORDINATOR', this.#notElected());
    return [
      {
        key: this.keys.coordinator,
        target: 'create' as const,
        result: 'equal' as const,
        createRevision: this.#electedAt,
      },
    ];
  }

  #notElected(): string {
    const why = this.#holder
      ? ` (${this.#holder} is)`
      : this.#etcdError
        ? ` (it cannot reach etcd to be elected: ${this.#etcdError})`
        : ' (no election has been won yet)';
    return `this agent is not the fleet's coordinator${why}: only the elected one swaps`;
  }

  /** Fail early (before copying) when this agent cannot commit. */
  mustBeElected(): void {
    if (this.#electedAt === null) throw new MirrorswapError('NOT_COORDINATOR', this.#notElected());
  }

  /** The epoch the next swap commits: above this store's, the fleet's and every live host's. */
  async nextEpoch(local: number): Promise<number> {
    const [committed, members] = await Promise.all([this.committed(), this.members()]);
    return Math.max(local, committed?.epoch ?? 0, ...members.map((m) => m.epoch)) + 1;
  }

  /** The fleet's committed epoch (a linearizable read). */
  async committed(): Promise<FleetEpoch | null> {
    return parseJson<FleetEpoch>((await this.#etcd.get(this.keys.epoch))?.value);
  }

  /**
   * Propose `epoch` (the snapshot in `slot`), wait for every live member to
   * prepare it, deal with stragglers as the policy says, and commit it in one
   * transaction fenced by this coordinator's election and the epoch key's
   * revision. Throws (with nothing switched anywhere) when it cannot.
   */
  async commit(args: {
    epoch: number;
    slot: SeedSlot;
    seq: number | null;
    snapshot: string;
    release?: string | undefined;
  }): Promise<{ epoch: FleetEpoch; evicted: string[]; preparedMs: number }> {
    const fence = this.#fence();
    const current = await this.#etcd.get(this.keys.epoch);
    const live = await this.members();
    const members = live.map((m) => m.host);
    const quorum = this.#opts.minMembers ?? 0;
    if (members.length < quorum) {
      const gone = this.#gone(live, parseJson<FleetEpoch>(current?.value)).map((g) => g.host);
      throw new MirrorswapError(
        'FLEET_QUORUM',
        `the swap to epoch ${args.epoch} was not proposed, nothing switched: ${members.length} live host${members.length === 1 ? '' : 's'} (${members.join(', ') || 'none'}), fewer than --min-members ${quorum}${gone.length > 0 ? `; gone: ${gone.join(', ')}` : ''}`,
      );
    }
    const seeds = pickSeeds(live, args.snapshot, this.#opts.seeds ?? FLEET_DEFAULTS.seeds);
    const proposal: SwapProposal = {
      epoch: args.epoch,
      snapshot: args.snapshot,
      url: this.#opts.url,
      members,
      ...(seeds ? { seeds, prepareTimeoutMs: this.#opts.prepareTimeoutMs } : {}),
      proposedAt: new Date().toISOString(),
    };
    const proposed = await this.#etcd.txn(fence, [{ put: { key: this.keys.swap, value: JSON.stringify(proposal) } }]);
    if (!proposed.succeeded) throw new MirrorswapError('NOT_COORDINATOR', this.#notElected());
    const started = performance.now();
    let committed = false;
    try {
      const answers = await this.#waitForPrepared(proposal, proposed.revision);
      const preparedMs = performance.now() - started;
      const failed = members.filter((h) => answers.get(h)?.ok !== true);
      const why = (h: string) => {
        const a = answers.get(h);
        return a && !a.ok ? `${h}: ${a.error}` : `${h}: did not prepare within ${this.#opts.prepareTimeoutMs} ms`;
      };
      if (failed.length > 0 && this.#opts.straggler === 'block') {
        throw new MirrorswapError(
          'FLEET_PREPARE',
          `the swap to epoch ${args.epoch} was aborted, nothing switched: ${failed.map(why).join('; ')} (--straggler block)`,
        );
      }
      // checked before any eviction: a swap that cannot commit takes nobody out
      if (members.length - failed.length < quorum) {
        throw new MirrorswapError(
          'FLEET_QUORUM',
          `the swap to epoch ${args.epoch} was aborted, nothing switched: ${members.length - failed.length} of ${members.length} hosts prepared it, fewer than --min-members ${quorum}: ${failed.map(why).join('; ')}`,
        );
      }
      for (const host of failed) await this.#evict(host, args.epoch, why(host));
      const record: FleetEpoch = {
        epoch: args.epoch,
        snapshot: args.snapshot,
        url: this.#opts.url,
        coordinatorSlot: args.slot,
        coordinatorSeq: args.seq,
        members: members.filter((h) => !failed.includes(h)),
        committedAt: new Date().toISOString(),
        ...(args.release !== undefined ? { release: args.release } : {}),
      };
      const epochUnmoved = current
        ? { key: this.keys.epoch, target: 'mod' as const, result: 'equal' as const, modRevision: current.modRevision }
        : { key: this.keys.epoch, target: 'create' as const, result: 'equal' as const, createRevision: 0 };
      const landed = await this.#commitOnce(
        [...this.#fence(), epochUnmoved],
        record,
        Date.now() + Math.max(this.#opts.prepareTimeoutMs, 5000),
      );
      if (!landed) {
        throw new MirrorswapError(
          'NOT_COORDINATOR',
          `the commit of epoch ${args.epoch} was refused: this agent lost its election or another coordinator committed meanwhile; nothing was switched by this one`,
        );
      }
      committed = true;
      for (const h of failed) {
        this.#evicted.push({ host: h, epoch: args.epoch, at: record.committedAt });
        this.#evictions?.inc({ fleet: this.#opts.fleet, host: h });
      }
      this.#evicted = this.#evicted.slice(-20);
      return { epoch: record, evicted: failed, preparedMs };
    } finally {
      if (!committed) {
        // abort: take the proposal back (fenced: a newer coordinator's is not ours to take)
        await this.#etcd
          .txn(this.#electedAt === null ? [] : this.#fence(), [{ delete: { key: this.keys.swap } }])
          .catch((err: Error) =>
            this.#opts.log.warn(
              { err: err.message },
              'could not withdraw an aborted proposal; the next coordinator will',
            ),
          );
      }
      await this.#etcd.deletePrefix(this.keys.prepared(args.snapshot)).catch(() => {});
      await this.#etcd.deletePrefix(this.keys.sharing(args.snapshot)).catch(() => {});
    }
  }

  /**
   * The commit transaction, retried while etcd does not answer (a leader
   * election); an answer that was lost is read back: the epoch key holding
   * our record means it landed. False when etcd refused it.
   */
  async #commitOnce(compares: Compare[], record: FleetEpoch, deadline: number): Promise<boolean> {
    const ops: Op[] = [
      { put: { key: this.keys.epoch, value: JSON.stringify(record) } },
      { delete: { key: this.keys.swap } },
    ];
    for (;;) {
      try {
        const { succeeded, revision } = await this.#etcd.txn(compares, ops);
        if (succeeded) {
          this.#committedAt = revision;
          return true;
        }
        // refused: unless an earlier attempt of ours landed and moved the epoch
        const now = await this.committed();
        return now?.epoch === record.epoch && now.snapshot === record.snapshot;
      } catch (err) {
        if (Date.now() >= deadline) {
          throw new MirrorswapError(
            'FLEET_COMMIT_UNKNOWN',
            `etcd did not answer the commit of epoch ${record.epoch} (${(err as Error).message}); hosts follow it if it landed, and the next swap starts from whatever etcd holds`,
          );
        }
        this.#opts.log.warn({ err: (err as Error).message }, 'the fleet commit got no answer; trying again');
        await delay(200);
      }
    }
  }

  /** Every member's answer to the proposal, once all answered or the prepare timeout passed. */
  async #waitForPrepared(proposal: SwapProposal, proposedAt: number): Promise<Map<string, Prepared>> {
    const deadline = Date.now() + this.#opts.prepareTimeoutMs;
    const prefix = this.keys.prepared(proposal.snapshot);
    const answers = new Map<string, Prepared>();
    const wakeup = new Wakeup();
    // from the proposal's revision: an answer written before the watch is set up still wakes the wait
    const watch = this.#etcd.watch(prefix, { prefix: true, fromRevision: proposedAt, onEvents: () => wakeup.notify() });
    try {
      for (;;) {
        // an etcd without a leader for a moment is waited out, within the prepare timeout
        const { kvs } = await this.#etcd.getPrefix(prefix).catch((err: Error) => {
          this.#opts.log.warn({ err: err.message }, "cannot read the hosts' answers from etcd; trying again");
          return { kvs: [] as KeyValue[] };
        });
        for (const kv of kvs) {
          const answer = parseJson<Prepared>(kv.value);
          const host = kv.key.slice(prefix.length);
          if (answer?.snapshot === proposal.snapshot) answers.set(host, answer);
        }
        // a member whose lease ended is gone for sure: it answers now, with that
        const live = await this.members().catch(() => null);
        if (live) {
          const alive = new Set(live.map((m) => m.host));
          for (const h of proposal.members) {
            if (!answers.has(h) && !alive.has(h))
              answers.set(h, {
                ok: false,
                snapshot: proposal.snapshot,
                error: 'its lease ended (the host stopped or lost etcd)',
              });
          }
        }
        if (proposal.members.every((h) => answers.has(h))) return answers;
        if (Date.now() >= deadline) return answers;
        await wakeup.wait(Math.min(BACKSTOP_MS, Math.max(0, deadline - Date.now())));
      }
    } finally {
      watch.close();
    }
  }

  async #evict(host: string, epoch: number, why: string): Promise<void> {
    this.#opts.log.warn({ host, epoch, why }, `evicting fleet host ${host}: it did not prepare epoch ${epoch}`);
    if (!this.#opts.onEvict) return;
    try {
      await runHook('on-evict', this.#opts.onEvict, {
        MIRRORSWAP_HOST: host,
        MIRRORSWAP_EPOCH: String(epoch),
        MIRRORSWAP_FLEET: this.#opts.fleet,
      });
    } catch (err) {
      throw new MirrorswapError(
        'FLEET_PREPARE',
        `the swap to epoch ${epoch} was aborted, nothing switched: ${host} did not prepare (${why}) and the on-evict hook failed, so it could not be taken out: ${(err as Error).message}`,
      );
    }
  }

  /**
   * Wait until every host that committed `epoch` has switched to it and
   * drained its old copy. A host whose lease ends meanwhile is dropped from
   * the wait (named); one still holding it up after `timeoutMs` fails it.
   */
  async awaitDrained(epoch: FleetEpoch, timeoutMs: number): Promise<{ dropped: string[] }> {
    const deadline = Date.now() + timeoutMs;
    const dropped: string[] = [];
    const wakeup = new Wakeup();
    const watch = this.#etcd.watch(this.keys.acks, {
      prefix: true,
      fromRevision: this.#committedAt,
      onEvents: () => wakeup.notify(),
    });
    try {
      for (;;) {
        let read: [{ kvs: KeyValue[] }, MemberRecord[]];
        try {
          read = await Promise.all([this.#etcd.getPrefix(this.keys.acks), this.members()]);
        } catch (err) {
          if (Date.now() >= deadline) throw err;
          await delay(BACKSTOP_MS);
          continue;
        }
        const [{ kvs: acks }, live] = read;
        const acked = new Map(acks.map((kv) => [kv.key.slice(this.keys.acks.length), parseJson<AckRecord>(kv.value)]));
        const liveHosts = new Set(live.map((m) => m.host));
        const waiting: string[] = [];
        for (const host of epoch.members) {
          if (dropped.includes(host)) continue;
          if (!liveHosts.has(host)) {
            dropped.push(host);
            this.#opts.log.warn(
              { host },
              'fleet host left (its lease ended) during the drain; no longer waiting for it',
            );
            continue;
          }
          if ((acked.get(host)?.epoch ?? 0) < epoch.epoch) waiting.push(host);
        }
        if (waiting.length === 0) return { dropped };
        if (Date.now() >= deadline) {
          throw new MirrorswapError(
            'DRAIN_TIMEOUT',
            `gave up after ${Math.round(timeoutMs / 1000)} s waiting for fleet hosts to switch to epoch ${epoch.epoch} and drain: ${waiting
              .map(
                (h) =>
                  `host ${h} ${describeMember(
                    live.find((m) => m.host === h),
                    epoch.epoch,
                  )}`,
              )
              .join('; ')}`,
          );
        }
        await wakeup.wait(Math.min(BACKSTOP_MS, Math.max(0, deadline - Date.now())));
      }
    } finally {
      watch.close();
    }
  }

  /** The live members (their keys are on their leases). */
  async members(): Promise<MemberRecord[]> {
    const { kvs } = await this.#etcd.getPrefix(this.keys.members);
    const members = kvs
      .map((kv: KeyValue) => parseJson<MemberRecord>(kv.value))
      .filter((m): m is MemberRecord => m !== null);
    this.#sawLive(members);
    return members;
  }

  #sawLive(members: MemberRecord[]): void {
    const now = Date.now();
    for (const m of members) this.#seen.set(m.host, now);
  }

  /** Known hosts not live now: seen since this coordinator started, or members of the committed epoch. */
  #gone(live: MemberRecord[], epoch: FleetEpoch | null): FleetStatus['gone'] {
    const now = Date.now();
    const liveHosts = new Set(live.map((m) => m.host));
    const known = new Set([...this.#seen.keys(), ...(epoch?.members ?? [])]);
    const gone: FleetStatus['gone'] = [];
    for (const host of [...known].sort()) {
      if (liveHosts.has(host)) continue;
      const seen = this.#seen.get(host);
      if (seen !== undefined && now - seen > GONE_NAMED_MS) {
        this.#seen.delete(host);
        continue;
      }
      gone.push({ host, lastSeen: seen === undefined ? null : new Date(seen).toISOString() });
    }
    return gone;
  }

  /** Every host's state, for status, the status page and metrics. */
  async status(): Promise<FleetStatus> {
    const [{ kvs }, epoch, swap, holder] = await Promise.all([
      this.#etcd.getPrefix(this.keys.root),
      this.committed(),
      this.#etcd.get(this.keys.swap),
      this.#etcd.get(this.keys.coordinator),
    ]);
    const value = (key: string) => kvs.find((kv) => kv.key === key)?.value;
    const proposal = parseJson<SwapProposal>(swap?.value);
    const hosts: MemberStatus[] = kvs
      .filter((kv) => kv.key.startsWith(this.keys.members))
      .map((kv) => parseJson<MemberRecord>(kv.value))
      .filter((m): m is MemberRecord => m !== null)
      .map((m) => ({
        ...m,
        lag: epoch ? Math.max(0, epoch.epoch - m.epoch) : 0,
        acked: parseJson<AckRecord>(value(this.keys.ack(m.host)))?.epoch ?? null,
        prepared: proposal ? parseJson<Prepared>(value(this.keys.preparedBy(proposal.snapshot, m.host))) : null,
      }));
    this.#sawLive(hosts);
    return {
      fleet: this.#opts.fleet,
      coordinator: {
        id: this.#opts.id,
        elected: this.elected,
        holder: parseJson<CoordinatorRecord>(holder?.value)?.id ?? null,
      },
      epoch,
      swap: proposal,
      hosts,
      evicted: this.#evicted,
      gone: this.#gone(hosts, epoch),
      pulls: this.snapshots.pulls(),
      sent: this.snapshots.sent(),
    };
  }
}

/** Wakes a waiting loop on a watch event; an event that comes while the loop is busy is not lost. */
class Wakeup {
  #pending = false;
  #wake: (() => void) | undefined;

  notify(): void {
    this.#pending = true;
    this.#wake?.();
  }

  /** Return at the next event (at once if one came since the last wait), or after `ms`. */
  async wait(ms: number): Promise<void> {
    if (!this.#pending) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, ms);
        function done() {
          clearTimeout(timer);
          resolve();
        }
        this.#wake = done;
      });
      this.#wake = undefined;
    }
    this.#pending = false;
  }
}

function describeMember(m: MemberRecord | undefined, epoch: number): string {
  if (!m) return 'is gone';
  if (m.epoch < epoch) return `is still at epoch ${m.epoch}${m.lastError ? ` (${m.lastError})` : ''}`;
  return 'has switched but not yet drained its old copy';
}

/**
 * The seeds of a swap: the first `count` members that serve peers, in an
 * order made from the snapshot id (each swap seeds other hosts: no host
 * carries every first pull). Undefined when peers would not help: no seeds
 * asked for, no member serves peers, or every member would be a seed.
 */
export function pickSeeds(live: readonly MemberRecord[], snapshot: string, count: number): string[] | undefined {
  if (count <= 0) return undefined;
  const rank = (host: string) => createHash('sha256').update(`${snapshot}/${host}`).digest('hex');
  const serving = live
    .filter((m) => typeof m.peer === 'string' && m.peer !== '')
    .map((m) => ({ host: m.host, rank: rank(m.host) }))
    .sort((x, y) => (x.rank < y.rank ? -1 : x.rank > y.rank ? 1 : 0));
  if (serving.length === 0 || live.length <= count) return undefined;
  return serving.slice(0, count).map((m) => m.host);
}
