import type { Stats } from 'node:fs';
import type { OutgoingHttpHeaders } from 'node:http';
import type { ArenaBody, BodyArena, BodyHolder } from './body-arena.js';

/** What a response needs of a file's stat, and what checks a reopened file is still that one. */
export interface FileIdentity {
  readonly dev: number;
  readonly ino: number;
  readonly size: number;
  readonly mtimeMs: number;
}

/** A file found in the mounted copy, with everything needed to answer for it. */
export interface FileEntry {
  readonly kind: 'file';
  /** Real path of the file (symlinks resolved, inside the slot root). */
  readonly path: string;
  readonly identity: FileIdentity;
  /** The whole stat, kept only when a `setHeaders` callback wants it. */
  readonly stats: Stats | null;
  readonly etag: string;
  readonly lastModified: string;
  readonly lastModifiedMs: number;
  /** Headers of a full 200 response, computed once per epoch. */
  readonly headers: OutgoingHttpHeaders;
  /** The whole body in the arena when small enough and there was room; else streamed from disk. */
  readonly body: ArenaBody | null;
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
 * Last-Modified strings. Measured on Node 20 (64-bit) as the V8 heap's growth
 * over 50,000 entries between two forced collections, rounded up. The key and
 * the real path are added at their length (one byte a character, as paths
 * nearly always are).
 */
export const ENTRY_COST = Object.freeze({ negative: 210, redirect: 210, file: 870 });

function costOf(key: string, entry: Entry): number {
  if (entry.kind !== 'file') return ENTRY_COST[entry.kind === 'refused' ? 'negative' : 'redirect'] + key.length;
  return ENTRY_COST.file + key.length + entry.path.length;
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
export class FileCache implements BodyHolder {
  readonly #entries = new Map<string, Entry>();
  readonly #pending = new Map<string, Promise<Entry>>();
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

  /** What the entries cost, bodies aside. */
  get entryBytes(): number {
    return this.#entryBytes;
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

  /** Look up `key`, resolving it at most once however many requests ask at the same time. */
  resolve(key: string, lookup: () => Promise<Entry>): Promise<Entry> {
    let pending = this.#pending.get(key);
    if (pending === undefined) {
      pending = lookup().then(
        (entry) => {
          this.#pending.delete(key);
          this.#store(key, entry);
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

  /** The arena reused the segment holding `body`: the entry goes, and its next request reads the file again. */
  evictBody(key: string, body: ArenaBody): void {
    const entry = this.#entries.get(key);
    if (entry?.kind === 'file' && entry.body === body) this.#delete(key, entry);
  }

  #store(key: string, entry: Entry): void {
    if (this.#dropped) return;
    const previous = this.#entries.get(key);
    if (previous) this.#delete(key, previous);
    let stored = entry;
    if (entry.kind === 'file' && entry.body) {
      if (entry.body.segment.generation === entry.body.generation) this.#arena.hold(this, key, entry.body);
      else stored = { ...entry, body: null }; // reused before it was stored: streamed from disk instead
    }
    this.#entries.set(key, stored);
    this.#entryBytes += costOf(key, stored);
    this.#counts[kindOf(stored)]++;
    for (const [oldKey, old] of this.#entries) {
      if (
        this.#entryBytes + this.#arena.bytes <= this.#limits.maxBytes &&
        this.#entries.size <= this.#limits.maxEntries
      ) {
        break;
      }
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
    this.#counts.file = this.#counts.redirect = this.#counts.negative = 0;
    this.#arena.release(this);
  }
}

function kindOf(entry: Entry): 'file' | 'redirect' | 'negative' {
  return entry.kind === 'refused' ? 'negative' : entry.kind;
}
