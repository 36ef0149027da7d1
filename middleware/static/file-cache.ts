import type { Stats } from 'node:fs';
import type { OutgoingHttpHeaders } from 'node:http';
import type { DirectoryIndex, FileRecord, VariantEncoding } from '../../src/store/content-index.js';
import type { RecentByDirectory } from '../../src/store/recent-records.js';
import type { ArenaBody, BodyArena, BodyHolder } from './body-arena.js';

/** What a response needs of a file's stat, and what checks a reopened file is still that one. */
export interface FileIdentity {
  readonly dev: number;
  readonly ino: number;
  readonly size: number;
  readonly mtimeMs: number;
}

/** One representation of a file (the file as it is, or a precompressed variant): what a response sends. */
export interface Representation {
  /** Real path of the file sent (symlinks resolved, inside the slot root). */
  readonly path: string;
  readonly identity: FileIdentity;
  /** Headers of a full 200 response, computed once per epoch. */
  readonly headers: OutgoingHttpHeaders;
  /** The whole body in the arena when small enough and there was room; else streamed from disk. */
  readonly body: ArenaBody | null;
}

/** A precompressed sibling (`app.js.br`) the content index lists, found as it says. */
export interface VariantEntry extends Representation {
  readonly encoding: VariantEncoding;
}

/** A file found in the mounted copy, with everything needed to answer for it. */
export interface FileEntry extends Representation {
  readonly kind: 'file';
  /** The whole stat, kept only when a `setHeaders` callback wants it. */
  readonly stats: Stats | null;
  readonly etag: string;
  readonly lastModified: string;
  readonly lastModifiedMs: number;
  /** Its variants, indexed as VARIANT_ENCODINGS (null where there is none); null when it has none at all. */
  readonly variants: readonly (VariantEntry | null)[] | null;
  /** Bit i set when `variants[i]` is there: what negotiation chooses among. */
  readonly variantMask: number;
}

export interface RedirectEntry {
  readonly kind: 'redirect';
}

export interface RefusedEntry {
  readonly kind: 'refused';
  readonly status: 400 | 403 | 404;
}

export type Entry = FileEntry | RedirectEntry | RefusedEntry;

export interface CacheLimits {
  /** Bytes for everything: the arena's segments and every entry's cost. */
  readonly maxBytes: number;
  readonly maxEntries: number;
}

/**
 * What an entry costs besides its body, in bytes: the Map slot, the entry
 * object and, for a file, its identity, headers object, ETag and
 * Last-Modified strings; for each variant, its own object, identity and
 * headers. Measured on Node 20 (64-bit) as the V8 heap's growth over 20,000
 * entries between two forced collections, rounded up (`bench/entry-cost.ts`).
 * The key and the real paths are added at their length (one byte a
 * character, as paths nearly always are).
 */
export const ENTRY_COST = Object.freeze({ negative: 210, redirect: 210, file: 890, variant: 720 });

/**
 * What a parsed directory index costs: per record (the object, its stamp
 * numbers, its hash string and its name) and per variant record, measured
 * as the entries are. Its name is added at its length.
 */
export const INDEX_COST = Object.freeze({ index: 400, record: 260, variant: 200 });

/**
 * What a byte of live heap really costs in resident memory while the cache
 * turns over: V8 lets its heap run to a multiple of its live size between
 * full collections, and every entry evicted is garbage until the next one.
 * Measured by `bench/entry-cost.ts` (the heap's peak growth under churn over
 * what the entries hold: 2.2x with second-miss admission) and by the
 * serving sweep of `bench/serve-memory.ts`, rounded up. Entries are counted
 * in the budget at their heap size times this; bodies (in the arena, outside
 * the heap) at their size.
 */
export const HEAP_HEADROOM = 2.5;

function costOf(key: string, entry: Entry): number {
  if (entry.kind !== 'file') {
    return HEAP_HEADROOM * (ENTRY_COST[entry.kind === 'refused' ? 'negative' : 'redirect'] + key.length);
  }
  let cost = ENTRY_COST.file + key.length + entry.path.length;
  if (entry.variants) {
    for (const variant of entry.variants) if (variant) cost += ENTRY_COST.variant + variant.path.length;
  }
  return HEAP_HEADROOM * cost;
}

function indexCost(relDir: string, index: DirectoryIndex | null): number {
  let cost = INDEX_COST.index + relDir.length;
  if (index !== null) {
    for (const [name, record] of Object.entries(index.files)) {
      cost += INDEX_COST.record + name.length;
      if (record.variants) cost += INDEX_COST.variant * Object.keys(record.variants).length;
    }
  }
  return HEAP_HEADROOM * cost;
}

/** What remembering a path missed while the cache was full costs (a Set slot), its length aside. */
const SEEN_COST = 40 * HEAP_HEADROOM;

/** Where lookups get a directory's content index: read once per epoch, kept while there is room. */
export interface IndexSource {
  directoryIndex(relDir: string, read: () => Promise<DirectoryIndex | null>): Promise<DirectoryIndex | null>;
  /** The copy's recent records (src/store/recent-records.ts), read once per epoch: each directory's index is read through them (null: torn, every index void). */
  recentRecords(read: () => Promise<RecentByDirectory | null>): Promise<RecentByDirectory | null>;
}

/** The bodies an entry holds in the arena: the file's and its variants'. */
function bodiesOf(entry: FileEntry): ArenaBody[] {
  const bodies: ArenaBody[] = [];
  if (entry.body) bodies.push(entry.body);
  if (entry.variants) for (const variant of entry.variants) if (variant?.body) bodies.push(variant.body);
  return bodies;
}

/** `entry` without the bodies whose segment was reused before it was stored: those are streamed from disk. */
function withoutReusedBodies(entry: FileEntry): FileEntry {
  const live = (body: ArenaBody | null) => body !== null && body.segment.generation === body.generation;
  const stale = bodiesOf(entry).some((body) => !live(body));
  if (!stale) return entry;
  return Object.freeze({
    ...entry,
    body: live(entry.body) ? entry.body : null,
    variants:
      entry.variants &&
      Object.freeze(entry.variants.map((v) => (v === null || live(v.body) ? v : Object.freeze({ ...v, body: null })))),
  });
}

/**
 * What one epoch's lookups found: files, directories to redirect, and paths
 * refused or missing (negative entries). The mounted copy is read-only while
 * mounted, so nothing here is ever invalidated; a new epoch gets a new cache.
 * Eviction is oldest-first, which costs nothing on a hit.
 *
 * One budget covers it all: the arena's segments (bodies at their real
 * allocation) plus each entry's cost. Entries are evicted while the two
 * together exceed it; bodies go with their segment when the arena reuses it.
 */
export class FileCache implements BodyHolder, IndexSource {
  readonly #entries = new Map<string, Entry>();
  /** The copy's recent records, once read (they are few: counted with the indexes, never let go). */
  #recent: Promise<RecentByDirectory | null> | undefined;
  /** Parsed content indexes by directory, oldest first, with what each costs. */
  readonly #indexes = new Map<string, { index: Promise<DirectoryIndex | null>; cost: number }>();
  #indexBytes = 0;
  readonly #pending = new Map<string, Promise<Entry>>();
  /** Paths missed while the cache was full, oldest first: one is admitted at its second miss. */
  readonly #seen = new Set<string>();
  #seenBytes = 0;
  /** Set once the cache first had to let an entry go: from then on, admission is by second miss. */
  #full = false;
  readonly #limits: CacheLimits;
  readonly #arena: BodyArena;
  #entryBytes = 0;
  /** Cleared with its epoch: lookups still finishing for the old epoch's requests are not kept. */
  #dropped = false;
  readonly #counts = { file: 0, redirect: 0, negative: 0 };

  constructor(limits: CacheLimits, arena: BodyArena) {
    this.#limits = limits;
    this.#arena = arena;
  }

  /** What the entries (and the content indexes kept) cost, bodies aside. */
  get entryBytes(): number {
    return this.#entryBytes + this.#indexBytes + this.#seenBytes;
  }

  recentRecords(read: () => Promise<RecentByDirectory | null>): Promise<RecentByDirectory | null> {
    if (this.#dropped) return read(); // as `directoryIndex`: a lookup of a gone epoch keeps nothing
    if (this.#recent === undefined) {
      const recent = read();
      this.#recent = recent;
      recent.then(
        (byDir) => {
          if (this.#recent !== recent) return; // cleared with its epoch meanwhile: counted nowhere
          for (const [dir, records] of Object.entries(byDir ?? {})) {
            const files: Record<string, FileRecord> = Object.create(null);
            for (const [name, record] of Object.entries(records)) if (record !== null) files[name] = record;
            this.#indexBytes += indexCost(dir, { v: 1, dir, files });
          }
        },
        () => {
          if (this.#recent === recent) this.#recent = undefined; // the next lookup tries again
        },
      );
    }
    return this.#recent;
  }

  /**
   * The content index of `relDir`, read at most once per epoch while it is
   * kept: indexes take at most an eighth of the budget, oldest dropped first
   * (a lookup in its directory then reads it again).
   */
  directoryIndex(relDir: string, read: () => Promise<DirectoryIndex | null>): Promise<DirectoryIndex | null> {
    const kept = this.#indexes.get(relDir);
    if (kept !== undefined) return kept.index;
    if (this.#dropped) return read();
    const slot = { index: read(), cost: indexCost(relDir, null) };
    this.#indexes.set(relDir, slot);
    this.#indexBytes += slot.cost;
    slot.index.then(
      (index) => {
        if (this.#indexes.get(relDir) !== slot) return;
        const cost = indexCost(relDir, index);
        this.#indexBytes += cost - slot.cost;
        slot.cost = cost;
        for (const [dir, old] of this.#indexes) {
          if (this.#indexBytes <= this.#limits.maxBytes / 8 || old === slot) break;
          this.#indexes.delete(dir);
          this.#indexBytes -= old.cost;
        }
      },
      () => {
        // not kept: the next lookup in the directory tries again
        if (this.#indexes.get(relDir) !== slot) return;
        this.#indexes.delete(relDir);
        this.#indexBytes -= slot.cost;
      },
    );
    return slot.index;
  }

  get size(): number {
    return this.#entries.size;
  }

  /** Entries by kind, for the metrics. */
  get counts(): Readonly<{ file: number; redirect: number; negative: number }> {
    return this.#counts;
  }

  get(key: string): Entry | undefined {
    return this.#entries.get(key);
  }

  /** True while a lookup of `key` is under way (a request for it then waits for that one). */
  isPending(key: string): boolean {
    return this.#pending.has(key);
  }

  /**
   * Look up `key`, resolving it at most once however many requests ask at
   * the same time. `lookup` is told whether its entry will be kept: one
   * that will not must not take room in the arena (its body is streamed).
   */
  resolve(key: string, lookup: (admitted: boolean) => Promise<Entry>): Promise<Entry> {
    let pending = this.#pending.get(key);
    if (pending === undefined) {
      const admitted = this.#admits(key);
      pending = lookup(admitted).then(
        (entry) => {
          this.#pending.delete(key);
          if (admitted) this.#store(key, entry);
          return entry;
        },
        (err: unknown) => {
          this.#pending.delete(key);
          throw err;
        },
      );
      this.#pending.set(key, pending);
    }
    return pending;
  }

  /**
   * Whether a lookup of `key` is kept. Until the cache is full, every one
   * is. Once it is, a path is kept only at its second miss among the last
   * ones (as many as the cache has entries, in at most a 32nd of the
   * budget, counted with the entries): a sweep over more distinct paths
   * than the cache holds (a crawler, a scan of missing paths, a benchmark)
   * then leaves what the cache holds in place, rather than turning it all
   * over, each entry it evicts left for the garbage collector to find late.
   */
  #admits(key: string): boolean {
    if (!this.#full) return true;
    if (this.#seen.delete(key)) {
      this.#seenBytes -= SEEN_COST + HEAP_HEADROOM * key.length;
      return true;
    }
    this.#seen.add(key);
    this.#seenBytes += SEEN_COST + HEAP_HEADROOM * key.length;
    // as many as the cache has entries, in at most a 32nd of the budget
    const limit = Math.max(this.#entries.size, 64);
    for (const old of this.#seen) {
      if (this.#seen.size <= limit && this.#seenBytes <= this.#limits.maxBytes / 32) break;
      this.#seen.delete(old);
      this.#seenBytes -= SEEN_COST + HEAP_HEADROOM * old.length;
    }
    return false;
  }

  /** The arena reused the segment holding `body`: the entry goes, and its next request reads the file again. */
  evictBody(key: string, body: ArenaBody): void {
    this.#full = true;
    const entry = this.#entries.get(key);
    if (entry?.kind === 'file' && bodiesOf(entry).includes(body)) this.#delete(key, entry);
  }

  #store(key: string, entry: Entry): void {
    if (this.#dropped) return;
    const previous = this.#entries.get(key);
    if (previous) this.#delete(key, previous);
    let stored = entry;
    if (entry.kind === 'file') {
      // a body whose segment was reused before it was stored is streamed from disk instead
      stored = withoutReusedBodies(entry);
      for (const body of bodiesOf(stored)) this.#arena.hold(this, key, body);
    }
    this.#entries.set(key, stored);
    this.#entryBytes += costOf(key, stored);
    this.#counts[kindOf(stored)]++;
    for (const [oldKey, old] of this.#entries) {
      if (
        this.entryBytes + this.#arena.bytes <= this.#limits.maxBytes &&
        this.#entries.size <= this.#limits.maxEntries
      ) {
        break;
      }
      this.#full = true;
      this.#delete(oldKey, old);
    }
  }

  #delete(key: string, entry: Entry): void {
    this.#entries.delete(key);
    this.#entryBytes -= costOf(key, entry);
    this.#counts[kindOf(entry)]--;
  }

  /** Keys of found files and directories, newest first, at most `limit`: what is worth looking up again in the next epoch. */
  foundKeys(limit: number): string[] {
    const keys: string[] = [];
    for (const [key, entry] of this.#entries) if (entry.kind !== 'refused') keys.push(key);
    return keys.slice(-limit).reverse();
  }

  /** Drop every entry, for good (the epoch is gone); the arena reuses their bodies' room in turn. */
  clear(): void {
    this.#dropped = true;
    this.#entries.clear();
    this.#entryBytes = 0;
    this.#indexes.clear();
    this.#recent = undefined;
    this.#indexBytes = 0;
    this.#seen.clear();
    this.#seenBytes = 0;
    this.#counts.file = this.#counts.redirect = this.#counts.negative = 0;
    this.#arena.release(this);
  }
}

function kindOf(entry: Entry): 'file' | 'redirect' | 'negative' {
  return entry.kind === 'refused' ? 'negative' : entry.kind;
}
