import type { Logger } from '../../core/logger.js';
import type { Etcd, Watch } from '../etcd.js';
import { type FleetKeys, type MemberRecord, type Prepared, type Sharing, parseJson } from '../fleet-keys.js';
import type { PeerAvoided } from './pull.js';

export interface PeerFinderOptions {
  etcd: Etcd;
  keys: FleetKeys;
  snapshot: string;
  /** This host: never its own peer. */
  self: string;
  /**
   * Where peers are found: `prepared`, the answers to the proposal of
   * `snapshot` (hosts that prepared it, watched as they come); `members`,
   * the member records whose slots hold it (a host catching up with a commit).
   */
  from: 'prepared' | 'members';
  /** The proposal's seeds: once each has failed (answered not ok, or gone), waiting for peers is pointless. */
  seeds: readonly string[];
  /** Longest wait, over all picks of one pull, for a peer to hold the snapshot. */
  waitMs: number;
  /** How often etcd is read again while waiting (besides the watch). */
  backstopMs: number;
  log: Logger;
}

/** Longest a pick sleeps between looks: a peer passed over as busy is back within this. */
const LOOK_MS = 100;

/**
 * Finds the peers of one pull: hosts that hold the snapshot whole and serve
 * its files (their `--advertise` URL), picked at random so that a fleet's
 * pulls spread over every host that has it; when none is free, hosts still
 * pulling it that serve each file once placed (`sharing`), if they said so
 * before this host did (their create revision is lower than its own), so
 * that no two hosts ever wait on each other. A peer is only a place to ask:
 * whatever it answers is checked against the coordinator's manifest.
 */
export class PeerFinder {
  readonly #opts: PeerFinderOptions;
  /** Peers by host: their URL. */
  readonly #peers = new Map<string, string>();
  /** Hosts pulling the snapshot that share it as they go: their URL, and the revision they said so at. */
  readonly #sharing = new Map<string, { url: string; revision: number }>();
  /** The revision this host said it shares at (`ownRevision`); none yet: every sharing host said so before it. */
  #ownRevision = Number.POSITIVE_INFINITY;
  #sharingWatch: Watch | null = null;
  /** Hosts that answered the proposal (ok or not), or whose lease is gone: no more peers to wait for from them. */
  readonly #answered = new Set<string>();
  #watch: Watch | null = null;
  #started = false;
  #lastRead = 0;
  #waited = 0;
  #wake: (() => void) | undefined;
  #closed = false;

  constructor(opts: PeerFinderOptions) {
    this.#opts = opts;
  }

  async pick(avoid: (url: string) => PeerAvoided, signal?: AbortSignal): Promise<string | null> {
    if (!this.#started) await this.#start();
    for (;;) {
      signal?.throwIfAborted();
      if (this.#closed) return null;
      const whole = [...this.#peers.values()];
      // hosts still pulling only within the wait: answers holding none of the files count against it
      const partial = this.#waited < this.#opts.waitMs ? this.#earlierSharing() : [];
      const known = [...whole, ...partial];
      // a peer holding it whole first: it never waits for a file
      for (const urls of [whole, partial]) {
        const candidates = urls.filter((url) => avoid(url) === null);
        if (candidates.length > 0) return candidates[Math.floor(Math.random() * candidates.length)] as string;
      }
      if (this.#hopeless(known.every((url) => avoid(url) === 'failed')) || this.#waited >= this.#opts.waitMs)
        return null;
      const started = performance.now();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, Math.min(LOOK_MS, this.#opts.waitMs - this.#waited));
        const onAbort = () => done();
        signal?.addEventListener('abort', onAbort, { once: true });
        const self = this;
        function done() {
          clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
          self.#wake = undefined;
          resolve();
        }
        this.#wake = done;
      });
      this.#waited += performance.now() - started;
      if (this.#peers.size === 0 && Date.now() - this.#lastRead >= this.#opts.backstopMs) await this.#read();
    }
  }

  /**
   * The URLs of hosts still pulling that said so before this host: a URL is
   * asked only when every key naming it is older than this host's own (a key
   * of another name giving a later sharer's URL, left over or a lie, must
   * not make that sharer look earlier), and none holding the snapshot whole
   * names it.
   */
  #earlierSharing(): string[] {
    const latest = new Map<string, number>();
    for (const s of this.#sharing.values()) latest.set(s.url, Math.max(latest.get(s.url) ?? 0, s.revision));
    const whole = new Set(this.#peers.values());
    return [...latest].filter(([url, revision]) => revision < this.#ownRevision && !whole.has(url)).map(([url]) => url);
  }

  /** Whether `url` is offered as a host still pulling the snapshot (none holding it whole has that URL). */
  isSharing(url: string): boolean {
    for (const whole of this.#peers.values()) if (whole === url) return false;
    for (const s of this.#sharing.values()) if (s.url === url) return true;
    return false;
  }

  /** Time a peer still pulling made this host wait (its answers beyond their bytes' pace): counted as waiting. */
  waited(ms: number): void {
    this.#waited += ms;
  }

  /** This host said it shares the snapshot at `revision`: from now on, it pulls only from hosts that said so before. */
  ownRevision(revision: number): void {
    this.#ownRevision = revision;
  }

  close(): void {
    this.#closed = true;
    this.#watch?.close();
    this.#sharingWatch?.close();
    this.#wake?.();
  }

  /**
   * Nothing to wait for: a catch-up finds no member that serves the commit
   * (or none that has not failed), or a proposal's seeds have all answered
   * (or left) and every peer known failed: hosts still pulling may yet become
   * peers, but they may be held up by the same failures; the coordinator
   * is sure.
   */
  #hopeless(allFailed: boolean): boolean {
    if (!allFailed) return false;
    if (this.#opts.from === 'members') return true;
    return this.#opts.seeds.every((s) => this.#answered.has(s));
  }

  async #start(): Promise<void> {
    this.#started = true;
    const revision = await this.#read();
    if (this.#opts.from !== 'prepared' || this.#closed) return;
    // the answers as they come, from just after the read
    this.#watch = this.#opts.etcd.watch(this.#opts.keys.prepared(this.#opts.snapshot), {
      prefix: true,
      ...(revision !== null ? { fromRevision: revision + 1 } : {}),
      onEvents: (events) => {
        for (const e of events) {
          const host = e.kv.key.slice(this.#opts.keys.prepared(this.#opts.snapshot).length);
          if (e.type === 'put') this.#saw(host, parseJson<Prepared>(e.kv.value));
          else this.#peers.delete(host);
        }
        this.#wake?.();
      },
      onCompacted: () => void this.#read(),
      onError: (err) => this.#opts.log.warn({ err: err.message }, 'watch of peers interrupted; resuming'),
    });
    const sharing = this.#opts.keys.sharing(this.#opts.snapshot);
    this.#sharingWatch = this.#opts.etcd.watch(sharing, {
      prefix: true,
      ...(revision !== null ? { fromRevision: revision + 1 } : {}),
      onEvents: (events) => {
        for (const e of events) {
          const host = e.kv.key.slice(sharing.length);
          if (e.type === 'put') this.#sawSharing(host, e.kv.createRevision, parseJson<Sharing>(e.kv.value));
          else this.#sharing.delete(host);
        }
        this.#wake?.();
      },
      onCompacted: () => void this.#read(),
      onError: (err) => this.#opts.log.warn({ err: err.message }, 'watch of sharing peers interrupted; resuming'),
    });
  }

  /** Read the peers from etcd; the revision read at (null when the read failed: the wait goes on). */
  async #read(): Promise<number | null> {
    this.#lastRead = Date.now();
    const { etcd, keys, snapshot } = this.#opts;
    try {
      if (this.#opts.from === 'members') {
        const { kvs, revision } = await etcd.getPrefix(keys.members);
        for (const kv of kvs) {
          const m = parseJson<MemberRecord>(kv.value);
          if (
            m &&
            m.host !== this.#opts.self &&
            validUrl(m.peer) &&
            (m.slots?.a === snapshot || m.slots?.b === snapshot)
          )
            this.#peers.set(m.host, m.peer as string);
        }
        return revision;
      }
      const prefix = keys.prepared(snapshot);
      const { kvs, revision } = await etcd.getPrefix(prefix);
      for (const kv of kvs) this.#saw(kv.key.slice(prefix.length), parseJson<Prepared>(kv.value));
      const sharing = keys.sharing(snapshot);
      for (const kv of (await etcd.getPrefix(sharing)).kvs)
        this.#sawSharing(kv.key.slice(sharing.length), kv.createRevision, parseJson<Sharing>(kv.value));
      // a seed that never answers because it is gone (its lease ended) is failed too
      for (const seed of this.#opts.seeds) {
        if (this.#answered.has(seed)) continue;
        if ((await etcd.get(keys.member(seed))) === null) this.#answered.add(seed);
      }
      return revision;
    } catch (err) {
      this.#opts.log.warn({ err: (err as Error).message }, 'cannot read the peers from etcd; waiting on');
      return null;
    }
  }

  #sawSharing(host: string, revision: number, record: Sharing | null): void {
    if (!record || record.snapshot !== this.#opts.snapshot || host === this.#opts.self || !validUrl(record.peer))
      return;
    this.#sharing.set(host, { url: record.peer, revision });
  }

  #saw(host: string, answer: Prepared | null): void {
    if (!answer || answer.snapshot !== this.#opts.snapshot || host === this.#opts.self) return;
    this.#answered.add(host);
    if (answer.ok && validUrl(answer.peer)) this.#peers.set(host, answer.peer as string);
    else this.#peers.delete(host);
    if (!answer.ok) this.#sharing.delete(host); // its pull failed: it shares nothing more
  }
}

/** An http(s) URL, as a peer's advertised address must be. */
function validUrl(url: unknown): boolean {
  if (typeof url !== 'string' || url.length > 2048) return false;
  try {
    const u = new URL(url);
    return u.protocol === 'http:' || u.protocol === 'https:';
  } catch {
    return false;
  }
}
