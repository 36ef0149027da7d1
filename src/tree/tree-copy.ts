import { isDenied, isNothingThere } from '../core/nothing-there.js';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { type Stats, constants } from 'node:fs';
import {
  type FileHandle,
  access,
  chmod,
  copyFile,
  link,
  mkdir,
  open,
  readdir,
  rename,
  rm,
  rmdir,
  stat,
  symlink,
  unlink,
  utimes,
} from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fsyncDir } from '../store/atomic-write.js';
import { META_DIR_NAME, TEMP_DIR_NAME, isReservedPath, isReservedRootName } from '../store/store-layout.js';
import {
  type FileRecord,
  type VariantEncoding,
  type VariantRecord,
  VARIANT_SUFFIX,
  dropDirectoryIndex,
  forEachDirectoryIndex,
  rootRecordsGone,
  variantMatches,
} from '../store/content-index.js';
import { readRecentRecords } from '../store/recent-records.js';
import { realDirectories } from './real-directories.js';
import { fillable, fillingMode, treeMode, unlockTree } from './tree-mode.js';
import { WritableDirs } from './writable-dirs.js';
import { TREE_DEFAULTS } from './tree-defaults.js';
import {
  addCloneResult,
  type CloneContext,
  type CloneResult,
  type CloneUnit,
  emptyCloneResult,
} from './clone-trees.js';
import { shareFile } from './share-files.js';
import { type Difference, compareTrees } from './compare-trees.js';
import { Limiter, forEachLimited } from '../core/limiter.js';
import { lstatOrNull, lstatOrNullSync } from '../core/lstat-or-null.js';
import { SourceTree, descriptorPath, isGone, isUnplaceable } from './source-tree.js';
import { msInside } from './copy-times.js';
import { walkPool } from './walk-pool.js';
import { WALK_THREADS } from './walk-threads.js';
import { planUnits, topmost } from './walk-units.js';
import type { StageContext, StageUnit, Staged } from './stage-files.js';
import { type KeepBudget, drawKeep, keepBudget, refillKeepBudget, returnKeep } from './keep-budget.js';
import type { VariantSettings } from './compressible.js';
import {
  type DeriveContext,
  type DeriveResult,
  type DeriveStats,
  type StagedHash,
  addDeriveStats,
  emptyDeriveStats,
} from './derive-variants.js';
import { deriveCopy, throughOtherRecords } from './derive-copy.js';
import type { CacheView } from './variant-cache.js';
import {
  forgetVariantSelectionSync,
  recordVariantSelectionSync,
  staleVariantSelectionSync,
} from './variant-selection.js';

export type { Difference };

/** What one copy did. */
export interface CopyStats {
  files: number;
  bytes: number;
  deleted: number;
  dirs: number;
  /** Entries that cannot exist in the target (a name too long for its file system): left out, and reported. */
  skipped: number;
  /** Entries of the source the agent may not read (a mode that shuts it out): left as they were, and reported. */
  unreadable: number;
}

export function emptyStats(): CopyStats {
  return { files: 0, bytes: 0, deleted: 0, dirs: 0, skipped: 0, unreadable: 0 };
}

/** What a copy's derive step needs: the settings, the copy to reuse variants from, the variant cache. */
export interface CopyVariants {
  settings: VariantSettings;
  other: string | null;
  cache?: CacheView | null;
}

export interface CopyOptions {
  /** fsync each copied file and every changed directory before returning (default `TREE_DEFAULTS.durable`, which the agent's default is). */
  durable?: boolean;
  concurrency?: number;
  onProgress?: (stats: CopyStats) => void;
  /**
   * Keep what the copy replaces or deletes in the target, moved into the temp
   * directory, until `clearTemp` (a swap calls it once it has published):
   * replaced files up to this many bytes (a deleted tree is moved aside
   * whole: it needs no room for anything new). Freeing a replaced file's
   * blocks is most of what replacing it costs (about 200 µs a file on an ext4
   * disk, against 50 µs for the rename), and none of it needs to happen before
   * the publish; past the budget a file is freed as it is replaced, so a
   * sync that rewrites a large tree never needs room for both versions of all
   * of it. 0, the default: nothing is kept, and the copy leaves no temp
   * directory behind.
   */
  keepReplacedBytes?: number;
  /**
   * Precompressed variants and the content index (derive-variants.ts): made,
   * with these settings, for what the copy changed, before the copy is made
   * durable (`other`, the other copy, is read for variants to reuse). Null:
   * none; the copy's index is removed, and variants the agent made are
   * extra like any file master lacks. Unset: neither made nor removed (what
   * the copy changes is compared as any file).
   */
  variants?: CopyVariants | null;
  /**
   * Another copy (on the same file system, for a link to work) whose files
   * the copy hard-links instead of copying where they hold the same bytes,
   * mode and mtime (`share-files.ts`). Null or unset: every file is copied.
   */
  share?: string | null;
  /**
   * Paths master has not changed since the copy shared with (`share`) was
   * made at them, as its journal shows: a regular file of that copy at one
   * of them is linked without reading master or comparing bytes. What is
   * not a regular file there is copied as any path.
   */
  settled?: ReadonlySet<string>;
  /**
   * The target was left mid-copy by a copy cut short (a crash): files it
   * placed may not be derived yet, their made variants still those of the
   * files they replaced, and neither a compare nor the journal names them
   * (the copy cut short may have been a full one, repairing what the journal
   * did not say). A copy with variants then derives the whole copy once, not
   * only what it changes (a record still current is kept, its file unread).
   */
  cutShort?: boolean;
}

/** For a removal's catch: nothing there is what it was for. */
function nothingThereIsDone(err: unknown): void {
  if (!isNothingThere(err)) throw err;
}

/** Files to stage per walk thread started: a thread start costs what a few hundred files' copies cost. */
const STAGED_PER_THREAD = 256;

/**
 * A derive of at most this many changed paths sets aside what it replaces
 * (`DeriveContext.setAside`) when the copy keeps what it replaces: a
 * journal sync's few. A larger one frees as it goes, so a copy that remakes
 * every variant never needs room for two sets of them.
 */
const SET_ASIDE_PATHS = 1024;

/** Paths staged at a time (each file staged is at most `STAGE_MAX_BYTES`, `stage-files.ts`). */
const STAGE_BATCH = 1024;

/**
 * Copies of more files than this are made durable with one syncfs(2) at the
 * end; up to it, each file and changed directory is fsynced (a fleet pull
 * follows the same rule).
 */
export const PER_FILE_SYNC_LIMIT = 256;

/**
 * Flush the whole file system holding `path`: one syncfs(2), through
 * coreutils' `sync -f` since Node has no binding for it. Far cheaper than an
 * fsync per file when a copy wrote thousands of them.
 */
function syncFileSystem(path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('sync', ['-f', path], (err) => {
      if (err) reject(new Error(`sync -f ${path} failed: ${err.message}`));
      else resolve();
    });
  });
}

/** fsync the file at `path`; one gone (replaced again, or removed, later in the same copy) is skipped. */
async function fsyncFile(path: string): Promise<void> {
  let handle: FileHandle;
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    if (isGone(err)) return;
    throw err;
  }
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** syncFileSystem once for each file system holding one of `paths`. */
export async function syncFileSystems(paths: readonly string[]): Promise<void> {
  const seen = new Set<number>();
  for (const path of paths) {
    const dev = (await stat(path)).dev;
    if (seen.has(dev)) continue;
    seen.add(dev);
    await syncFileSystem(path);
  }
}

/**
 * Copies master into a slot. Every file lands by rename from the slot's own
 * temp directory, never written in place; mtimes and modes follow master, so
 * an unchanged file keeps its ETag across a swap.
 *
 * A path to copy is made to match the source whatever it is: a file or link
 * is replaced, a directory is compared whole (what a writer removed under it
 * and wrote again, or a directory renamed in, must not keep old entries).
 * The source is read through SourceTree: never through a link, whatever is
 * swapped in during the copy.
 */
export class TreeCopier {
  readonly #source: string;
  readonly #target: string;
  readonly #tmpDir: string;
  /** Temp names are this plus a counter: unique without a random draw per file. */
  readonly #tmpPrefix: string;
  #tmpCount = 0;
  readonly #durable: boolean;
  readonly #keepReplaced: boolean;
  readonly #keepBytes: number;
  /** Where replaced and deleted entries wait for `clearTemp` (`keepReplacedBytes`). */
  readonly #replacedDir: string;
  #replacedDirMade = false;
  #replacedCount = 0;
  /** What is kept there: each name, and whether it may be a directory (else a file or link). */
  #replaced: { path: string; tree: boolean }[] = [];
  /** What may still be kept there, drawn on by the walk threads that place files too (keep-budget.ts); null when nothing is kept. */
  readonly #keepBudget: KeepBudget | null;
  /** Sync the whole file system once at the end (large copies) instead of each file as it lands. */
  #syncfsAtEnd = false;
  readonly #limiter: Limiter;
  readonly #concurrency: number;
  readonly #onProgress: ((s: CopyStats) => void) | undefined;
  readonly #touchedDirs = new Set<string>();
  /** Target directories known to exist during this copy (it is the slot's only writer). */
  readonly #knownDirs = new Set<string>();
  /**
   * Files copied to temp files by `#stage` and not placed by their thread, each to be renamed into
   * place by `#placeStaged`; `shared`: linked from the copy shared with (counted once placed).
   */
  readonly #staged = new Map<string, { tmp: string; bytes: number; shared: boolean }>();
  /** What staging learnt of the files it copied (their hash), for the next derive. */
  readonly #stagedHashes = new Map<string, StagedHash>();
  /** Staged files placed, to fsync in `#finish` with the directories (when durable, file by file). */
  readonly #placedUnsynced: string[] = [];
  #sourceTree: Promise<SourceTree> | undefined;
  /** Entries left out because the target cannot hold them. */
  readonly skipped: string[] = [];
  /** Entries of the source this process may not read: left as they are in the target. */
  readonly #unreadable = new Set<string>();
  /** Target directories written into or given a mode: writable until `#finish` gives them their modes. */
  readonly #dirs = new WritableDirs();
  readonly stats: CopyStats = emptyStats();
  /** Files hard-linked from the copy shared with (`CopyOptions.share`) rather than copied: in `stats.files`, not in `stats.bytes`. */
  sharedFiles = 0;
  /** Entries of the variant cache this copy's derives took. */
  readonly cacheTaken: string[] = [];
  /** Set when this copy was derived whole because its variants followed another selection (variant-selection.ts). */
  reselected = false;
  readonly #variants: CopyVariants | null | undefined;
  readonly #share: string | undefined;
  readonly #settled: ReadonlySet<string> | undefined;
  /** Set until the derive of the whole copy a copy cut short calls for has been asked for (`CopyOptions.cutShort`). */
  #cutShort: boolean;
  /** Set from then until that derive has run: it takes no record by its stamp alone (`DeriveContext.cutShort`). */
  #derivesCutShort = false;
  /** Set when the next derive is of the whole copy but what the clone derived (`#nameTheRest`). */
  #derivesWhole = false;
  /**
   * The variant selection (variant-selection.ts) this copy must record once derived whole by it,
   * its own record being another; null once looked at and found the same, or recorded.
   */
  #reselect: string | null | undefined;
  /** Set from the naming of the whole copy for a new selection until that derive has run (`DeriveContext.reselect`). */
  #derivesReselect = false;
  /** The records the last derive collected, to keep in the copy's recent records while the copy's fsyncs run (`#finish`). */
  #keepRecords: (() => void) | null = null;
  /** Set when the copy made a directory, or failed, since its last derive: its recent records are then voided (derive-copy.ts). */
  #recentUntrusted = false;
  /** Top directories the clone of `mirrorAll` derived as it copied them. */
  #cloneDerived: ReadonlySet<string> = new Set();
  /** Paths the copy placed, removed or found different since its last derive; those known to be directories. */
  readonly #changed = new Set<string>();
  readonly #changedDirs = new Set<string>();
  /** What the derive steps of this copy did. */
  readonly variantStats: DeriveStats = emptyDeriveStats();

  constructor(source: string, target: string, opts: CopyOptions = {}) {
    this.#source = source;
    this.#target = target;
    this.#tmpDir = join(target, TEMP_DIR_NAME);
    this.#tmpPrefix = join(this.#tmpDir, randomBytes(8).toString('hex'));
    this.#durable = opts.durable ?? TREE_DEFAULTS.durable;
    this.#keepBytes = opts.keepReplacedBytes ?? 0;
    this.#keepReplaced = this.#keepBytes > 0;
    this.#keepBudget = this.#keepReplaced ? keepBudget(this.#keepBytes) : null;
    this.#replacedDir = `${this.#tmpPrefix}.replaced`;
    this.#concurrency = opts.concurrency ?? 32;
    this.#limiter = new Limiter(this.#concurrency);
    this.#onProgress = opts.onProgress;
    this.#variants = opts.variants;
    this.#share = opts.share ?? undefined;
    this.#settled = this.#share === undefined ? undefined : opts.settled;
    this.#cutShort = opts.cutShort === true;
  }

  #tree(): Promise<SourceTree> {
    this.#sourceTree ??= SourceTree.open(this.#source);
    return this.#sourceTree;
  }

  /**
   * Give the target's root its owner's read, write and search if its mode
   * denies them (drift: no copy gives the root a mode), and leave it so: the
   * temp directory is made and removed in it, also after the copy.
   */
  async #openRoot(): Promise<void> {
    const st = await lstatOrNull(this.#target);
    if (st?.isDirectory() && !fillable(st.mode)) await chmod(this.#target, fillingMode(st.mode));
  }

  /** Remove the temp directory: leftovers of an interrupted copy, and what a copy replaced (`keepReplacedBytes`). */
  async clearTemp(): Promise<void> {
    await this.#openRoot();
    // What was kept and what the derive set aside (files of the temp directory itself), all in
    // parallel: freeing each is the kernel's work, one unlink each, where a recursive rm looks
    // at each entry first (two calls a file, on the swap's path when no server drains).
    const kept = this.#replaced.splice(0);
    // only a real directory is listed: through a link there (drift) the files of the directory it
    // names would go. Anything else (a link, a file) is the thorough removal's, which never follows
    const real = (await lstatOrNull(this.#tmpDir))?.isDirectory() === true;
    const loose = real ? await this.#looseTempFiles() : [];
    await Promise.all([
      ...kept.map(({ path, tree }) =>
        // one gone already (removed by hand meanwhile) is as good as freed
        this.#limiter.run(() =>
          tree ? rm(path, { recursive: true, force: true }) : unlink(path).catch(nothingThereIsDone),
        ),
      ),
      ...loose.map((path) => this.#limiter.run(() => unlink(path).catch(() => {}))), // what is left: the rm below
    ]);
    if (!real || !(await this.#removeEmptyTemp())) {
      // the rest: an interrupted copy's leftovers, read-only directories among them
      await unlockTree(this.#tmpDir);
      await rm(this.#tmpDir, { recursive: true, force: true });
    }
    // the directory of what is kept went with it, and all it held: a copy after this (the same
    // copier's, after a failed copy cleared its temp directory) makes it again, with its whole
    // budget. Else a removal's rename into it fails ENOENT, taken for the entry gone meanwhile,
    // and the entry is left in the copy
    this.#replacedDirMade = false;
    if (this.#keepBudget) refillKeepBudget(this.#keepBudget, this.#keepBytes);
  }

  /** The files and links directly in the temp directory (what a derive set aside, or an interrupted copy's leftovers). */
  async #looseTempFiles(): Promise<string[]> {
    const entries = await readdir(this.#tmpDir, { withFileTypes: true }).catch(() => []);
    return entries.filter((e) => !e.isDirectory()).map((e) => join(this.#tmpDir, e.name));
  }

  /**
   * Remove the temp directory and the directory of what was kept, once
   * emptied: one rmdir each. False when either still holds something (or
   * cannot be removed so), for the thorough removal to take over.
   */
  async #removeEmptyTemp(): Promise<boolean> {
    try {
      if (this.#replacedDirMade) await rmdir(this.#replacedDir).catch(nothingThereIsDone);
      await rmdir(this.#tmpDir).catch(nothingThereIsDone);
      return true;
    } catch {
      return false;
    }
  }

  /** Note an entry of the source this process may not read (once per copy). */
  #noteUnreadable(rel: string): void {
    this.#unreadable.add(rel); // counted at the end (`#finish`), where a directory stands for its tree
  }

  /** Entries of the source this process may not read, left as they are: a directory stands for its tree. */
  get unreadable(): string[] {
    const within = (rel: string) => {
      for (let i = rel.lastIndexOf('/'); i > 0; i = rel.lastIndexOf('/', i - 1))
        if (this.#unreadable.has(rel.slice(0, i))) return true;
      return false;
    };
    return [...this.#unreadable].filter((rel) => !within(rel));
  }

  /** The paths of `diffs` to copy: those the source lets this process read (the others are noted). */
  #readable(diffs: Difference[]): Difference[] {
    return diffs.filter((d) => {
      if (d.kind !== 'unreadable') return true;
      this.#noteUnreadable(d.path);
      return false;
    });
  }

  /**
   * Make each listed path (relative, "/"-separated) in the target match the
   * source, a directory with everything below it. Returns what it did; the
   * paths it found different below listed directories are added to `found`,
   * and `onWalked` hears how many entries below them were looked at.
   */
  async copyPaths(paths: Iterable<string>, found?: string[], onWalked?: (entries: number) => void): Promise<CopyStats> {
    await this.#openRoot();
    await mkdir(this.#tmpDir, { recursive: true });
    const list = [...new Set(paths)];
    this.#syncfsAtEnd ||= list.length > PER_FILE_SYNC_LIMIT;
    for (const p of list) this.#changed.add(p);
    let syncing: Promise<void> | undefined;
    try {
      if (this.#variants === null) await this.#dropIndex();
      const dirs = await this.#copyLevels(list);
      for (const d of dirs) this.#changedDirs.add(d);
      // Each directory listed is compared whole: what differs below it is copied in turn.
      // Its own entries were placed above, so a second round compares nothing twice.
      const below = this.#readable(
        await compareTrees(this.#source, this.#target, {
          under: topmost(dirs),
          openTarget: true,
          onWalked,
          variants: Boolean(this.#variants),
        }),
      ).map((d) => d.path);
      if (below.length > 0) {
        this.#syncfsAtEnd ||= below.length > PER_FILE_SYNC_LIMIT;
        found?.push(...below);
        for (const p of below) this.#changed.add(p);
        for (const d of await this.#copyLevels(below)) this.#changedDirs.add(d);
      }
      if (this.#variants && this.#cutShort) {
        // after a copy cut short, what it placed and never derived is derived now, wherever it is
        this.#cutShort = false;
        this.#derivesCutShort = true;
        await this.#nameTheRest(this.#cloneDerived);
      }
      if (this.#variants && this.#reselect === undefined) {
        // a copy whose variants follow another selection (settings changed since it was derived,
        // or it has none recorded) is derived whole by it, once
        this.#reselect = staleVariantSelectionSync(this.#target, this.#variants.settings);
        if (this.#reselect !== null) {
          // no record until the derive is done: one cut short must not leave the old one standing
          forgetVariantSelectionSync(this.#target);
          this.#derivesReselect = true;
          if (!this.#derivesWhole) await this.#nameTheRest(this.#cloneDerived);
        }
      }
      if (this.#variants) {
        // the placed files' data is flushed while the derive runs: it only reads them. The
        // directories wait for the derive, which removes and links variants in them
        syncing = this.#syncPlacedFiles();
        syncing.catch(() => {}); // handled: awaited below, after the derive (or on its failure)
        await this.#derive(this.#variants);
        await syncing;
        if (this.#reselect) {
          // the whole copy follows it now (the temp directory the record is written through stands)
          recordVariantSelectionSync(this.#target, this.#reselect);
          this.#reselect = null;
          this.reselected = true;
        }
      } else if (this.#variants === null) await this.#dropMadeVariants();
    } catch (err) {
      // what a failed copy's derive collected is never kept, and the copier's next derive (if it is
      // used again) trusts no recent record: what it placed may lack its own
      this.#keepRecords = null;
      this.#recentUntrusted = true;
      if (this.#reselect) this.#reselect = undefined; // not recorded: looked at again by a next copy
      await syncing?.catch(() => {});
      await this.#dirs.settle().catch(() => {});
      await this.clearTemp().catch(() => {}); // a failed copy (a full disk, say) leaves no temp file behind
      throw err;
    }
    try {
      await this.#finish();
    } catch (err) {
      this.#recentUntrusted = true; // as above: the copy is unfinished
      throw err;
    }
    return this.stats;
  }

  /**
   * Copy each listed path that is a small regular file in the source to a
   * temp file of its own, in the walk threads (blocking calls, a few hundred
   * microseconds a file), and rename it into place there when its place
   * needs none of the copier's care (stage-files.ts `placeStagedSync`: its
   * parents all directories already, the last writable, nothing in the way
   * a rename cannot replace). Returns the paths placed so; a file staged but
   * not placed is left to `#placePath`, which only renames it, and anything
   * else (a large file, a directory, a link, what is gone) too, which looks
   * at it again. The threads running share the files (one message each);
   * more threads start for a few hundred.
   */
  async #stage(list: string[]): Promise<Set<string>> {
    const settled = this.#settled;
    // what each file replaces is kept while the copy's budget lasts, which the threads draw on as they
    // place (keeping is never worth failing a copy for: not without the directory to keep it in)
    const budget =
      this.#keepBudget &&
      (await this.#replacedDirReady().then(
        () => this.#keepBudget,
        () => null,
      ));
    const keptAt = new Map<string, string>();
    const units: StageUnit[] = list.map((rel) => {
      const unit: StageUnit = { rel, tmp: `${this.#tmpPrefix}.${this.#tmpCount++}` };
      if (settled?.has(rel)) unit.settled = true;
      if (budget) {
        unit.keep = join(this.#replacedDir, String(this.#replacedCount++));
        keptAt.set(rel, unit.keep);
      }
      return unit;
    });
    const placed = new Set<string>();
    await walkPool.run<StageUnit, Staged>(
      'stage',
      {
        source: this.#source,
        share: this.#share,
        hash: Boolean(this.#variants),
        target: this.#target,
        keepBudget: budget ?? undefined,
      } satisfies StageContext,
      units,
      (parts) => {
        for (const part of parts) {
          if (part.bytes === null) continue;
          if (part.hash) this.#stagedHashes.set(part.rel, part.hash);
          // a shared file counts once it is placed: one whose placing fails is copied again by path
          if (part.placed) {
            placed.add(part.rel);
            if (part.shared) this.sharedFiles++;
            this.#placedByThread(part.rel, part.bytes, part.placed.kept ? (keptAt.get(part.rel) ?? null) : null);
          } else this.#staged.set(part.rel, { tmp: part.tmp, bytes: part.bytes, shared: part.shared === true });
        }
        return true;
      },
      undefined,
      // a file's copy costs a few hundred µs, a message to a thread and back about as much: one
      // message to each thread running, and more threads only for hundreds of files
      {
        startAtMost: Math.ceil(units.length / STAGED_PER_THREAD),
        minChunk: 64,
        spread: true,
      },
    );
    return placed;
  }

  /** Place each path, one depth at a time; returns those that are directories in the source. */
  async #copyLevels(list: string[]): Promise<string[]> {
    // One depth at a time, parents before children: a directory that replaces a
    // file (or the reverse) must settle before anything lands under it, or its
    // removal of what it found could take a child already copied in.
    const levels = new Map<number, string[]>();
    for (const p of list) {
      const depth = p.split('/').length;
      const level = levels.get(depth);
      if (level) level.push(p);
      else levels.set(depth, [p]);
    }
    const dirs: string[] = [];
    for (const depth of [...levels.keys()].sort((x, y) => x - y)) {
      const level = levels.get(depth) as string[];
      // staged a batch at a time: the temp copies never hold more than a batch's files
      for (let i = 0; i < level.length; i += STAGE_BATCH) {
        const batch = level.slice(i, i + STAGE_BATCH);
        const placed = await this.#stage(batch);
        await forEachLimited(batch, this.#concurrency, async (p) => {
          if (!placed.has(p) && (await this.#matchPath(p))) dirs.push(p);
        });
      }
    }
    return dirs;
  }

  /**
   * Compare the whole tree and copy what differs, delete what the source
   * lacks. Returns the paths found different (what a journal did not say, if
   * it did not); a directory the target lacked stands for its tree.
   * `onWalked` hears how many entries of the source were looked at since its
   * last call (compared, or copied whole): every entry once, so the sum at
   * the end is the source's size in entries. `also` are copied whatever the
   * compare finds: paths a journal recorded as changed, which a compare by
   * size and mtime misses when a rewrite kept both (a directory among them
   * is not: the compare went through it already).
   */
  async mirrorAll(onWalked?: (entries: number) => void, also: readonly string[] = []): Promise<string[]> {
    const diffs = this.#readable(
      await compareTrees(this.#source, this.#target, {
        missingDirsWhole: true,
        openTarget: true,
        onWalked,
        variants: Boolean(this.#variants),
      }),
    );
    // Whole directories the target lacks (every directory, on a first copy) are copied
    // into the temp directory and renamed into place once each: no per-file rename.
    const tops = topmost(diffs.filter((d) => d.kind === 'missing' && d.dir).map((d) => d.path));
    const topSet = new Set(tops);
    const under = (p: string) => {
      for (let i = p.indexOf('/'); i >= 0; i = p.indexOf('/', i + 1)) if (topSet.has(p.slice(0, i))) return true;
      return topSet.has(p);
    };
    let missed: string[] = [];
    for (const top of tops) {
      this.#changed.add(top);
      this.#changedDirs.add(top);
    }
    if (tops.length > 0) {
      await this.#openRoot();
      await mkdir(this.#tmpDir, { recursive: true });
      this.#syncfsAtEnd = true;
      // a copy with no index yet is derived whole (derive-copy.ts): once the clone has written
      // indexes, what it did not copy is named to the derive instead
      const indexed = this.#variants ? (await lstatOrNull(join(this.#target, META_DIR_NAME))) !== null : true;
      // the clone derives what it copies for the settings: a copy recording another selection records
      // none from here (copyPaths derives it whole, then records this one), or a clone cut short would
      // leave it recording the old one over variants of the new
      if (this.#variants && staleVariantSelectionSync(this.#target, this.#variants.settings) !== null)
        forgetVariantSelectionSync(this.#target);
      try {
        this.#recentUntrusted = true; // the clone makes every directory it copies
        const cloned = await this.#cloneDirectories(tops, onWalked);
        missed = cloned.missed;
        this.#cloneDerived = cloned.derived;
        // the clone derived each directory as it copied it: the derive after leaves them be
        for (const top of cloned.derived) {
          this.#changed.delete(top);
          this.#changedDirs.delete(top);
        }
        if (!indexed && cloned.derived.size > 0) await this.#nameTheRest(cloned.derived);
      } catch (err) {
        await this.clearTemp().catch(() => {});
        throw err;
      }
    }
    // what was not cloned (gone or changed kind meanwhile) is copied by path, as every other difference
    // (a directory among them was not walked below yet: the compare does not go into a
    // directory the target lacks or holds as another kind, so its walk counts here)
    await this.copyPaths(
      [...diffs.filter((d) => !under(d.path)).map((d) => d.path), ...missed, ...(await this.#filesOf(also, under))],
      undefined,
      onWalked,
    );
    return diffs.map((d) => d.path);
  }

  /**
   * Of `also` (paths a journal recorded), those the compare did not settle:
   * not below a directory the clone copied whole, nor a directory of master
   * (the compare went through it, or found it of another kind and copied it
   * as a difference; a journal records one as a whole, and a directory named
   * to `copyPaths` is compared again below, its entries counted twice into
   * what `onWalked` says master holds).
   */
  async #filesOf(also: readonly string[], under: (p: string) => boolean): Promise<string[]> {
    const out: string[] = [];
    // side by side, as the copy's own calls go: a journal may name many paths
    await forEachLimited(
      also.filter((p) => !under(p)),
      this.#concurrency,
      async (p) => {
        const st = await lstatOrNull(join(this.#source, p)).catch(() => null);
        if (!st?.isDirectory()) out.push(p);
      },
    );
    return out;
  }

  /**
   * Name to the derive every entry of the copy's root but `derived`: what a
   * derive of the whole copy would have looked at, besides what the clone
   * derived.
   */
  async #nameTheRest(derived: ReadonlySet<string>): Promise<void> {
    this.#derivesWhole = true;
    const present = new Set<string>();
    for (const e of await readdir(this.#target, { withFileTypes: true })) {
      present.add(e.name);
      if (isReservedRootName(e.name) || derived.has(e.name)) continue;
      this.#changed.add(e.name);
      if (e.isDirectory()) this.#changedDirs.add(e.name);
    }
    // and what the root's index records that is gone (a copy cut short may have removed it)
    for (const name of await rootRecordsGone(this.#target, present)) this.#changed.add(name);
  }

  /** What a derive of this copy is given besides its paths. */
  #deriveContext(variants: CopyVariants, setAside = false, cutShort = false): DeriveContext {
    return {
      slot: this.#target,
      other: variants.other,
      source: this.#source,
      settings: variants.settings,
      cache: variants.cache ?? null,
      indexesShared: this.#share !== undefined,
      ...(setAside ? { setAside: `${this.#tmpPrefix}.aside` } : {}),
      ...(cutShort ? { cutShort: true } : {}),
    };
  }

  /**
   * Copy whole directories the target lacks into the temp directory, in the
   * walk threads, then rename each into place. A few large directories are
   * cut into units (planUnits) so that every thread has work whatever the
   * tree's shape. Returns those that were not there to copy (gone, or no
   * longer a directory), and the tops the clone derived as it copied them
   * (all it placed whole, when the derive may take every thread).
   */
  async #cloneDirectories(
    tops: string[],
    onWalked?: (entries: number) => void,
  ): Promise<{ missed: string[]; derived: Set<string> }> {
    const destOfTop = new Map(tops.map((rel) => [rel, `${this.#tmpPrefix}.${this.#tmpCount++}`]));
    const topOf = (rel: string): string => {
      for (let p = rel; ; p = p.slice(0, Math.max(0, p.lastIndexOf('/')))) if (destOfTop.has(p)) return p;
    };
    const whole = (top: string): CloneUnit => ({
      rel: top,
      deep: true,
      dest: destOfTop.get(top) as string,
      // A whole top directory is renamed into place by the thread that copied it. Its parent
      // is in the target: the comparison found this directory missing there, not its parent.
      place: join(this.#target, top),
    });
    let units: CloneUnit[] = planUnits(this.#source, tops, WALK_THREADS).map((u) => {
      const top = topOf(u.rel);
      return u.rel === top && u.deep ? whole(top) : { ...u, dest: `${destOfTop.get(top)}${u.rel.slice(top.length)}` };
    });
    // A shallow unit copies into a directory made here, parents first, so its subunits can
    // start at once. One the temp directory cannot hold (a path too long) leaves its top
    // directory in one piece, whose thread leaves out and reports what cannot be placed.
    const wholeTops = new Set<string>();
    for (const u of units.filter((x) => !x.deep)) {
      const top = topOf(u.rel);
      if (wholeTops.has(top)) continue;
      try {
        await mkdir(u.dest, { mode: 0o700 });
      } catch (err) {
        if (!isUnplaceable(err)) throw err;
        wholeTops.add(top);
        await rm(destOfTop.get(top) as string, { recursive: true, force: true });
      }
    }
    if (wholeTops.size > 0)
      units = [...units.filter((x) => !wholeTops.has(topOf(x.rel))), ...[...wholeTops].map(whole)];
    const shallowRels = new Set(units.filter((u) => !u.deep).map((u) => u.rel));
    const modes = new Map<string, number>();
    // a whole top directory is renamed into its parent by its thread: a read-only parent is opened first
    for (const top of tops) await this.#dirs.open(dirname(join(this.#target, top)));
    const placed = new Set<string>();
    const cloned = emptyCloneResult();
    // the derive runs in the clone's threads, all of them: not when `--variant-threads` keeps the
    // compression to fewer (the derive after the clone keeps to them)
    const fused = this.#variants && this.#variants.settings.threads === 0 ? this.#variants : null;
    await walkPool.run<CloneUnit, CloneResult>(
      'clone',
      {
        source: this.#source,
        share: this.#share,
        // the mounted copy's variants are reused through its recent records, as the derive after reuses them
        derive: fused ? throughOtherRecords(this.#deriveContext(fused)) : undefined,
        indexed: this.#variants ? this.#target : undefined,
      } satisfies CloneContext,
      units,
      (parts) => {
        for (const part of parts) {
          addCloneResult(cloned, part);
          this.stats.files += part.files;
          this.stats.bytes += part.bytes;
          this.sharedFiles += part.shared;
          this.stats.dirs += part.dirs;
          if (part.own) modes.set(part.own.rel, part.own.mode);
          if (part.placed !== undefined) placed.add(part.placed);
          if (part.derive) {
            addDeriveStats(this.variantStats, part.derive.stats);
            if (part.derive.taken) this.cacheTaken.push(...part.derive.taken);
          }
        }
        this.#onProgress?.(this.stats);
        return true;
      },
      onWalked,
    );
    this.stats.skipped += cloned.skipped.length;
    this.skipped.push(...cloned.skipped);
    for (const rel of cloned.unreadable) this.#noteUnreadable(rel);
    // A top directory that was not there to copy, or one split into units of which one was
    // not, is copied by path instead (compared whole); so is any other unit not there.
    const missedTops = new Set(cloned.missed.filter((rel) => destOfTop.has(rel) || shallowRels.has(rel)).map(topOf));
    const missed = [...missedTops, ...cloned.missed.filter((rel) => !missedTops.has(topOf(rel)))];
    const skippedTops = new Set([...cloned.skipped, ...cloned.unreadable].filter((rel) => destOfTop.has(rel)));
    const placedTops = new Set<string>();
    for (const [rel, dest] of destOfTop) {
      if (missedTops.has(rel) || skippedTops.has(rel)) continue;
      placedTops.add(rel);
      const to = join(this.#target, rel);
      if (placed.has(rel)) {
        this.#knownDirs.add(to);
        this.#touchedDirs.add(dirname(to));
        continue;
      }
      await this.#ensureParents(rel);
      await this.#dirs.open(dirname(to));
      await rename(dest, to).catch(async (err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOTEMPTY' && err.code !== 'EEXIST' && err.code !== 'ENOTDIR') throw err;
        await this.#remove(to); // something appeared there meanwhile
        await rename(dest, to);
      });
      this.#knownDirs.add(to);
      this.#touchedDirs.add(dirname(to));
    }
    // each unit's own directory gets its mode once the copy is done: writable until everything is in
    for (const [rel, mode] of modes) if (placedTops.has(topOf(rel))) this.#dirs.setFinal(join(this.#target, rel), mode);
    // each top placed whole was derived as it was copied (a unit missed is copied by path, and derived then)
    const derived = new Set<string>();
    if (fused) for (const top of placedTops) if (!cloned.missed.some((m) => topOf(m) === top)) derived.add(top);
    return { missed, derived };
  }

  /**
   * Run `work` on the entry `rel`; if the target can never hold it (a name too
   * long for its file system), leave it out, count it and go on: one entry
   * must not fail every sync. False when it was left out.
   */
  async #unlessUnplaceable(rel: string, work: () => Promise<unknown>): Promise<boolean> {
    try {
      await work();
      return true;
    } catch (err) {
      if (!isUnplaceable(err)) throw err;
      this.skipped.push(rel);
      this.stats.skipped++;
      return false;
    }
  }

  /** Remove the copy's content index: made variants go as extra entries, and no stale record is left. */
  async #dropIndex(): Promise<void> {
    const meta = join(this.#target, META_DIR_NAME);
    if (!(await lstatOrNull(meta))) return;
    // opened before it is read, not only before its removal: a directory of it whose mode denies its owner
    // (drift) would stop every sync from here on, where it stopped none while the meta went unread
    await unlockTree(meta);
    await this.#dropRecordedVariants();
    await rm(meta, { recursive: true, force: true });
    this.#touchedDirs.add(this.#target);
  }

  /**
   * Variants turned off: before the copy's records go, so do the variants
   * they name as made, in every directory (not only beside what this copy
   * changes). Without the records a reader cannot tell a made `app.js.br`
   * from a file of master's, and would serve it under its own name. Each
   * goes only while it is the file its record names (inode and size), master
   * has no file of that name, and its directory is one of the copy's own (an
   * index may name a directory that drift made a link since). A recent
   * record names a path whose index record is older: both are looked at, as
   * only what is still as recorded goes.
   */
  async #dropRecordedVariants(): Promise<void> {
    const realDir = realDirectories(this.#target);
    const drop = async (dir: string, name: string, record: FileRecord) => {
      for (const [encoding, variant] of Object.entries(record.variants ?? {}) as [VariantEncoding, VariantRecord][]) {
        if (!variant.made) continue;
        const rel = `${dir === '' ? '' : `${dir}/`}${name}${VARIANT_SUFFIX[encoding]}`;
        if (isReservedPath(dir) || !(await realDir(dir))) return;
        const there = await lstatOrNull(join(this.#target, rel)).catch(() => null);
        if (!there?.isFile() || !variantMatches(variant, there)) continue;
        // master's own file of that name stays (one master does not let this process see, too)
        if (await lstatOrNull(join(this.#source, rel)).catch(() => true)) continue;
        await this.#removeFile(join(this.#target, rel));
      }
    };
    await forEachDirectoryIndex(this.#target, this.#concurrency, async (index) => {
      for (const [name, record] of Object.entries(index.files)) await drop(index.dir, name, record);
    });
    // records no one may read (a file whose mode denies its owner) are no word: a server could not read them either
    const recent = await readRecentRecords(this.#target).catch((err: unknown) => {
      if (isDenied(err)) return 'torn' as const;
      throw err;
    });
    if (recent === 'torn') return; // the indexes' word alone, then
    await forEachLimited(Object.entries(recent), this.#concurrency, async ([path, record]) => {
      const cut = path.lastIndexOf('/');
      if (record) await drop(cut === -1 ? '' : path.slice(0, cut), path.slice(cut + 1), record);
    });
  }

  /**
   * Remove the file at `path`, found there a moment ago (a variant its record
   * names): an unlink, so a directory put there since is never taken with
   * what is below it; and none of `#remove`'s care for directories below the
   * path, which looks at every directory the copy opened so far, each time
   * (variants across a whole tree would cost their number times that).
   */
  async #removeFile(path: string): Promise<void> {
    try {
      await this.#dirs.open(dirname(path));
      await unlink(path);
    } catch (err) {
      // gone, or no file now (EISDIR); or in a directory this process may not open or write (drift:
      // another owner, an attribute): left there, as no sync that does not write there fails for it
      if (isNothingThere(err) || isDenied(err) || (err as NodeJS.ErrnoException).code === 'EISDIR') return;
      throw err;
    }
    this.#touchedDirs.add(dirname(path));
    this.stats.deleted++;
  }

  /**
   * Without variants, those made beside a file this copy changed go with it:
   * nginx's `gzip_static` would serve one of the old content. (A directory
   * changed is compared whole, where made variants are extra entries.)
   */
  async #dropMadeVariants(): Promise<void> {
    const paths = [...this.#changed].filter((p) => !this.#changedDirs.has(p));
    this.#changed.clear();
    this.#changedDirs.clear();
    await forEachLimited(paths, this.#concurrency, async (rel) => {
      for (const suffix of Object.values(VARIANT_SUFFIX)) {
        const there = await lstatOrNull(join(this.#target, rel + suffix));
        if (!there?.isFile()) continue;
        // master's own sibling stays (one master does not let this process see is left too)
        if (await lstatOrNull(join(this.#source, rel + suffix)).catch(() => true)) continue;
        await this.#remove(join(this.#target, rel + suffix));
      }
    });
  }

  /**
   * Bring the variants and the content index up to date for what this copy
   * changed (derive-copy.ts), before the copy is made durable: what it writes
   * is synced with the copy's own files (`#finish`).
   */
  async #derive(variants: CopyVariants): Promise<void> {
    // what it replaces waits in the temp directory with the copy's own replaced files (clearTemp);
    // not for a derive of the whole copy (after a copy cut short, or of one with no index yet),
    // which may remake every variant however few paths name it: it frees as it goes
    const whole = this.#derivesWhole;
    this.#derivesWhole = false;
    const cutShort = this.#derivesCutShort;
    this.#derivesCutShort = false;
    const reselect = this.#derivesReselect;
    this.#derivesReselect = false;
    const setAside =
      this.#keepReplaced &&
      !whole &&
      this.#changed.size <= SET_ASIDE_PATHS &&
      // blocking: the placed files' fsyncs hold libuv's pool now, and a call through it waits for them
      lstatOrNullSync(join(this.#target, META_DIR_NAME)) !== null;
    // the copy's recent records still hold unless it made a directory (whose index it dropped: a
    // record below it may name an inode number a new file took) or derives whole
    const trusted = !whole && !this.#recentUntrusted;
    this.#recentUntrusted = false;
    const done = await deriveCopy(
      { ...this.#deriveContext(variants, setAside, cutShort), ...(reselect ? { reselect: true } : {}) },
      this.#changed,
      this.#changedDirs,
      this.#stagedHashes,
      // a small sync keeps its records in the recent ones (deriveCopy says when it is small enough)
      { collect: trusted, trusted },
    );
    this.#changed.clear();
    this.#changedDirs.clear();
    this.#stagedHashes.clear();
    this.#keepRecords = done.keepRecords ?? null;
    this.#derived(done);
  }

  /** Take in what a derive did: its stats, the cache entries it took, the variants it wrote and their directories (to make durable). */
  #derived(done: DeriveResult): void {
    addDeriveStats(this.variantStats, done.stats);
    if (done.taken) this.cacheTaken.push(...done.taken);
    if (this.#durable && !this.#syncfsAtEnd) this.#placedUnsynced.push(...done.written);
    for (const d of done.dirs) this.#touchedDirs.add(d);
  }

  /**
   * Flush the data of the files placed so far (none when the copy ends with
   * one syncfs, or is not durable); their directories are left to #finish.
   */
  async #syncPlacedFiles(): Promise<void> {
    if (!this.#durable || this.#syncfsAtEnd) return;
    const files = this.#placedUnsynced.splice(0);
    await Promise.all(files.map((f) => this.#limiter.run(() => fsyncFile(f))));
  }

  async #finish(): Promise<void> {
    this.stats.unreadable = this.unreadable.length;
    // every directory's own mode, now that nothing more lands in it
    for (const dir of await this.#dirs.settle()) this.#touchedDirs.add(dir);
    // the derive's records are written while the fsyncs below run (they need none: recent-records.ts),
    // through the temp directory: before it goes, when the copy keeps nothing there
    let keep = this.#keepRecords;
    this.#keepRecords = null;
    if (!this.#keepReplaced) {
      keep?.();
      keep = null;
      await rm(this.#tmpDir, { recursive: true, force: true });
    }
    let round: Promise<unknown> = Promise.resolve();
    if (this.#durable && this.#syncfsAtEnd) {
      keep?.();
      round = syncFileSystem(this.#target);
    } else if (this.#durable) {
      // Staged files were renamed into place before their fsync: the slot is marked mid-copy
      // until this returns, so a crash before it leaves a slot that is copied again, never
      // mounted. Their fsyncs and the directories' then run in one round, not two in a row.
      const files = this.#placedUnsynced.splice(0);
      round = Promise.all([
        ...[...this.#touchedDirs].map((d) => this.#limiter.run(() => fsyncDir(d).catch(() => {}))),
        ...files.map((f) => this.#limiter.run(() => fsyncFile(f))),
      ]);
      try {
        keep?.();
      } catch (err) {
        await round.catch(() => {});
        throw err;
      }
    } else keep?.();
    await round;
    this.#touchedDirs.clear();
  }

  /** Make `rel` in the target match the source; true when it is a directory there. */
  async #matchPath(rel: string): Promise<boolean> {
    let isDir = false;
    await this.#unlessUnplaceable(rel, async () => {
      isDir = await this.#placePath(rel);
    });
    return isDir;
  }

  async #placePath(rel: string): Promise<boolean> {
    const dst = join(this.#target, rel);
    if (await this.#placeStaged(rel, dst)) return false;
    // An entry swapped for another kind between the look and the copy is looked at again.
    for (let attempt = 0; attempt < 3; attempt++) {
      const src = await this.#lookAtSource(rel);
      if (src === 'denied') return false;
      if (src === null) {
        if (await lstatOrNull(dst)) await this.#remove(dst);
        return false;
      }
      if (!src.isFile() && !src.isSymbolicLink() && !src.isDirectory()) {
        // sockets, fifos, devices: never published, so nothing is there in the copy
        if (await lstatOrNull(dst)) await this.#remove(dst);
        return false;
      }
      // an entry reached through a link of master's (a directory it made a link since) is none of
      // its own: nothing is placed, and no parent made a directory, where the link's entry goes
      if (src.isDirectory()) {
        if (!(await (await this.#tree()).isDirectory(rel))) continue;
        await this.#ensureParents(rel);
        await this.#placeDirectory(rel, src);
        return true;
      }
      const tmp = `${this.#tmpPrefix}.${this.#tmpCount++}`;
      const copied = await this.#copyEntry(rel, tmp);
      if (copied === 'denied') return false;
      if (!copied) continue;
      await this.#ensureParents(rel);
      await this.#replaceWith(tmp, dst);
      return false;
    }
    return false; // still changing under us: the watcher reports it again, and the next sync copies it
  }

  /**
   * The source entry at `rel`, or null when there is none; 'denied' (and
   * noted) when this process may not read it: a parent it may not search,
   * or a directory it may not list. The target's entry is then left as it is.
   */
  async #lookAtSource(rel: string): Promise<Stats | null | 'denied'> {
    const path = join(this.#source, rel);
    try {
      const st = await lstatOrNull(path);
      if (st?.isDirectory()) await this.#mayList(path);
      return st;
    } catch (err) {
      if (!isDenied(err)) throw err;
      this.#noteUnreadable(rel);
      return 'denied';
    }
  }

  /** Throws (EACCES) when this process may not list the directory at `path`; one gone meanwhile is not an error here. */
  async #mayList(path: string): Promise<void> {
    try {
      await access(path, constants.R_OK | constants.X_OK);
    } catch (err) {
      // gone or swapped meanwhile (a writer racing the copy): the walk below finds out
      if (!isGone(err)) throw err;
    }
  }

  /**
   * Rename the staged copy of `rel` into place, if there is one, its parents
   * made directories first (a link there is replaced, never followed). False
   * when there is none, or when its parent went away meanwhile: then `rel` is
   * looked at again by path.
   */
  async #placeStaged(rel: string, dst: string): Promise<boolean> {
    const staged = this.#staged.get(rel);
    if (!staged) return false;
    this.#staged.delete(rel);
    try {
      await this.#ensureParents(rel);
      // the file replaced is kept if its bytes fit (not the staged file's: one linked from the copy
      // shared with is 0 bytes, and would keep every file it replaces, whatever the budget)
      const budget = this.#keepBudget;
      const old = budget && budget[0] > 0n ? await lstatOrNull(dst) : null;
      if (budget && old && !old.isDirectory() && drawKeep(budget, old.size)) {
        if (!(await this.#keepAside(dst))) returnKeep(budget, old.size);
      }
      await this.#replaceWith(staged.tmp, dst);
    } catch (err) {
      if (!isNothingThere(err)) throw err;
      return false; // the temp file is removed with the temp directory
    }
    if (this.#durable && !this.#syncfsAtEnd) this.#placedUnsynced.push(dst);
    if (staged.shared) this.sharedFiles++;
    this.stats.bytes += staged.bytes;
    this.stats.files++;
    this.#onProgress?.(this.stats);
    return true;
  }

  /** Account for the staged file a walk thread renamed into place at `rel` (`bytes` long), the file it replaced kept at `kept`. */
  #placedByThread(rel: string, bytes: number, kept: string | null): void {
    const dst = join(this.#target, rel);
    if (kept !== null) this.#replaced.push({ path: kept, tree: false }); // its bytes drawn by the thread
    this.#touchedDirs.add(dirname(dst));
    if (this.#durable && !this.#syncfsAtEnd) this.#placedUnsynced.push(dst);
    this.stats.bytes += bytes;
    this.stats.files++;
    this.#onProgress?.(this.stats);
  }

  /**
   * Copy the file or link at source `rel` to the new path `to`, through a
   * descriptor (never by path after a check). False when there is no file or
   * link there now reached without following a link.
   */
  async #copyEntry(rel: string, to: string): Promise<boolean | 'denied'> {
    const tree = await this.#tree();
    let file: Awaited<ReturnType<SourceTree['openFile']>>;
    try {
      file = await tree.openFile(rel);
    } catch (err) {
      if (!isDenied(err)) throw err;
      this.#noteUnreadable(rel); // a file whose mode shuts this process out
      return 'denied';
    }
    if (!file) {
      const target = await tree.readLink(rel);
      if (target === null) return false;
      await symlink(target, to);
      this.stats.files++;
      this.#onProgress?.(this.stats);
      return true;
    }
    try {
      if (this.#share !== undefined && (await shareFile(this.#share, rel, file.handle, file.stat, to))) {
        this.sharedFiles++;
        this.stats.files++;
        this.#onProgress?.(this.stats);
        return true;
      }
      // libuv's copyfile also gives the copy the source's mode; the path names the opened file
      await copyFile(descriptorPath(file.handle), to);
    } finally {
      await file.handle.close();
    }
    // copyfile gave it the source's whole mode: setuid, setgid and sticky bits are not handed on
    const mode = treeMode(file.stat.mode, false);
    if ((file.stat.mode & 0o7777) !== mode) await chmod(to, mode);
    await utimes(to, msInside(file.stat.atimeMs), msInside(file.stat.mtimeMs));
    if (this.#durable && !this.#syncfsAtEnd) {
      const handle = await open(to, 'r');
      await handle.sync().finally(() => handle.close());
    }
    this.stats.bytes += file.stat.size;
    this.stats.files++;
    this.#onProgress?.(this.stats);
    return true;
  }

  /** Rename a copied entry over the target path; a directory in the way goes first. */
  async #replaceWith(tmp: string, to: string): Promise<void> {
    await this.#dirs.open(dirname(to));
    await rename(tmp, to).catch(async (err: NodeJS.ErrnoException) => {
      // a directory where the file goes: rename cannot replace it, so it goes first
      if (err.code !== 'EISDIR' && err.code !== 'ENOTEMPTY' && err.code !== 'EEXIST') throw err;
      await this.#remove(to);
      await rename(tmp, to);
    });
    this.#touchedDirs.add(dirname(to));
  }

  /** Create missing parents in the target, replacing any non-directory in the way. */
  async #ensureParents(rel: string): Promise<void> {
    const parts = rel.split('/').slice(0, -1);
    let dir = this.#target;
    for (const [i, part] of parts.entries()) {
      dir = join(dir, part);
      if (this.#knownDirs.has(dir)) continue;
      const st = await lstatOrNull(dir);
      if (st?.isDirectory()) {
        this.#knownDirs.add(dir);
        continue;
      }
      if (st) await this.#remove(dir);
      await this.#dirs.open(dirname(dir));
      const made = await mkdir(dir).then(
        () => true,
        (err: NodeJS.ErrnoException) => {
          if (err.code !== 'EEXIST') throw err;
          return false;
        },
      );
      if (made) await this.#madeAnew(parts.slice(0, i + 1).join('/'));
      this.#knownDirs.add(dir);
      this.#touchedDirs.add(dirname(dir));
      this.stats.dirs++;
    }
  }

  /**
   * A directory the copy has just made at `rel`: it starts with no content
   * index (one a removed directory left at its path names inode numbers new
   * files take again), and the copy's recent records are not trusted by its
   * next derive, for the same reason.
   */
  async #madeAnew(rel: string): Promise<void> {
    if (!this.#variants) return;
    this.#recentUntrusted = true;
    await dropDirectoryIndex(this.#target, rel);
  }

  /**
   * Make the target's entry at `rel` a directory with the source's mode (its
   * content is compared after). A mode that denies its owner write is given
   * at the end of the copy (`#finish`): until then the directory stays
   * writable, for what is still to land in it.
   */
  async #placeDirectory(rel: string, src: Stats): Promise<void> {
    const to = join(this.#target, rel);
    const dst = await lstatOrNull(to);
    if (dst && !dst.isDirectory()) await this.#remove(to);
    const final = treeMode(src.mode, true);
    const mode = fillable(final) ? final : fillingMode(final);
    // set again at the end in any case: an earlier write into it may have opened it, to give back its old mode
    this.#dirs.setFinal(to, final);
    if (!dst?.isDirectory()) {
      await this.#dirs.open(dirname(to));
      // EEXIST: the same path listed twice
      const made = await mkdir(to, { mode }).then(
        () => true,
        (err: NodeJS.ErrnoException) => {
          if (err.code !== 'EEXIST') throw err;
          return false;
        },
      );
      if (made) {
        this.#touchedDirs.add(dirname(to));
        this.stats.dirs++;
        await this.#madeAnew(rel);
      }
      await chmod(to, mode); // mkdir's mode is cut by the umask
    } else if ((dst.mode & 0o7777) !== mode) {
      await chmod(to, mode);
    }
    this.#knownDirs.add(to);
  }

  /**
   * Keep the file at `path`, about to be replaced, linked in the temp
   * directory: the rename then frees nothing. False when there is nothing to
   * keep (no file there, or a directory).
   */
  async #keepAside(path: string): Promise<boolean> {
    const kept = await this.#replacedName().catch(() => null); // keeping is never worth failing a copy for
    if (kept === null) return false;
    return link(path, kept).then(
      () => {
        this.#replaced.push({ path: kept, tree: false });
        return true;
      },
      () => false,
    );
  }

  /** A new name in the temp directory for an entry the copy replaces or deletes (`keepReplacedBytes`). */
  async #replacedName(): Promise<string> {
    await this.#replacedDirReady();
    return join(this.#replacedDir, String(this.#replacedCount++));
  }

  /** Make the directory of what the copy replaces and keeps, if not yet made. */
  async #replacedDirReady(): Promise<void> {
    if (!this.#replacedDirMade) {
      await mkdir(this.#replacedDir, { recursive: true });
      this.#replacedDirMade = true;
    }
  }

  async #remove(path: string): Promise<void> {
    await this.#dirs.open(dirname(path));
    // a read-only directory anywhere in a tree stops its removal, and its move to another parent
    await unlockTree(path);
    this.#dirs.forget(path);
    // moved aside whole when kept (one rename, even for a directory), else removed here
    const kept = this.#keepReplaced ? await this.#replacedName().catch(() => null) : null;
    const moved =
      kept !== null &&
      (await rename(path, kept).then(
        () => {
          this.#replaced.push({ path: kept, tree: true });
          return true;
        },
        (err: NodeJS.ErrnoException) => err.code === 'ENOENT',
      ));
    if (!moved) await rm(path, { recursive: true, force: true });
    for (const known of this.#knownDirs)
      if (known === path || known.startsWith(`${path}/`)) this.#knownDirs.delete(known);
    this.#touchedDirs.add(dirname(path));
    this.stats.deleted++;
  }
}
