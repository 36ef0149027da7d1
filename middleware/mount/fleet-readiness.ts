import { dirname } from 'node:path';
import {
  type MembershipStamp,
  type Readiness,
  judgeMembership,
  membershipFile,
  readMembership,
} from '../../src/store/membership.js';

/** What a server says about its readiness: the stamp's part, when its host is a fleet host. */
export interface FleetMembershipView {
  host: string;
  member: boolean;
  until: string | null;
  fleetEpoch: number | null;
}

/**
 * Follows the fleet membership stamp a host agent keeps beside the epoch file
 * (src/store/membership.ts), so a web server can say whether it should take
 * traffic. The file is read in the background, one read at a time, and the
 * answer is computed from the last stamp read and the clock: asking never
 * touches the disk, so it never waits, and a read that hangs (a hung mount)
 * only leaves an old stamp that runs out by itself.
 */
export class FleetReadiness {
  readonly #file: string;
  readonly #interval: number;
  #stamp: MembershipStamp | null = null;
  /** A stamp was seen once: from then on its absence is not "a single host" but "membership unknown". */
  #seen = false;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(epochFile: string, interval: number) {
    this.#file = membershipFile(dirname(epochFile));
    this.#interval = interval;
  }

  /** Read once, then keep reading every interval. */
  async start(): Promise<void> {
    await this.#read();
    this.#schedule();
  }

  #schedule(): void {
    if (this.#closed) return;
    this.#timer = setTimeout(async () => {
      await this.#read();
      this.#schedule();
    }, this.#interval);
    this.#timer.unref();
  }

  async #read(): Promise<void> {
    const stamp = await readMembership(this.#file);
    if (stamp) this.#seen = true;
    this.#stamp = stamp;
  }

  /** The stamp's part of what /readyz says; null on a host that is not part of a fleet. */
  view(): FleetMembershipView | null {
    const s = this.#stamp;
    if (!s) return this.#seen ? { host: '', member: false, until: null, fleetEpoch: null } : null;
    return { host: s.host, member: s.member, until: s.until, fleetEpoch: s.fleetEpoch };
  }

  /** Whether a server serving `epoch` should take traffic, as far as the fleet is concerned. */
  judge(epoch: number, now = Date.now()): Readiness {
    const s = this.#stamp;
    if (!s) {
      return this.#seen
        ? { ready: false, reason: `the fleet membership stamp ${this.#file} is gone: membership unknown` }
        : { ready: true, reason: null };
    }
    return judgeMembership(s, epoch, now);
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
  }
}
