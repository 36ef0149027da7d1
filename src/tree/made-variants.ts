import { deniedAsNone, isDenied } from '../core/nothing-there.js';
import { type DirectoryIndex, readDirectoryIndexSync, variantMatches } from '../store/content-index.js';
import { type RecentByDirectory, byDirectory, loadRecentRecordsSync, throughRecent } from '../store/recent-records.js';
import { variantOf } from './compressible.js';

/**
 * Which files of a copy are variants the agent made beside their original,
 * as its content index says (by inode and size), read with blocking calls in
 * a walk thread: for the manifest a fleet coordinator sends its hosts, which
 * mark them `made` so that a host's servers, as the agent's own, never serve
 * one under its own name. Master's own `X.gz` is no made variant.
 *
 * A directory's index is read only when the directory lists a variant name
 * beside its original's: any other costs a pass over its names. An index or record
 * file a mode denies (drift) names nothing, as a server reads it; a read
 * that fails otherwise (out of descriptors) is thrown, failing the walk:
 * a snapshot missing marks would leave its hosts serving made variants by
 * name until their files change.
 */
export class MadeVariants {
  readonly #root: string;
  /** The copy's recent records by directory (null: torn, every index void), read once per run of the walk (a version cache spares the parse after). */
  #recent: RecentByDirectory | null | undefined;

  constructor(root: string) {
    this.#root = root;
  }

  /** What tells the made variants among `names`, the entries of directory `rel`: null when none can be one. */
  in(rel: string, names: readonly string[]): MadeIn | null {
    const listed = new Set(names);
    const paired = names.some((name) => {
      const v = variantOf(name);
      return v !== null && listed.has(v.base);
    });
    if (!paired) return null;
    const index = throughRecent(this.#readIndex(rel), rel, this.#recentRecords());
    return index === null ? null : new MadeIn(index);
  }

  #readIndex(rel: string): DirectoryIndex | null {
    try {
      return readDirectoryIndexSync(this.#root, rel);
    } catch (err) {
      return deniedAsNone(err);
    }
  }

  #recentRecords(): RecentByDirectory | null {
    if (this.#recent === undefined) {
      let records: ReturnType<typeof loadRecentRecordsSync>;
      try {
        records = loadRecentRecordsSync(this.#root);
      } catch (err) {
        if (!isDenied(err)) throw err;
        records = 'torn';
      }
      this.#recent = records === 'torn' ? null : byDirectory(records);
    }
    return this.#recent;
  }
}

/** One directory's index, asked of its entries. */
export class MadeIn {
  readonly #index: DirectoryIndex;

  constructor(index: DirectoryIndex) {
    this.#index = index;
  }

  /** Whether the entry `name` of status `st` is a variant the agent made (the index names it so, by this inode and size). */
  has(name: string, st: { ino: number; size: number }): boolean {
    const v = variantOf(name);
    if (v === null) return false;
    const variant = this.#index.files[v.base]?.variants?.[v.encoding];
    return variant?.made === true && variantMatches(variant, st);
  }
}
