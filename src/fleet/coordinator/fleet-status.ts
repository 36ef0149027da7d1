import type { SeedSlot } from '../../store/store-layout.js';
import type { FleetEpoch, MemberRecord, Prepared, SwapProposal } from '../fleet-keys.js';

/**
 * What the coordinator reports of its fleet (status, metrics): a type file of
 * its own, so the metrics that read it and the coordinator that fills it do
 * not import each other.
 */

/** One host as the coordinator sees it, for status. */
export interface MemberStatus extends MemberRecord {
  /** Epochs behind the fleet's committed one. */
  lag: number;
  acked: number | null;
  prepared: Prepared | null;
}

export interface FleetStatus {
  fleet: string;
  coordinator: { id: string; elected: boolean; holder: string | null };
  epoch: FleetEpoch | null;
  swap: SwapProposal | null;
  hosts: MemberStatus[];
  evicted: { host: string; epoch: number; at: string }[];
  /**
   * Hosts that were members (seen live by this coordinator, or named by the
   * committed epoch) and whose lease is gone: out of the fleet, and out of
   * rotation (their servers' /readyz says 503), until they register again.
   */
  gone: { host: string; lastSeen: string | null }[];
  pulls: Record<SeedSlot, number>;
  /** Bytes this coordinator sent hosts since it started: manifest answers, and files answers. */
  sent: { manifests: number; files: number };
}
