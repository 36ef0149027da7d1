import { type Stats, closeSync, constants, fstatSync, readSync } from 'node:fs';
import { basename } from 'node:path';
import { promisify } from 'node:util';
import { brotliCompress, gzip } from 'node:zlib';
import type { Logger } from '../../core/logger.js';
import type { PrecompressStatus } from '../agent-types.js';
import { contentHash } from '../../store/content-index.js';
import { type VariantSettings, compressionOptions, isCompressible } from '../../tree/compressible.js';
import { openCheckedSync } from '../../tree/open-checked.js';
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
  /** What was made, for status. */
  readonly #stats = { files: 0, variants: 0, dropped: 0, failed: 0 };

  constructor(opts: { master: string; cache: string; settings: VariantSettings; log: Logger }) {
    this.#master = opts.master;
    this.#cache = opts.cache;
    this.#settings = opts.settings;
    this.#log = opts.log;
    this.#ready = ensureCache(this.#cache)
      .then(() => this.prune())
      .catch((err: Error) => this.#log.warn({ err: err.message }, 'the variant cache cannot be made; syncs compress'));
  }

  status(): PrecompressStatus {
    return { ...this.#stats, entries: this.#entries.size, queued: this.#queue.size };
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
      if (this.#queue.size >= PRECOMPRESS_QUEUE_MAX || this.#entries.size >= CACHE_MAX_ENTRIES) {
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

  /** Remove entries the copies took or no sync took in time (tree/variant-cache.ts `pruneCache`). */
  async prune(): Promise<void> {
    const left = await pruneCache(this.#cache, CACHE_MAX_AGE_MS, (name) => this.#entries.has(name));
    for (const name of this.#entries.keys()) if (!left.has(name) && !this.#writing.has(name)) this.#entries.delete(name);
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

  async #one(rel: string): Promise<void> {
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
      this.#entries.set(name, { size: out.length, sha256: contentHash(out) });
      this.#writing.add(name);
      try {
        await putCacheEntry(this.#cache, name, out, like);
      } catch (err) {
        this.#entries.delete(name);
        throw err;
      } finally {
        this.#writing.delete(name);
      }
      made++;
    }
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
    const bytes = Buffer.allocUnsafe(st.size);
    let got = 0;
    while (got < st.size) {
      const n = readSync(fd, bytes, got, st.size - got, got);
      if (n === 0) break;
      got += n;
    }
    return { bytes: got === st.size ? bytes : bytes.subarray(0, got), st };
  } finally {
    closeSync(fd);
  }
}
