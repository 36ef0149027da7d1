import { type FSWatcher, watch as fsWatch, lstatSync } from 'node:fs';
import { lstat, statfs } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { type EpochRecord, readEpochFile, readEpochFileSync } from '../../src/store/epoch-file.js';
import { MirrorswapError } from '../../src/core/errors.js';
import { CoalescedRun } from '../../src/core/coalesced-run.js';
import type { WatchMode } from '../options.js';

/**
 * statfs magic numbers of file systems shared over a network, where inotify
 * sees only this host's own changes: NFS, SMB/CIFS, FUSE, 9p, Ceph, Lustre,
 * GFS2, OCFS2. `watch: "auto"` polls on these.
 */
const NETWORK_FS_TYPES = new Set([
  0x6969, 0xff534d42, 0xfe534d42, 0x517b, 0x65735546, 0x01021997, 0x00c36400, 0x0bd00bd0, 0x01161970, 0x7461636f,
]);

/**
 * statfs magic numbers of local disk file systems, where a stat and a read of
 * a small file take microseconds: the epoch file is read in the server's own
 * thread only on these (ext2/3/4, XFS, Btrfs, tmpfs, overlayfs, ZFS, F2FS,
 * ramfs, bcachefs, JFS, ReiserFS). Anything else, known or not, goes through
 * libuv's pool, where a hung server cannot stall the event loop.
 */
const LOCAL_FS_TYPES = new Set([
  0xef53, 0x58465342, 0x9123683e, 0x01021994, 0x794c7630, 0x2fc12fc1, 0xf2f52010, 0x858458f6, 0xca451a4e, 0x3153464a,
  0x52654973,
]);

/** Native watching still re-checks this often, in case an event was lost. */
const NATIVE_BACKSTOP_MS = 1000;

export interface EpochWatcherOptions {
  epochFile: string;
  mode: WatchMode;
  pollInterval: number;
  /** Called with each record whose epoch is higher than the last one accepted; a throw rejects it (retried on the next change). */
  onAdvance: (record: EpochRecord) => Promise<void>;
  onError: (err: Error) => void;
}

/**
 * Follows the epoch file: native events (on the directory, since the file is
 * replaced by rename) with a slow backstop poll, or polling alone. It only ever
 * moves forward; a missing, partial or corrupt file keeps the last good epoch.
 */
export class EpochWatcher {
  readonly #opts: EpochWatcherOptions;
  #current: EpochRecord | null = null;
  #signature = '';
  readonly #checks = new CoalescedRun(
    () => this.#checkOnce(),
    () => this.#closed,
  );
  #closed = false;
  #fsWatcher: FSWatcher | undefined;
  #timer: NodeJS.Timeout | undefined;
  #mode: 'native' | 'poll' = 'poll';
  /** The file is on a local disk (statfs names one of LOCAL_FS_TYPES): read in this thread, not through libuv's pool. */
  #local = false;

  constructor(opts: EpochWatcherOptions) {
    this.#opts = opts;
  }

  get current(): EpochRecord | null {
    return this.#current;
  }

  /** The mode in use once started: "native" or "poll". */
  get mode(): 'native' | 'poll' {
    return this.#mode;
  }

  async start(): Promise<void> {
    this.#mode = await this.#pickMode();
    if (this.#closed) return;
    if (this.#mode === 'native') {
      const name = basename(this.#opts.epochFile);
      try {
        this.#fsWatcher = fsWatch(dirname(this.#opts.epochFile), { persistent: false }, (_event, file) => {
          if (file === null || file === name) this.check();
        });
        this.#fsWatcher.on('error', (err) => {
          this.#opts.onError(
            new MirrorswapError(
              'EPOCH_WATCH',
              `watching ${this.#opts.epochFile} failed, polling instead: ${err.message}`,
            ),
          );
          this.#fsWatcher?.close();
          this.#fsWatcher = undefined;
          this.#startTimer(this.#opts.pollInterval);
        });
      } catch (err) {
        if (this.#opts.mode === 'native') throw err;
        this.#mode = 'poll';
      }
    }
    this.#startTimer(
      this.#mode === 'native' ? Math.max(NATIVE_BACKSTOP_MS, this.#opts.pollInterval) : this.#opts.pollInterval,
    );
    await this.check();
  }

  async #pickMode(): Promise<'native' | 'poll'> {
    let type: number | null = null;
    try {
      type = (await statfs(dirname(this.#opts.epochFile))).type;
    } catch {}
    this.#local = type !== null && LOCAL_FS_TYPES.has(type);
    if (this.#opts.mode !== 'auto') return this.#opts.mode;
    return type !== null && NETWORK_FS_TYPES.has(type) ? 'poll' : 'native';
  }

  #startTimer(interval: number): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = setInterval(() => this.check(), interval);
    this.#timer.unref();
  }

  /** Re-read the file if it changed; coalesces calls made while a read runs. */
  check(): Promise<void> {
    return this.#checks.run();
  }

  async #checkOnce(): Promise<void> {
    const file = this.#opts.epochFile;
    // On a local disk, a stat and a read of a small file take microseconds in this thread; through the
    // pool, each call waits for a thread of it to be scheduled, which at a switch, with every process
    // of the machine woken at once, cost milliseconds per call. A network file system may block: the pool.
    const local = this.#local;
    let signature: string;
    try {
      // lstat: the read refuses a link anyway, and a link must not make the stat wait on where it points;
      // the change time too: a mode or owner put right (a read refused before) is a change to read again
      const st = local ? lstatSync(file, { bigint: true }) : await lstat(file, { bigint: true });
      signature = `${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
    } catch (err) {
      signature = (err as NodeJS.ErrnoException).code ?? 'ERR';
    }
    if (signature === this.#signature) return;
    this.#signature = signature;
    try {
      const record = local ? readEpochFileSync(file) : await readEpochFile(file);
      if (record === null) {
        if (this.#current !== null) {
          throw new MirrorswapError(
            'EPOCH_MISSING',
            `epoch file ${file} disappeared; still serving epoch ${this.#current.epoch}`,
          );
        }
        return;
      }
      const current = this.#current;
      if (current !== null && record.epoch < current.epoch) {
        throw new MirrorswapError(
          'EPOCH_BACKWARDS',
          `epoch file ${file} went back from epoch ${current.epoch} to ${record.epoch}; ignored (epochs only move forward)`,
        );
      }
      if (current !== null && record.epoch === current.epoch) return;
      try {
        await this.#opts.onAdvance(record);
      } catch (err) {
        // Forget the signature so the next tick retries, e.g. once a missing slot root appears.
        this.#signature = '';
        throw err;
      }
      this.#current = record;
    } catch (err) {
      this.#opts.onError(err as Error);
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    this.#fsWatcher?.close();
    this.#fsWatcher = undefined;
    await this.#checks.settled();
  }
}
