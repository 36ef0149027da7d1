import { join } from 'node:path';
import { writeFileAtomic } from './atomic-write.js';
import { isIntegerAtLeast } from '../core/checks.js';
import { readSmallFile } from './read-small-file.js';

/**
 * A fleet host's membership, as its host agent last knew it, for the web
 * servers beside it: `state/fleet-member.json`. The agent renews it each time
 * etcd renews its lease, stamping how long the lease surely holds (from the
 * moment the renewal was asked); a server judges it against its own clock.
 * So a host agent that stops (SIGSTOP, a paused VM, kill -9) needs to write
 * nothing for its servers to see it gone: the stamp simply runs out, no later
 * than etcd ends the lease and the fleet stops counting the host.
 */
export interface MembershipStamp {
  readonly format: 1;
  readonly fleet: string;
  readonly host: string;
  /** The host agent's pid, for whoever reads the file by hand. */
  readonly pid: number;
  /** Registered in the fleet on a lease that holds (false: left, lost its lease, or stood aside). */
  readonly member: boolean;
  /** When the lease may end, unless renewed (ISO 8601); null when not a member. */
  readonly until: string | null;
  /**
   * The fleet's committed epoch this host's servers must serve to be ready:
   * moved once they switched to it, or as soon as the host must catch up with
   * it (evicted, or back from a gap). Null before the host agent knows one.
   */
  readonly fleetEpoch: number | null;
  /** Why this host is not a member, when it is not. */
  readonly reason: string | null;
  readonly at: string;
}

export const MEMBERSHIP_FILE_NAME = 'fleet-member.json';
const MAX_STAMP_BYTES = 16 * 1024;

export function membershipFile(stateDir: string): string {
  return join(stateDir, MEMBERSHIP_FILE_NAME);
}

function isStamp(v: unknown): v is MembershipStamp {
  if (typeof v !== 'object' || v === null) return false;
  const s = v as Record<string, unknown>;
  return (
    s.format === 1 &&
    typeof s.host === 'string' &&
    typeof s.member === 'boolean' &&
    (s.until === null || (typeof s.until === 'string' && !Number.isNaN(Date.parse(s.until)))) &&
    (s.fleetEpoch === null || isIntegerAtLeast(s.fleetEpoch, 0))
  );
}

/**
 * The stamp, or null when there is none (not a fleet host). Never blocks on
 * what stands in its place (see readSmallFile); anything unreadable or not a
 * stamp is reported as a stamp saying so, which no server takes as ready.
 */
export async function readMembership(file: string): Promise<MembershipStamp | null> {
  let text: string | undefined;
  try {
    text = (await readSmallFile(file, MAX_STAMP_BYTES))?.toString('utf8');
  } catch (err) {
    return unreadable(`${file} cannot be read: ${(err as Error).message}`);
  }
  if (text === undefined) return null;
  try {
    const parsed: unknown = JSON.parse(text);
    if (isStamp(parsed)) return parsed;
  } catch {}
  return unreadable(`${file} is not a fleet membership stamp`);
}

function unreadable(reason: string): MembershipStamp {
  return {
    format: 1,
    fleet: '',
    host: '',
    pid: 0,
    member: false,
    until: null,
    fleetEpoch: null,
    reason,
    at: new Date(0).toISOString(),
  };
}

/** Replace the stamp. Not fsynced: after a crash a lost stamp means "not a member", which is true. */
export async function writeMembership(stateDir: string, stamp: MembershipStamp): Promise<void> {
  await writeFileAtomic(membershipFile(stateDir), `${JSON.stringify(stamp)}\n`, { durable: false });
}

export interface Readiness {
  ready: boolean;
  /** Why not, in a sentence; null when ready. */
  reason: string | null;
}

/**
 * Whether a server serving `epoch` on a host with this stamp should take
 * traffic: its host is a fleet member whose lease holds now, and it serves
 * the fleet's committed epoch (an evicted host, catching up, does not).
 */
export function judgeMembership(stamp: MembershipStamp, epoch: number, now = Date.now()): Readiness {
  const host = stamp.host ? `fleet host ${stamp.host}` : 'this fleet host';
  if (!stamp.member) return { ready: false, reason: `${host} is not a member of its fleet: ${stamp.reason ?? 'left'}` };
  const until = stamp.until === null ? Number.NaN : Date.parse(stamp.until);
  if (!(until > now)) {
    return {
      ready: false,
      reason: `${host}'s fleet membership lapsed at ${stamp.until}: its host agent has not renewed its lease (stopped, or cut off from etcd)`,
    };
  }
  if (stamp.fleetEpoch !== null && epoch < stamp.fleetEpoch) {
    return {
      ready: false,
      reason: `${host} serves epoch ${epoch}, behind the fleet's committed epoch ${stamp.fleetEpoch} (catching up)`,
    };
  }
  return { ready: true, reason: null };
}
