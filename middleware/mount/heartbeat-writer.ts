import { mkdir, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { writeFileAtomic } from '../../src/store/atomic-write.js';
import { type Heartbeat, heartbeatFile } from '../../src/store/heartbeat.js';
import { CoalescedRun } from '../../src/core/coalesced-run.js';

/** The part of a heartbeat that changes: what the server serves and holds. */
export type HeartbeatState = Pick<Heartbeat, 'epoch' | 'mounted' | 'inflight' | 'served' | 'switchedAt'>;

/**
 * Writes one server's heartbeat file on an interval and at once when asked.
 * Writes never overlap: a request made during a write is folded into one
 * more write after it, so the file always ends up with the latest state.
 */
export class HeartbeatWriter {
  readonly #file: string;
  readonly #serversDir: string;
  readonly #snapshot: () => HeartbeatState;
  readonly #base: Pick<Heartbeat, 'id' | 'host' | 'pid' | 'interval' | 'kind'>;
  readonly #onError: (err: Error) => void;
  readonly #onWritten: (at: number) => void;
  readonly #writes = new CoalescedRun(
    () => this.#writeOnce(),
    () => this.#closed,
  );
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(opts: {
    serversDir: string;
    id: string;
    interval: number;
    kind: Heartbeat['kind'];
    snapshot: () => HeartbeatState;
    onError: (err: Error) => void;
    /** A heartbeat stamped `at` (ms since the epoch) is on disk: the server's lease runs from there. */
    onWritten?: (at: number) => void;
  }) {
    this.#serversDir = opts.serversDir;
    this.#file = heartbeatFile(opts.serversDir, opts.id);
    this.#snapshot = opts.snapshot;
    this.#onError = opts.onError;
    this.#onWritten = opts.onWritten ?? (() => {});
    this.#base = { id: opts.id, host: hostname(), pid: process.pid, interval: opts.interval, kind: opts.kind };
  }

  get file(): string {
    return this.#file;
  }

  async start(): Promise<void> {
    await mkdir(this.#serversDir, { recursive: true });
    await this.writeNow();
    if (this.#closed) return;
    this.#timer = setInterval(() => void this.writeNow(), this.#base.interval);
    this.#timer.unref();
  }

  /** Write the current state as soon as possible; resolves once it is on disk. */
  writeNow(): Promise<void> {
    return this.#writes.run();
  }

  async #writeOnce(): Promise<void> {
    const at = Date.now();
    const hb: Heartbeat = { format: 1, ...this.#base, ...this.#snapshot(), at: new Date(at).toISOString() };
    try {
      await writeFileAtomic(this.#file, `${JSON.stringify(hb)}\n`, { durable: false });
      this.#onWritten(at);
    } catch (err) {
      this.#onError(err as Error);
    }
  }

  /**
   * Stop writing and remove the file: a server that shut down holds no slot.
   * With `keepFile`, the last heartbeat stays to age out: what it reports
   * still holds (the nginx companion stops while nginx serves on).
   */
  async close({ keepFile = false }: { keepFile?: boolean } = {}): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer) clearInterval(this.#timer);
    await this.#writes.settled();
    if (!keepFile) await unlink(this.#file).catch(() => {});
  }
}
