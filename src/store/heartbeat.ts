import { isNothingThere } from '../core/nothing-there.js';
import { isIntegerAtLeast } from '../core/checks.js';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { readSmallFile } from './read-small-file.js';
import { ALL_SLOTS, type SlotMap, type SlotName } from './store-layout.js';

/**
 * What each web-server process reports in `state/servers/<id>.json`. The
 * agent's drain waits on these: a server has let go of a slot once it reports
 * an epoch at least the one published and zero requests in flight on the slot.
 */
export interface Heartbeat {
  readonly format: 1;
  readonly id: string;
  readonly host: string;
  readonly pid: number;
  /** Epoch this server serves new requests from; 0 before it has mounted any. */
  readonly epoch: number;
  readonly mounted: SlotName | null;
  /** Requests in flight per slot: a and b always, any other slot the server holds requests on. */
  readonly inflight: Readonly<SlotMap<number>>;
  /** When this was written (ISO 8601). */
  readonly at: string;
  /**
   * When this server began serving `epoch` (ISO 8601): the moment its new
   * requests went to the copy the epoch mounts. Absent before its first mount.
   */
  readonly switchedAt?: string;
  /** How often the server writes it, in milliseconds. */
  readonly interval: number;
  readonly kind: 'static' | 'proxy' | 'nginx';
  /**
   * Keeping releases: the requests served from each retained release since
   * this server started, keyed by the epoch that published the release
   * (`servedFrom`). Only releases the server still holds; absent, none.
   */
  readonly served?: Readonly<Record<string, ServedCounts>>;
}

/** Requests served from a retained release: named by a pin, or as an asset the mounted release lacks. */
export interface ServedCounts {
  pinned: number;
  fallback: number;
}

export const SERVER_ID_PATTERN = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;

export function heartbeatFile(serversDir: string, id: string): string {
  return join(serversDir, `${id}.json`);
}

function isHeartbeat(value: unknown): value is Heartbeat {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Record<string, unknown>;
  const inflight = v.inflight as Record<string, unknown> | undefined;
  return (
    v.format === 1 &&
    typeof v.id === 'string' &&
    isIntegerAtLeast(v.epoch, 0) &&
    typeof v.at === 'string' &&
    typeof inflight === 'object' &&
    inflight !== null &&
    isIntegerAtLeast(inflight.a, 0) &&
    isIntegerAtLeast(inflight.b, 0) &&
    ALL_SLOTS.every((s) => inflight[s] === undefined || isIntegerAtLeast(inflight[s], 0))
  );
}

/** A heartbeat is a few hundred bytes; anything much larger is not one. */
export const MAX_HEARTBEAT_BYTES = 64 * 1024;

/**
 * Every readable heartbeat. Anything else in the directory is skipped without
 * blocking: a file half-written by hand, a FIFO, a device, a huge file or a
 * link must never hang or wedge a swap, and a dead server's stale file is
 * judged by its age, not here.
 */
export async function readHeartbeats(serversDir: string): Promise<Heartbeat[]> {
  let names: string[];
  try {
    names = await readdir(serversDir);
  } catch (err) {
    if (isNothingThere(err)) return [];
    throw err;
  }
  const out: Heartbeat[] = [];
  await Promise.all(
    names
      .filter((n) => n.endsWith('.json') && !n.startsWith('.'))
      .map(async (name) => {
        try {
          const bytes = await readSmallFile(join(serversDir, name), MAX_HEARTBEAT_BYTES);
          const parsed: unknown = bytes && JSON.parse(bytes.toString('utf8'));
          if (isHeartbeat(parsed)) out.push(parsed);
        } catch {
          // gone, torn, half-written by hand, or not a heartbeat at all: skip
        }
      }),
  );
  return out.sort((x, y) => x.id.localeCompare(y.id));
}

/** A heartbeat is live while younger than `ttlMs`. */
export function isLive(hb: Heartbeat, ttlMs: number, now = Date.now()): boolean {
  return now - Date.parse(hb.at) <= ttlMs;
}

/**
 * What `hb` says it served from the release published at `epoch`. An
 * optional field read leniently: a malformed one counts nothing, and never
 * makes the heartbeat unread (the drain waits on the rest of it).
 */
export function servedFrom(hb: Heartbeat, epoch: number): ServedCounts {
  const got = (hb.served as Record<string, unknown> | undefined)?.[String(epoch)] as
    | Record<string, unknown>
    | undefined;
  const count = (n: unknown) => (isIntegerAtLeast(n, 0) ? n : 0);
  return { pinned: count(got?.pinned), fallback: count(got?.fallback) };
}

/**
 * A retained release's requests over `servers` (the live ones): in flight on
 * its copy `slot` now, and served from it pinned or by fallback (`servedFrom`
 * of the epoch that published it). What status and the metrics both show.
 */
export function retainedRequests(
  servers: readonly Heartbeat[],
  release: { slot: SlotName; epoch: number },
): ServedCounts & { inflight: number } {
  const out = { inflight: 0, pinned: 0, fallback: 0 };
  for (const hb of servers) {
    out.inflight += inflightOn(hb, release.slot);
    const served = servedFrom(hb, release.epoch);
    out.pinned += served.pinned;
    out.fallback += served.fallback;
  }
  return out;
}

/** Requests `hb` has in flight on `slot` (none reported: none). */
export function inflightOn(hb: Heartbeat, slot: SlotName): number {
  return hb.inflight[slot] ?? 0;
}
