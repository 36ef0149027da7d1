import { type Stats, closeSync, constants, fstatSync } from 'node:fs';
import { lstat, unlink } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { brotliCompress, gzip } from 'node:zlib';
import type { Logger } from '../../core/logger.js';
import type { PrecompressStatus } from '../agent-types.js';
import { contentHash } from '../../store/content-index.js';
import { type VariantSettings, compressionOptions, isCompressible } from '../../tree/compressible.js';
import { openCheckedSync, readOpenedSync } from '../../tree/open-checked.js';
import { treeMode } from '../../tree/tree-mode.js';
import {
  type CacheEntry,
  type CacheView,
  cacheEntryName,
  ensureCache,
  pruneCache,
  putCacheEntry,
} from '../../tree/variant-cache.js';

const brotliAsync = promisify(brotliCompress);
const gzipAsync = promisify(gzip);

/** Paths waiting at most: past it, a change is left to the sync's own compression. */
export const PRECOMPRESS_QUEUE_MAX = 10_000;
/**
 * Files above this are left to the sync: this reads and hashes a file whole
 * on the agent's main thread (2 MiB: about 5 ms), which the derive does in
 * the walk threads.
 */
export const PRECOMPRESS_MAX_BYTES = 2 * 1024 * 1024;
/** Files compressed at once, each coding on libuv's thread pool. */
const CONCURRENCY = 2;
/**
 * Entries held at most (about 100 bytes each in memory, and sent to the
 * walk threads with each derive): past it, changes are compressed at sync.
 */
export const CACHE_MAX_ENTRIES = 20_000;
/** Bytes of entries held at most (the cache shares the state directory's disk with the journal). */
export const CACHE_MAX_BYTES = 256 * 1024 * 1024;
/** An entry no sync took within this is removed (its file changed again, or no sync came). */
export const CACHE_MAX_AGE_MS = 60 * 60 * 1000;

/**
 * Compression as files land in master, not at sync: the write API and the
 * watcher name each changed path, and their variants are made into the
 * variant cache (tree/variant-cache.ts) in the background, so the sync that
 * publishes them links them in: a journal sync of a few changed files then
 * costs about what it does without variants.
 *
 * Nothing here is needed for a correct copy: an entry is found by the hash of
 * the bytes it was made from, so one made from a file half-written, or
 * changed again since, matches nothing and is pruned; a path dropped (a full
 * queue, a sync starting) is compressed by the sync as before. Master is
 * only read, through descriptors opened without following a link. While a
 * sync copies, nothing is compressed here: the copy has the cores.
 */
export class Precompress {
  readonly #master: string;
  readonly #cache: string;
  readonly #settings: VariantSettings;
  readonly #log: Logger;
  readonly #queue = new Set<string>();
  #running = 0;
  #paused = 0;
  #idle: (() => void)[] = [];
  #ready: Promise<void>;
  /** The entries this agent made, by name: what a sync's derive may take (variant-cache.ts `CacheView`). */
  readonly #entries = new Map<string, CacheEntry>();
  /** Entries being written now (a prune listing the cache may not see them yet). */
  readonly #writing = new Set<string>();
  /** The hash each path was last compressed from: its older entries are superseded (`#supersede`). */
  readonly #latest = new Map<string, string>();
  /** The copies (slots) that took each entry: two of them, and it has done its work, linked or not. */
  readonly #takenBy = new Map<string, Set<string>>();
  /** Prunes under way, awaited by close. */
  readonly #prunes = new Set<Promise<void>>();
  #closed = false;
  /** Bytes of the entries known. */
  #bytes = 0;
  /** What was made, for status. */
  readonly #stats = { files: 0, variants: 0, dropped: 0, failed: 0 };

  readonly #maxBytes: number;

  constructor(opts: { master: string; cache: string; settings: VariantSettings; log: Logger; maxBytes?: number }) {
    this.#maxBytes = opts.maxBytes ?? CACHE_MAX_BYTES;
    this.#master = opts.master;
    this.#cache = opts.cache;
    this.#settings = opts.settings;
    this.#log = opts.log;
    this.#ready = ensureCache(this.#cache)
      .then(() => this.prune())
      .catch((err: Error) => this.#log.warn({ err: err.message }, 'the variant cache cannot be made; syncs compress'));
  }

  status(): PrecompressStatus {
    return { ...this.#stats, entries: this.#entries.size, bytes: this.#bytes, queued: this.#queue.size };
  }

  /** The cache as a sync's derive sees it, or null when it holds nothing. */
  get cacheForSync(): CacheView | null {
    return this.#entries.size > 0 ? { dir: this.#cache, entries: Object.fromEntries(this.#entries) } : null;
  }

  /** Compress the variants of these paths of master, in the background. */
  add(paths: Iterable<string>): void {
    for (const rel of paths) {
      // the name alone rules most paths out; the size is known once the file is open
      if (!isCompressible(basename(rel), Math.max(1, this.#settings.minSize), this.#settings)) continue;
      if (this.#queue.size >= PRECOMPRESS_QUEUE_MAX || this.#full()) {
        this.#stats.dropped++;
        continue;
      }
      this.#queue.delete(rel); // the latest change goes last
      this.#queue.add(rel);
    }
    this.#pump();
  }

  /**
   * Stop compressing for a sync: what waits is dropped (the sync compresses
   * it, if it is still changed), and what runs is finished first, so the
   * sync finds its entries. `resume` when the copy is done.
   */
  async pause(): Promise<void> {
    this.#paused++;
    this.#stats.dropped += this.#queue.size;
    this.#queue.clear();
    if (this.#running > 0) await new Promise<void>((resolve) => this.#idle.push(resolve));
  }

  resume(): void {
    this.#paused = Math.max(0, this.#paused - 1);
    this.#pump();
  }

  /** A sync's copy into `slot` took these entries (by link or by copy: tree/derive-variants.ts `fromCache`). */
  taken(slot: string, names: readonly string[]): void {
    for (const name of names) {
      if (!this.#entries.has(name)) continue;
      const slots = this.#takenBy.get(name) ?? new Set<string>();
      slots.add(slot);
      this.#takenBy.set(name, slots);
    }
  }

  /** Stop for good: what runs is finished, and so is any prune under way (none then runs after close). */
  async close(): Promise<void> {
    this.#closed = true;
    await this.pause();
    await this.#ready;
    await Promise.all([...this.#prunes].map((p) => p.catch(() => {})));
  }

  /** Remove entries the copies took or no sync took in time (tree/variant-cache.ts `pruneCache`). */
  prune(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    const run = this.#prune();
    this.#prunes.add(run);
    void run.catch(() => {}).finally(() => this.#prunes.delete(run));
    return run;
  }

  async #prune(): Promise<void> {
    // only what was known as the prune began: an entry made while it runs (after its listing) stays known
    const before = [...this.#entries.keys()];
    const left = await pruneCache(
      this.#cache,
      CACHE_MAX_AGE_MS,
      (name) => this.#entries.has(name),
      Date.now(),
      (name) => (this.#takenBy.get(name)?.size ?? 0) >= 2,
    );
    for (const name of before) {
      if (!left.has(name) && !this.#writing.has(name)) {
        this.#forget(name);
        this.#takenBy.delete(name);
      }
    }
    for (const [rel, sha256] of this.#latest) {
      if (!this.#settings.encodings.some((e) => this.#entries.has(cacheEntryName(sha256, e, this.#settings))))
        this.#latest.delete(rel);
    }
  }

  /**
   * The entries of the bytes `rel` held before `sha256`, when no copy took them (one link) and no
   * other path holds those bytes: a file rewritten before any sync leaves only its latest entries.
   * Runs only while no sync copies (paused then): no derive is taking them.
   */
  async #supersede(rel: string, sha256: string): Promise<void> {
    const prev = this.#latest.get(rel);
    this.#latest.set(rel, sha256);
    if (prev === undefined || prev === sha256) return;
    for (const other of this.#latest.values()) if (other === prev) return;
    for (const encoding of this.#settings.encodings) {
      const name = cacheEntryName(prev, encoding, this.#settings);
      if (!this.#entries.has(name)) continue;
      const st = await lstat(join(this.#cache, name)).catch(() => null);
      if (st && st.nlink > 1) continue; // a copy holds it
      await unlink(join(this.#cache, name)).catch(() => {});
      this.#forget(name);
      this.#takenBy.delete(name);
    }
  }

  #pump(): void {
    while (this.#paused === 0 && this.#running < CONCURRENCY && this.#queue.size > 0) {
      const rel = this.#queue.values().next().value as string;
      this.#queue.delete(rel);
      this.#running++;
      void this.#ready
        .then(() => this.#one(rel))
        .catch((err: Error) => {
          // a full disk, say: each one costs the sync a compression, never a wrong variant; said once
          if (this.#stats.failed++ === 0) {
            this.#log.warn(
              { path: rel, err: err.message },
              'could not precompress a file; syncs compress what this misses',
            );
          }
        })
        .finally(() => {
          this.#running--;
          if (this.#running === 0) for (const resolve of this.#idle.splice(0)) resolve();
          this.#pump();
        });
    }
  }

  /** Whether the cache holds what it may: past it, changes are compressed by the sync. */
  #full(): boolean {
    return this.#entries.size >= CACHE_MAX_ENTRIES || this.#bytes >= this.#maxBytes;
  }

  /**
   * Know an entry, its bytes counted against the budget; false when it is
   * known already (another path of the same bytes, compressed side by side,
   * made or is writing it): counted once, written once.
   */
  #remember(name: string, entry: CacheEntry): boolean {
    if (this.#entries.has(name)) return false;
    this.#entries.set(name, entry);
    this.#bytes += entry.size;
    return true;
  }

  /** Drop an entry from what is known (its file is gone, or is being removed). */
  #forget(name: string): void {
    const entry = this.#entries.get(name);
    if (!entry) return;
    this.#bytes -= entry.size;
    this.#entries.delete(name);
  }

  async #one(rel: string): Promise<void> {
    if (this.#full()) {
      this.#stats.dropped++;
      return;
    }
    const read = readWhole(this.#master, rel);
    if (!read || !isCompressible(basename(rel), read.bytes.length, this.#settings)) return;
    const sha256 = contentHash(read.bytes);
    const like = { mode: treeMode(read.st.mode, false), atimeMs: read.st.atimeMs, mtimeMs: read.st.mtimeMs };
    let made = 0;
    for (const encoding of this.#settings.encodings) {
      const name = cacheEntryName(sha256, encoding, this.#settings);
      if (this.#entries.has(name)) continue;
      const options = compressionOptions(encoding, read.bytes.length, this.#settings);
      const out = encoding === 'br' ? await brotliAsync(read.bytes, options) : await gzipAsync(read.bytes, options);
      if (out.length > read.bytes.length * (1 - this.#settings.minSavingPercent / 100)) continue;
      // known before it is there: a prune running meanwhile must not take it for an earlier agent's
      if (!this.#remember(name, { size: out.length, sha256: contentHash(out), mtimeMs: Math.floor(like.mtimeMs) }))
        continue;
      this.#writing.add(name);
      try {
        await putCacheEntry(this.#cache, name, out, like);
      } catch (err) {
        this.#forget(name);
        throw err;
      } finally {
        this.#writing.delete(name);
      }
      made++;
    }
    // only a path that has (or had) entries is remembered: the map never outgrows the cache
    const has = this.#settings.encodings.some((e) => this.#entries.has(cacheEntryName(sha256, e, this.#settings)));
    if (has || this.#latest.has(rel)) await this.#supersede(rel, sha256);
    this.#stats.variants += made;
    if (made > 0) this.#stats.files++;
  }
}

/**
 * The bytes of master's regular file `rel`, with its status, read through a
 * descriptor opened without following a link (none of its parents one);
 * null when no such file of at most PRECOMPRESS_MAX_BYTES is there now.
 */
function readWhole(master: string, rel: string): { bytes: Buffer; st: Stats } | null {
  let fd: number | null;
  try {
    fd = openCheckedSync(master, rel, constants.O_RDONLY);
  } catch {
    return null; // unreadable to the agent: the sync reports it
  }
  if (fd === null) return null;
  try {
    const st = fstatSync(fd);
    if (!st.isFile() || st.size > PRECOMPRESS_MAX_BYTES) return null;
    return { bytes: readOpenedSync(fd, st.size), st };
  } finally {
    closeSync(fd);
  }
}
