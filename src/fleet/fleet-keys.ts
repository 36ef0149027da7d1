import type { SeedSlot, SlotMap, SlotName } from '../store/store-layout.js';

/** A fleet's name: it becomes part of etcd keys. */
export const FLEET_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** The keys of one fleet, under `/mirrorswap/<fleet>/` (the contract: docs/FLEET.md). */
export function fleetKeys(fleet: string) {
  const root = `/mirrorswap/${fleet}/`;
  return {
    root,
    coordinator: `${root}coordinator`,
    swap: `${root}swap`,
    epoch: `${root}epoch`,
    members: `${root}members/`,
    member: (host: string) => `${root}members/${host}`,
    /** Answers to one proposal, keyed by its snapshot: a late answer to another proposal cannot pass for one. */
    prepared: (snapshot: string) => `${root}prepared/${snapshot}/`,
    preparedBy: (snapshot: string, host: string) => `${root}prepared/${snapshot}/${host}`,
    /** Hosts pulling a proposal's snapshot that serve its files as they place them, keyed by its snapshot. */
    sharing: (snapshot: string) => `${root}sharing/${snapshot}/`,
    sharingBy: (snapshot: string, host: string) => `${root}sharing/${snapshot}/${host}`,
    acks: `${root}acks/`,
    ack: (host: string) => `${root}acks/${host}`,
  };
}

export type FleetKeys = ReturnType<typeof fleetKeys>;

/** `coordinator`: the elected coordinator, on its lease. */
export interface CoordinatorRecord {
  id: string;
  url: string;
  since: string;
}

/** `swap`: a proposal, until it is committed or aborted. */
export interface SwapProposal {
  epoch: number;
  snapshot: string;
  /** Where hosts pull it from. */
  url: string;
  /** Hosts that must prepare (the live members when it was proposed). */
  members: string[];
  /**
   * Members that pull the snapshot's files from the coordinator; every other
   * member pulls them from members that prepared it (peers), the coordinator
   * its fallback. Absent: every member pulls from the coordinator.
   */
  seeds?: string[];
  /** How long the coordinator waits for every member to prepare: a member waits for peers a quarter of it at most. */
  prepareTimeoutMs?: number;
  proposedAt: string;
}

/** `epoch`: what every host must serve; written only by the commit transaction. */
export interface FleetEpoch {
  epoch: number;
  snapshot: string;
  url: string;
  /** The coordinator's slot holding it, and that slot's journal position: how a restarted coordinator knows it. */
  coordinatorSlot: SeedSlot;
  coordinatorSeq: number | null;
  /** Hosts that prepared it; others follow it by catching up. */
  members: string[];
  committedAt: string;
  /** The release id given at sync, if one was: every host publishes it with the epoch. */
  release?: string;
}

/** `prepared/<snapshot>/<host>`: a host's answer to a proposal, on its lease. */
export type Prepared =
  | {
      ok: true;
      slot: SlotName;
      snapshot: string;
      /** Where peers pull the snapshot's files from this host, when it serves them. */
      peer?: string;
    }
  | { ok: false; snapshot: string; error: string };

/**
 * `sharing/<snapshot>/<host>`: the host pulls the snapshot (it has a source
 * for its files) and serves each file once placed, at `peer`; on its lease.
 * Its create revision orders the hosts: a host pulls from a sharing host
 * only if that one said so first, so no two hosts wait on each other.
 */
export interface Sharing {
  snapshot: string;
  peer: string;
}

/** `members/<host>`: a live host, on its lease. */
export interface MemberRecord {
  host: string;
  /** Its own status endpoint, if it listens. */
  url: string | null;
  /** Where peers pull files of the snapshots its slots hold (`--advertise`), when it serves them. */
  peer?: string | null;
  epoch: number;
  mounted: SlotName | null;
  /** What each of its copies holds: a and b, and c… on a host keeping releases. */
  slots: SlotMap<string | null>;
  /** Serving the fleet's committed epoch. */
  ready: boolean;
  lastError: string | null;
  at: string;
}

/** `acks/<host>`: the host has switched to `epoch` and drained the old copy. */
export interface AckRecord {
  epoch: number;
  at: string;
}

export function parseJson<T>(text: string | undefined): T | null {
  if (!text) return null;
  try {
    return JSON.parse(text) as T;
  } catch {
    return null;
  }
}
