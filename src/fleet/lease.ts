import type { Etcd } from './etcd.js';

export interface LeaseEvents {
  /** A new lease is held (the first, or one after a loss): put what lives on it. */
  granted(lease: string): Promise<void>;
  /** etcd said the lease is gone: everything on it is gone too. */
  lost(reason: string): void;
  error(err: Error): void;
  /**
   * etcd granted or renewed the lease: it holds at least until `until` (ms
   * since the epoch), counted from before the request was sent, so never
   * later than etcd's own deadline.
   */
  renewed?(until: number): void;
}

/**
 * An etcd lease kept alive every third of its TTL. A lease is only ever
 * called lost when etcd says so; a keep-alive that fails to get through is
 * retried (a host that cannot reach etcd keeps serving: only a confirmed loss
 * counts). After a loss a new lease is granted and `granted` runs again.
 */
export class LeaseKeeper {
  readonly #etcd: Etcd;
  readonly #ttlSeconds: number;
  readonly #events: LeaseEvents;
  #lease: string | null = null;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(etcd: Etcd, ttlSeconds: number, events: LeaseEvents) {
    this.#etcd = etcd;
    this.#ttlSeconds = ttlSeconds;
    this.#events = events;
  }

  get lease(): string | null {
    return this.#lease;
  }

  start(): void {
    void this.#tick();
  }

  async #tick(): Promise<void> {
    if (this.#closed) return;
    const asked = Date.now();
    try {
      if (this.#lease === null) {
        // held only once what lives on it is in place; a lease left over by a failure expires alone
        const lease = await this.#etcd.grantLease(this.#ttlSeconds);
        await this.#events.granted(lease);
        this.#lease = lease;
      } else if (!(await this.#etcd.keepAlive(this.#lease))) {
        this.#lease = null;
        this.#events.lost('etcd says the lease expired');
        return this.#schedule(0);
      }
      if (!this.#closed) this.#events.renewed?.(asked + this.#ttlSeconds * 1000);
    } catch (err) {
      this.#events.error(err as Error);
      return this.#schedule(250);
    }
    this.#schedule((this.#ttlSeconds * 1000) / 3);
  }

  #schedule(ms: number): void {
    if (this.#closed) return;
    this.#timer = setTimeout(() => void this.#tick(), ms);
    this.#timer.unref();
  }

  /** Stop; `revoke` gives the lease back at once (its keys go now, not at expiry). */
  async close(revoke: boolean): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    if (revoke && this.#lease) await this.#etcd.revoke(this.#lease).catch(() => {});
  }
}
