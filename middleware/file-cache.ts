import type { Stats } from 'node:fs';
import type { OutgoingHttpHeaders } from 'node:http';

/** A file found in the mounted copy, with everything needed to answer for it. */
export interface FileEntry {
  readonly kind: 'file';
  /** Real path of the file (symlinks resolved, inside the slot root). */
  readonly path: string;
  readonly stats: Stats;
  readonly etag: string;
  readonly lastModified: string;
  readonly lastModifiedMs: number;
  /** Headers of a full 200 response, computed once per epoch. */
  readonly headers: OutgoingHttpHeaders;
  /** The whole body when small enough to keep in memory; else streamed from disk. */
  readonly body: Buffer | null;
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
  readonly maxBytes: number;
  readonly maxEntries: number;
}

/**
 * What one epoch's lookups found: files, directories to redirect, and paths
 * refused or missing (negative entries). The mounted copy is read-only while
 * mounted, so nothing here is ever invalidated; a new epoch gets a new cache.
 * Eviction is oldest-first, which costs nothing on a hit.
 */
export class FileCache {
  readonly #entries = new Map<string, Entry>();
  readonly #pending = new Map<string, Promise<Entry>>();
  readonly #limits: CacheLimits;
  #bytes = 0;

  constructor(limits: CacheLimits) {
    this.#limits = limits;
  }

  get bytes(): number {
    return this.#bytes;
  }

  get size(): number {
    return this.#entries.size;
  }

  get(key: string): Entry | undefined {
    return this.#entries.get(key);
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

  #store(key: string, entry: Entry): void {
    const cost = entry.kind === 'file' && entry.body ? entry.body.length : 0;
    if (cost > this.#limits.maxBytes) return;
    this.#entries.set(key, entry);
    this.#bytes += cost;
    for (const [oldKey, old] of this.#entries) {
      if (this.#bytes <= this.#limits.maxBytes && this.#entries.size <= this.#limits.maxEntries) break;
      this.#entries.delete(oldKey);
      if (old.kind === 'file' && old.body) this.#bytes -= old.body.length;
    }
  }

  /** Keys of found files and directories, newest first, at most `limit`: what is worth looking up again in the next epoch. */
  foundKeys(limit: number): string[] {
    const keys: string[] = [];
    for (const [key, entry] of this.#entries) if (entry.kind !== 'refused') keys.push(key);
    return keys.slice(-limit).reverse();
  }

  clear(): void {
    this.#entries.clear();
    this.#bytes = 0;
  }
}
