import { setTimeout as delay } from 'node:timers/promises';
import { DeadlineError, withDeadline } from '../core/deadline.js';
import { MirrorswapError } from '../core/errors.js';
import { type Heartbeat, isLive, readHeartbeats } from './heartbeat.js';

/**
 * How long a swap waits for web servers, for every agent that swaps (the sync
 * agent and a fleet host agent read their defaults here). The proxy's grace
 * for long-lived exchanges on an old slot stays under drainTimeoutMs, checked
 * by a test, so an open WebSocket never fails a swap.
 */
export const DRAIN_DEFAULTS = Object.freeze({
  /** Longest wait for servers to let go of a slot, before a copy and after a publish. */
  drainTimeoutMs: 30_000,
  /** A server whose heartbeat is older than this is dead; also the lease written into the epoch file. */
  serverTtlMs: 10_000,
});

export interface WaitForServersOptions {
  serversDir: string;
  /** A heartbeat older than this is a dead server and holds nothing up. */
  ttlMs: number;
  timeoutMs: number;
  /** True once a server no longer holds up the wait. */
  done: (hb: Heartbeat) => boolean;
  /** Why a server still holds it up, for the error. */
  describe: (hb: Heartbeat) => string;
  /** What is being waited for, for the error. */
  what: string;
  pollMs?: number;
  onDropped?: (hb: Heartbeat) => void;
}

/**
 * Wait until every live server satisfies `done`. Servers whose heartbeat goes
 * stale during the wait are dropped from it (and reported once); a wait that
 * outlasts the timeout fails naming each server still holding it up.
 */
export async function waitForServers(opts: WaitForServersOptions): Promise<{ waitedMs: number; dropped: string[] }> {
  const started = Date.now();
  const seenLive = new Set<string>();
  const dropped: string[] = [];
  let lastBlocking: Heartbeat[] = [];
  const describeAll = (hbs: Heartbeat[]) =>
    hbs.map((hb) => `server ${hb.id} (pid ${hb.pid} on ${hb.host}) ${opts.describe(hb)}`).join('; ');
  for (;;) {
    // Reading the heartbeats is bounded too: a hung mount must not hold the wait past its timeout.
    let heartbeats: Heartbeat[];
    try {
      heartbeats = await withDeadline(
        readHeartbeats(opts.serversDir),
        Math.max(1, started + opts.timeoutMs - Date.now()),
        `reading the heartbeats in ${opts.serversDir}`,
      );
    } catch (err) {
      if (!(err instanceof DeadlineError)) throw err;
      // name who held it up when last seen; only a read that never came back is named itself
      const why = lastBlocking.length > 0 ? describeAll(lastBlocking) : err.message;
      throw new MirrorswapError(
        'DRAIN_TIMEOUT',
        `gave up after ${Math.round(opts.timeoutMs / 1000)} s waiting for ${opts.what}: ${why}`,
      );
    }
    const now = Date.now();
    const blocking: Heartbeat[] = [];
    for (const hb of heartbeats) {
      if (!isLive(hb, opts.ttlMs, now)) {
        if (seenLive.delete(hb.id)) {
          dropped.push(hb.id);
          opts.onDropped?.(hb);
        }
        continue;
      }
      if (!opts.done(hb)) {
        seenLive.add(hb.id);
        blocking.push(hb);
      }
    }
    if (blocking.length === 0) return { waitedMs: now - started, dropped };
    lastBlocking = blocking;
    if (now - started >= opts.timeoutMs) {
      throw new MirrorswapError(
        'DRAIN_TIMEOUT',
        `gave up after ${Math.round(opts.timeoutMs / 1000)} s waiting for ${opts.what}: ${describeAll(blocking)}`,
      );
    }
    await delay(opts.pollMs ?? 20);
  }
}
