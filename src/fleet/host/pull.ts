import type { PlacedFile } from '../../tree/manifest-entry.js';
import { createHash, randomBytes } from 'node:crypto';
import { lstat, lutimes, mkdir, open, readdir, rename, rm, symlink, utimes, unlink } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import { dirname, join } from 'node:path';
import { lstatOrNull } from '../../core/lstat-or-null.js';
import { msInside } from '../../tree/copy-times.js';
import { PER_FILE_SYNC_LIMIT, syncFileSystems } from '../../tree/tree-copy.js';
import { walkPool } from '../../tree/walk-pool.js';
import { deriveCopy } from '../../tree/derive-copy.js';
import { TREE_DEFAULTS } from '../../tree/tree-defaults.js';
import { fsyncDir } from '../../store/atomic-write.js';
import { MirrorswapError } from '../../core/errors.js';
import { META_DIR_NAME, TEMP_DIR_NAME, isReservedRootName } from '../../store/store-layout.js';
import { dropDirectoryIndex, rootRecordsGone } from '../../store/content-index.js';
import { unlockTree } from '../../tree/tree-mode.js';
import { WritableDirs } from '../../tree/writable-dirs.js';
import { removeUnnamable } from './unnamable.js';
import type { ManifestEntry } from '../../tree/manifest.js';
import { inThread, walkIntoRuns } from '../../tree/manifest-file.js';
import type { DeltaCounts, DeltaJob, DeltaResult } from '../../tree/manifest-delta.js';
import { entryOf, keyOf, typeOfDeltaLine } from '../../tree/manifest-line.js';
import { LineCursor } from '../../tree/line-cursor.js';
import { MAX_PATHS_PER_REQUEST } from '../fleet-files.js';
import { linkFromCopy } from './pull-share.js';
import type { PullProgress } from './pull-progress.js';
import { pathPrint } from '../../core/path-print.js';
import { receiveManifest } from './manifest-receive.js';
import { PULL_LIMITS, type PullLimits } from '../../tree/fleet-limits.js';
import { checkFrameHeaderLength, Pace, parseFrameHeader, refuse } from './pull-checks.js';

export interface PullOptions {
  /** The coordinator's base URL. */
  from: string;
  token: string;
  snapshot: string;
  /** The snapshot the slot holds complete, if known: then only what changed since is asked for. */
  base: string | null;
  /** The slot's root on this host. */
  into: string;
  /** Make it durable (syncfs) before returning. */
  durable: boolean;
  timeoutMs: number;
  /** Abandons the pull (the slot stays marked unfinished). */
  signal?: AbortSignal;
  /** Hears the pull's counts once, as the object it keeps up to date (for status while it runs). */
  onStart?: (stats: Readonly<PullStats>) => void;
  /** Bounds on what the coordinator may send (default `PULL_LIMITS`; tests lower them). */
  limits?: Partial<PullLimits>;
  /**
   * Bring the slot's content index up to date for what the pull changed
   * (default true): each file's hash, and the variants the snapshot holds
   * beside it (the agent made them in its copy) that decode to it. Nothing
   * is compressed on a host.
   */
  contentIndex?: boolean;
  /** Fetch the files from peers that hold the snapshot, the coordinator the fallback (absent: from the coordinator). */
  peers?: PeerPull;
  /**
   * Told which files the pull fetches, and each as it is placed, so that
   * this host can serve them to its own peers before the pull ends
   * (`PeerServer.share`). Files are then placed in smaller batches.
   */
  progress?: PullProgress;
  /** Awaited before each files request, once the pull has a source for them (the host then says it shares what it pulls). */
  onSource?: () => Promise<void>;
  /**
   * Another copy of this host (the mounted one, on a host keeping releases):
   * a file it holds with the same content, mode and time is hard-linked from
   * it, not fetched (`pull-share.ts`).
   */
  share?: string;
}

/**
 * Where a pull finds peers: hosts that hold the snapshot whole and serve
 * its files. The manifest always comes from the coordinator; a peer's
 * answer is checked against it exactly as the coordinator's is, and each
 * file must have the manifest's SHA-256 (one without is fetched from the
 * coordinator), so a peer can cost a retry, never a wrong byte.
 */
/** Why a pull passes a peer over: it failed an answer (for the rest of the pull), or it said it was busy (a moment). */
export type PeerAvoided = 'failed' | 'busy' | null;

export interface PeerPull {
  /**
   * A peer's base URL to fetch from now, one `avoid` does not name, waiting
   * for one to hold the snapshot if need be; null once the pull should fetch
   * from the coordinator instead (none came within the wait, or the seeds
   * failed). Each call waits for a peer within what is left of one bound,
   * counted over the whole pull.
   */
  pick(avoid: (url: string) => PeerAvoided, signal?: AbortSignal): Promise<string | null>;
  /** The head of a peer's answer within this, and no silence longer. */
  timeoutMs: number;
  /** The slowest a peer may send, past a grace of `timeoutMs` (`Pace`). */
  minBytesPerSecond: number;
  /** Failed answers from peers (refused, cut, late, damaged: not busy) before the rest comes from the coordinator. */
  maxFailures: number;
  /** Hears each failed answer (the pull goes on with another peer, or the coordinator). */
  onFailure?: (peer: string, err: Error) => void;
  /**
   * Whether `url`, just picked, is a peer still pulling the snapshot (it
   * serves each file once placed): its answers may then end early after
   * whole frames, and its waits between files are not its pace. Absent:
   * none is.
   */
  sharing?: (url: string) => boolean;
  /**
   * Hears the time a peer still pulling made this host wait for files it had
   * not placed yet (a whole answer holding none of them, or the waits between
   * frames): it counts as waiting for a peer to hold them, within the bound
   * `pick` keeps over the whole pull.
   */
  waited?: (ms: number) => void;
}

export interface PullStats {
  files: number;
  bytes: number;
  removed: number;
  /** Bytes received, manifests included: what the coordinator sent. */
  received: number;
  /** Whether the whole manifest was compared with the slot (no base, or the coordinator forgot it). */
  full: boolean;
  /** The files and their bytes to fetch in all, once the manifest was compared (0 until then). */
  totalFiles: number;
  totalBytes: number;
  /** Of `received`: what came from the coordinator (manifests included), and from peers. */
  fromCoordinator: number;
  fromPeers: number;
  /** Answers from peers that failed (each cost a retry elsewhere), and that said the peer was busy or held none of the files yet. */
  peerFailures: number;
  peerBusy: number;
  /** Files hard-linked from another copy of this host (`PullOptions.share`), not fetched (not in `files` nor `bytes`). */
  linked: number;
}

/** Largest answer one files request asks for, in content bytes. */
const BATCH_BYTES = 32 * 1024 * 1024;

/**
 * Make the tree at `into` the coordinator's snapshot: ask what changed since
 * the snapshot it holds (or the whole manifest, compared with the slot's own
 * files when it holds none known), remove what went, fetch what is new or
 * changed, each file written beside the tree, checked (size, SHA-256) and
 * renamed into place with its mode and time; directories last. Never writes
 * a file in place, never follows a link: every change, removals included,
 * is made in a directory checked to be a real directory of the slot
 * (`ParentCheck`). A directory whose mode denies its owner write is opened
 * for the pull and given its mode back at the end (`WritableDirs`). What the
 * coordinator sends is checked first (`manifest-receive.ts`,
 * `pull-checks.ts`): its bounds, a delta only as the answer to the one asked
 * for, modes masked. The caller marks the slot unfinished first and complete
 * after.
 *
 * The manifest and the delta worked out from it live on disk, in the slot's
 * temp directory, and are read a line at a time: the pull's memory does not
 * grow with the tree (docs/FLEET.md, "A host's side"), only with the directories it
 * changes and, at 12 bytes a file, with the files it places
 * (`PullProgress`).
 */
export async function pullSnapshot(opts: PullOptions): Promise<PullStats> {
  const stats: PullStats = {
    files: 0,
    bytes: 0,
    removed: 0,
    received: 0,
    full: false,
    totalFiles: 0,
    totalBytes: 0,
    fromCoordinator: 0,
    fromPeers: 0,
    peerFailures: 0,
    peerBusy: 0,
    linked: 0,
  };
  opts.onStart?.(stats);
  const limits: Readonly<PullLimits> = { ...PULL_LIMITS, ...opts.limits };
  const tmp = join(opts.into, TEMP_DIR_NAME);
  const work = join(tmp, 'manifest');
  const dirModes = new WritableDirs(opts.into);
  try {
    // the slot's root too may deny its owner write (drift): opened before the temp directory is made
    await dirModes.open(opts.into);
    // what was left there (a read-only directory anywhere in it would stop its removal, and every pull)
    await unlockTree(tmp);
    await rm(tmp, { recursive: true, force: true });
    await mkdir(tmp, { recursive: true });
    await mkdir(work, { mode: 0o700 });
    // A slot with no content index yet is indexed whole, and a delta answer carries the made marks of
    // its own entries only: the whole answer is asked for, so that no unchanged variant of the agent's
    // is recorded as master's own (and served by name)
    const base =
      opts.contentIndex !== false && (await lstatOrNull(join(opts.into, META_DIR_NAME))) === null ? null : opts.base;
    const query = new URLSearchParams({ snapshot: opts.snapshot, ...(base ? { since: base } : {}) });
    const res = await request(opts, `/v1/fleet/manifest?${query}`);
    const pace = new Pace(opts.timeoutMs, limits.minBytesPerSecond);
    const answer = await receiveManifest(res, work, opts.snapshot, base, limits, pace);
    stats.received += answer.bytes;
    stats.fromCoordinator += answer.bytes;
    stats.full = answer.base === null;
    const delta: DeltaFiles = {
      changed: join(work, 'delta-changed'),
      removed: join(work, 'delta-removed'),
      marked: join(work, 'delta-marked'),
    };
    const counts = await inThread<DeltaJob, DeltaResult>('manifest-delta', {
      root: opts.into,
      changedRuns: answer.changedRuns,
      removedRuns: answer.removedRuns,
      // what the slot holds, compared with the whole manifest
      localRuns: answer.base === null ? await walkSlot(opts.into, join(work, 'local')) : null,
      changedFile: delta.changed,
      removedFile: delta.removed,
      markedFile: delta.marked,
    });
    if ('twice' in counts) throw refuse(`${counts.twice} twice in one manifest`);
    for (const run of [...answer.changedRuns, ...answer.removedRuns]) await rm(run, { force: true });
    await rm(join(work, 'local'), { recursive: true, force: true });
    return await applyDelta(opts, delta, counts, stats, limits, dirModes);
  } catch (err) {
    // the answer's runs and the delta (up to four times the answer's bytes) are not left in the slot
    await rm(work, { recursive: true, force: true }).catch(() => {});
    await dirModes.settle().catch(() => {}); // modes given back; the slot stays marked unfinished
    throw err;
  }
}

/** The delta of a pull, on disk (`manifest-delta.ts`). */
interface DeltaFiles {
  /** `key\tentry` lines, parents first. */
  changed: string;
  /** `key` lines. */
  removed: string;
  /** A whole pull's: `key` lines of the files marked made that the slot held as they are (`DeltaJob.markedFile`). */
  marked: string;
}

/**
 * The slot's walk in sorted runs in `dir`. On a failure, the drift that
 * stops it is undone and the walk made again: a directory whose mode shuts
 * its owner out is opened, and an entry whose name is not UTF-8 (no
 * snapshot holds one, and a walk by string cannot look at it) is removed.
 */
async function walkSlot(root: string, dir: string): Promise<string[]> {
  const walk = async () => {
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { mode: 0o700 });
    return walkIntoRuns(root, dir, LOCAL_UNITS_PER_RUN);
  };
  try {
    return await walk().catch(async () => {
      await unlockTree(root);
      // its own failure is not the one to report: the walk's again, if it fails again
      await removeUnnamable(root).catch(() => 0);
      return walk();
    });
  } catch (err) {
    throw new MirrorswapError('FLEET_MANIFEST', `cannot read ${root}: ${(err as Error).message}`, { cause: err });
  }
}

/** Walk units of the slot per sorted run, as the coordinator's manifests (`ManifestSizing`). */
const LOCAL_UNITS_PER_RUN = 8;

/** The lines of `file`, a chunk of it read at a time. */
function* linesOf(file: string): Generator<string> {
  const cursor = new LineCursor(file);
  try {
    for (let line = cursor.line; line !== null; cursor.next(), line = cursor.line) yield line;
  } finally {
    cursor.close();
  }
}

/** The entries of the delta of the types `wanted` takes, parents first (the others are not parsed). */
function* entriesOf(delta: DeltaFiles, wanted: (type: ManifestEntry['type']) => boolean): Generator<ManifestEntry> {
  for (const line of linesOf(delta.changed))
    if (wanted(typeOfDeltaLine(line))) yield JSON.parse(entryOf(line)) as ManifestEntry;
}

/** The paths of the delta's removals. */
function* removedOf(delta: DeltaFiles): Generator<string> {
  for (const line of linesOf(delta.removed)) yield JSON.parse(line) as string;
}

async function applyDelta(
  opts: PullOptions,
  delta: DeltaFiles,
  counts: DeltaCounts,
  stats: PullStats,
  limits: Readonly<PullLimits>,
  dirModes: WritableDirs,
): Promise<PullStats> {
  const fsyncEach = opts.durable && counts.changed + counts.removed <= PER_FILE_SYNC_LIMIT; // as the agent's copies: a swap of a few files must not flush a whole disk
  /** Directories whose entries changed: fsynced at the end when files are fsynced one by one (few, then). */
  const touched = new Set<string>();
  const touch = (path: string) => {
    if (!fsyncEach) return;
    const cut = path.lastIndexOf('/');
    touched.add(cut > 0 ? path.slice(0, cut) : '');
  };
  const tmp = join(opts.into, TEMP_DIR_NAME);
  const parents = new ParentCheck(opts.into);
  /** Check that `path`'s parents are real directories of the slot, and open its own for writing. */
  const writable = async (path: string) => {
    await parents.check(path);
    await dirModes.open(dirname(join(opts.into, path)));
  };

  // 1. what went; a path whose type changed goes too. A removal is a write: made only in a real
  // directory of the slot, and of the entry itself, never where a link points. Every removal's
  // parents are checked before the first is made: one through a link refuses the pull with
  // nothing removed. A directory goes with what is under it (which then finds its parent gone).
  for (const path of removedOf(delta)) await parents.exists(path);
  for (const path of removedOf(delta)) {
    touch(path);
    if (!(await parents.exists(path))) continue; // a parent already gone: nothing there to remove
    await writable(path);
    const abs = join(opts.into, path);
    await unlockTree(abs); // a read-only directory anywhere below would stop the removal
    dirModes.forget(abs);
    // every known directory is looked at again: this one may have been known under another
    // spelling (a case-folding file system), and a link may be put where it was
    parents.forgetAll();
    await rm(abs, { recursive: true, force: true });
    stats.removed++;
  }
  // 2. directories and links, in one pass, parents first (the delta is sorted): a directory made,
  // its mode and time given last; a link by temp + rename. Held: the directories changed, a few
  // hundred bytes each
  const dirs: ManifestEntry[] = [];
  const makeDirectory = async (d: ManifestEntry) => {
    if (fsyncEach) touched.add(d.path); // the directory itself too: its mode, its time, its entries
    const abs = join(opts.into, d.path);
    // whatever else is there goes: a file or link the slot drifted to, or a FIFO, socket or device
    // (no walk lists those, so no comparison would ever remove one, and every pull would fail here)
    const there = await lstat(abs).catch(() => null);
    if (there && !there.isDirectory()) {
      await unlink(abs);
      stats.removed++;
    }
    const made = await mkdir(abs, { mode: 0o700 }).then(
      () => true,
      (err: NodeJS.ErrnoException) => {
        if (err.code !== 'EEXIST') throw err;
        return false;
      },
    );
    await parents.isDirectory(d.path);
    // a new directory has no record yet: the index a removed one left at its path names inode
    // numbers that the files pulled into it take again
    if (made && opts.contentIndex !== false) await dropDirectoryIndex(opts.into, d.path);
    dirModes.setFinal(abs, d.mode);
    dirs.push(d);
  };
  const placeLink = async (l: ManifestEntry) => {
    const temp = join(tmp, randomBytes(8).toString('hex'));
    await symlink(l.target ?? '', temp);
    await lutimes(temp, msInside(l.mtimeMs), msInside(l.mtimeMs)).catch(() => {});
    await rename(temp, join(opts.into, l.path));
  };
  for (const e of entriesOf(delta, (type) => type !== 'file')) {
    touch(e.path);
    await writable(e.path);
    await (e.type === 'dir' ? makeDirectory(e) : placeLink(e));
  }
  // 4. files, in batches; from peers when asked (`PeerPull`): only files the manifest names a SHA-256 for
  stats.totalFiles = counts.files;
  stats.totalBytes = counts.fileBytes;
  if (opts.progress) {
    const prints = new Float64Array(counts.files);
    let n = 0;
    for (const line of linesOf(delta.changed))
      if (typeOfDeltaLine(line) === 'file') prints[n++] = pathPrint(JSON.parse(keyOf(line)) as string);
    opts.progress.begin(prints.subarray(0, n));
  }
  const sources = new Sources(opts, limits, stats);
  for (const files of batchesOf(entriesOf(delta, (type) => type === 'file'))) {
    opts.signal?.throwIfAborted();
    for (const f of files) touch(f.path);
    let batch = files;
    if (opts.share) {
      // 4a. what another copy of this host holds the same: linked, never fetched
      const linked = await linkFromCopy(opts.share, opts.into, tmp, batch, writable);
      if (linked.size > 0) {
        batch = batch.filter((f) => !linked.has(f.path));
        stats.linked += linked.size;
        stats.totalFiles -= linked.size;
        for (const f of files) if (linked.has(f.path)) stats.totalBytes -= f.size;
        for (const path of linked) opts.progress?.placed(path);
      }
    }
    for (const f of batch) await writable(f.path);
    if (batch.length > 0) await sources.fetch(batch, tmp, fsyncEach);
  }
  // 4b. the content index of what changed, while the temp directory is there and before the sync
  if (opts.contentIndex !== false)
    await indexChanged(opts.into, delta, counts.madePrints, new Set(dirs.map((d) => d.path)), stats.full);
  // 5. directories' modes (and those of directories opened for the pull) and times, deepest
  // first: their children are in place
  await rm(tmp, { recursive: true, force: true }); // while the root is still writable
  await dirModes.settle();
  for (const d of [...dirs].reverse()) {
    const abs = join(opts.into, d.path);
    await utimes(abs, msInside(d.mtimeMs), msInside(d.mtimeMs));
  }
  if (fsyncEach) {
    // deepest first: a new directory is durable before the entry naming it in its parent. One
    // removed (what was under it named it) or now a link or a file has its parent fsynced instead
    for (const dir of [...touched].sort((x, y) => y.length - x.length)) {
      const abs = join(opts.into, dir);
      if ((await lstatOrNull(abs))?.isDirectory()) await fsyncDir(abs);
    }
  } else if (opts.durable) {
    await syncFileSystems([opts.into]);
  }
  return stats;
}

/** The files in batches of one files request each: at most MAX_PATHS_PER_REQUEST files and BATCH_BYTES (or one file). */
function* batchesOf(files: Iterable<ManifestEntry>): Generator<ManifestEntry[]> {
  let batch: ManifestEntry[] = [];
  let bytes = 0;
  for (const f of files) {
    if (batch.length > 0 && (batch.length >= MAX_PATHS_PER_REQUEST || bytes + f.size > BATCH_BYTES)) {
      yield batch;
      batch = [];
      bytes = 0;
    }
    batch.push(f);
    bytes += f.size;
  }
  if (batch.length > 0) yield batch;
}

/** Paths handed to one derive: a chunk of the delta at a time. */
const INDEX_CHUNK = 16 * 1024;

/**
 * Bring the slot's content index up to date for what the pull changed: each
 * file's hash, and the variants the snapshot holds beside it (the agent made
 * them in its copy) that decode to it. Nothing is compressed on a host, and
 * with no source a derive only reads and indexes: nothing to make durable,
 * as an index needs no fsync (content-index.ts). A changed directory is
 * derived as a tree, so what is under it is left out; a slot with no index
 * yet is derived whole, once. A whole pull (`full`) also names every file
 * and link at the slot's root: a pull cut short placed files that this one
 * finds as they should be, and leaves out of its delta. Below the root,
 * their directory is in the delta (the pull that placed them never gave it
 * its time back), and derived whole; the root's own time is not compared.
 * It names too the files it marks made that the slot held as they are
 * (`DeltaFiles.marked`): their records may call them master's own. A record
 * that stands costs a stat of the file and its variants.
 */
async function indexChanged(
  into: string,
  delta: DeltaFiles,
  /** The prints of the files the answer marks made, all of them (`DeltaCounts.madePrints`). */
  madePrints: Float64Array,
  dirs: ReadonlySet<string>,
  full: boolean,
): Promise<void> {
  const context = {
    slot: into,
    other: null,
    source: null,
    settings: TREE_DEFAULTS.variantSettings,
    madePrints,
  };
  if ((await lstatOrNull(join(into, META_DIR_NAME))) === null) {
    await deriveCopy(context, [], dirs);
    return;
  }
  const underChanged = (path: string) => {
    for (let cut = path.lastIndexOf('/'); cut > 0; cut = path.lastIndexOf('/', cut - 1))
      if (dirs.has(path.slice(0, cut))) return true;
    return false;
  };
  // A path under a changed file or link, or under a removed directory, is left out too: one
  // derive, given both, leaves it out (`topmost`), but they may be chunks apart. Derived, its
  // parent would be read through a link (out of the slot) or indexed where no directory is
  const realDirs = new Map<string, boolean>();
  const isRealDir = async (dir: string): Promise<boolean> => {
    let known = realDirs.get(dir);
    if (known === undefined) {
      const cut = dir.lastIndexOf('/');
      known =
        (cut <= 0 || (await isRealDir(dir.slice(0, cut)))) &&
        (await lstatOrNull(join(into, dir)))?.isDirectory() === true;
      realDirs.set(dir, known);
    }
    return known;
  };
  let chunk: string[] = [];
  const flush = async () => {
    if (chunk.length > 0) await deriveCopy(context, chunk, dirs);
    chunk = [];
    realDirs.clear();
  };
  const paths = function* () {
    for (const line of linesOf(delta.changed)) yield JSON.parse(keyOf(line)) as string;
    yield* removedOf(delta);
    // a whole pull's files marked made that the slot held as they are: its index may record them as
    // master's own (indexed from a coordinator before the mark). Below the root: its files come next
    if (full)
      for (const line of linesOf(delta.marked)) {
        const path = JSON.parse(line) as string;
        if (path.includes('/')) yield path;
      }
  };
  for (const path of paths()) {
    if (underChanged(path)) continue;
    const cut = path.lastIndexOf('/');
    if (cut > 0 && !(await isRealDir(path.slice(0, cut)))) continue;
    chunk.push(path);
    if (chunk.length >= INDEX_CHUNK) await flush();
  }
  if (full) {
    const present = new Set<string>();
    for (const e of await readdir(into, { withFileTypes: true })) {
      present.add(e.name);
      if (isReservedRootName(e.name) || e.isDirectory()) continue;
      chunk.push(e.name);
      if (chunk.length >= INDEX_CHUNK) await flush();
    }
    // and what the root's index records that is gone (a pull cut short may have removed it, and no
    // delta names it now)
    for (const name of await rootRecordsGone(into, present)) {
      chunk.push(name);
      if (chunk.length >= INDEX_CHUNK) await flush();
    }
  }
  await flush();
}

/** Checks, once per directory, that a path's parents are real directories of the slot (never links). */
class ParentCheck {
  readonly #root: string;
  readonly #known = new Set<string>(['']);
  constructor(root: string) {
    this.#root = root;
  }
  async check(path: string): Promise<void> {
    const cut = path.lastIndexOf('/');
    if (cut > 0) await this.isDirectory(path.slice(0, cut));
  }
  /**
   * Whether `path`'s parents are all there (then checked as `check` does:
   * a link or a file among them is refused); false when one is missing.
   */
  async exists(path: string): Promise<boolean> {
    const parts = path.split('/');
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      if (this.#known.has(dir)) continue;
      const st = await lstat(join(this.#root, dir)).catch(() => null);
      if (st === null) return false;
      await this.isDirectory(dir);
    }
    return true;
  }
  /**
   * Something was removed: no directory is known any more. Only a removal
   * turns a directory into something else (a link or file renamed onto a
   * directory fails), so after each one every parent is looked at again.
   */
  forgetAll(): void {
    this.#known.clear();
    this.#known.add('');
  }
  async isDirectory(dir: string): Promise<void> {
    if (this.#known.has(dir)) return;
    await this.check(dir);
    const st = await lstat(join(this.#root, dir)).catch(() => null);
    if (!st?.isDirectory())
      throw new MirrorswapError(
        'FLEET_PULL',
        `${dir} is not a directory in ${this.#root}: the pull would pass through it`,
      );
    this.#known.add(dir);
  }
}

/** Where one files request goes: the coordinator or a peer, with its own timeout and pace. */
interface FileSource {
  url: string;
  /** Named in errors: "the coordinator", or the peer. */
  who: string;
  peer: boolean;
  /**
   * A peer offered as still pulling the snapshot (`PeerPull.sharing`): its
   * answer may end early after whole frames, and the time between its
   * frames is waiting for it to place the next file, not its pace.
   */
  sharing?: boolean;
  timeoutMs: number;
  minBytesPerSecond: number;
}

/** How long a peer that answered busy (503), or with none of the files yet, is passed over. */
const BUSY_BACKOFF_MS = 200;

/**
 * Fetches batches of files: from peers when the pull has them (each failed
 * answer costs a retry of the files not yet placed, from another peer, then
 * from the coordinator), else from the coordinator.
 */
class Sources {
  readonly #opts: PullOptions;
  readonly #limits: Readonly<PullLimits>;
  readonly #stats: PullStats;
  readonly #failed = new Set<string>();
  readonly #busy = new Map<string, number>();
  /** Set once the pull gave up on peers: the rest comes from the coordinator. */
  #coordinatorOnly: boolean;
  constructor(opts: PullOptions, limits: Readonly<PullLimits>, stats: PullStats) {
    this.#opts = opts;
    this.#limits = limits;
    this.#stats = stats;
    this.#coordinatorOnly = !opts.peers;
  }

  get #coordinator(): FileSource {
    return {
      url: this.#opts.from,
      who: 'the coordinator',
      peer: false,
      timeoutMs: this.#opts.timeoutMs,
      minBytesPerSecond: this.#limits.minBytesPerSecond,
    };
  }

  async fetch(batch: ManifestEntry[], tmp: string, fsyncEach: boolean): Promise<void> {
    const done = new Set<string>();
    const left = () => batch.filter((f) => !done.has(f.path));
    const unhashed = batch.filter((f) => !f.hash);
    if (unhashed.length > 0)
      await fetchFiles(this.#opts, this.#coordinator, unhashed, tmp, this.#stats, fsyncEach, this.#limits, done);
    const peers = this.#opts.peers;
    for (let rest = left(); rest.length > 0; rest = left()) {
      this.#opts.signal?.throwIfAborted();
      const avoid = (url: string): PeerAvoided =>
        this.#failed.has(url) ? 'failed' : (this.#busy.get(url) ?? 0) > Date.now() ? 'busy' : null;
      const url = this.#coordinatorOnly || !peers ? null : await peers.pick(avoid, this.#opts.signal);
      if (url === null || !peers) {
        this.#coordinatorOnly = true;
        await fetchFiles(this.#opts, this.#coordinator, rest, tmp, this.#stats, fsyncEach, this.#limits, done);
        return;
      }
      const sharing = peers.sharing?.(url) ?? false;
      const peer: FileSource = {
        url,
        who: `peer ${url}`,
        peer: true,
        sharing,
        timeoutMs: peers.timeoutMs,
        minBytesPerSecond: peers.minBytesPerSecond,
      };
      const asked = performance.now();
      try {
        const before = done.size;
        const slow = await fetchFiles(this.#opts, peer, rest, tmp, this.#stats, fsyncEach, this.#limits, done);
        // A peer still pulling waits for the files it has not placed yet. The time its answer took
        // beyond what its bytes take at the slowest pace allowed counts as waiting for a peer to hold
        // them (`PeerPull.waited`), within the one bound of the whole pull: a peer that stalls or
        // trickles (its own pull held up, or it lies) costs that at most.
        if (sharing) peers.waited?.(slow);
        if (done.size === before) {
          // none of them yet: passed over a moment, as a busy one
          this.#stats.peerBusy++;
          this.#busy.set(url, Date.now() + BUSY_BACKOFF_MS + Math.random() * BUSY_BACKOFF_MS);
        }
      } catch (err) {
        if (this.#opts.signal?.aborted) throw err;
        // whatever ended it (busy, gone, a silence, a lie): a peer still pulling is charged all of its
        // answer's time, so no way of answering makes this host wait past its bound for peers
        if (sharing) peers.waited?.(performance.now() - asked);
        // a peer still pulling that no longer shares it (its pull failed, or ended and its slot
        // moved on) is passed over as a busy one: the finder drops it as etcd says so
        const code = (err as MirrorswapError).code;
        if (code === 'PEER_BUSY' || (sharing && code === 'SNAPSHOT_GONE')) {
          this.#stats.peerBusy++;
          this.#busy.set(url, Date.now() + BUSY_BACKOFF_MS + Math.random() * BUSY_BACKOFF_MS);
          continue;
        }
        this.#stats.peerFailures++;
        this.#failed.add(url);
        peers.onFailure?.(url, err as Error);
        if (this.#stats.peerFailures >= peers.maxFailures) this.#coordinatorOnly = true;
      }
    }
  }
}

/**
 * Fetch files from one source into place, each added to `done` once it is
 * in place (a failed answer leaves the rest to fetch elsewhere); counts the
 * bytes received. Returns how long the answer took beyond its bytes at the
 * source's slowest allowed pace (`overPace`).
 */
async function fetchFiles(
  opts: PullOptions,
  from: FileSource,
  batch: ManifestEntry[],
  tmp: string,
  stats: PullStats,
  fsyncEach: boolean,
  limits: Readonly<PullLimits>,
  done: Set<string>,
): Promise<number> {
  await opts.onSource?.();
  const asked = performance.now();
  const got = stats.fromPeers;
  // a peer still pulling the snapshot waits for a file not yet placed at most half the silence this
  // host allows, then ends its answer after whole frames: the rest is asked for again
  const wait = from.sharing ? `&wait=${Math.floor(from.timeoutMs / 2)}` : '';
  const res = await request(
    { ...opts, from: from.url, timeoutMs: from.timeoutMs },
    `/v1/fleet/files?snapshot=${encodeURIComponent(opts.snapshot)}${wait}`,
    { paths: batch.map((f) => f.path) },
    from.who,
  );
  const reader = new FrameReader(res, new Pace(from.timeoutMs, from.minBytesPerSecond, from.who), from.who);
  const fromPeer = from.peer;
  const received = (n: number) => {
    stats.received += n;
    if (fromPeer) stats.fromPeers += n;
    else stats.fromCoordinator += n;
  };
  const placed = (f: ManifestEntry) => {
    done.add(f.path);
    stats.files++;
    stats.bytes += f.size;
    opts.progress?.placed(f.path);
  };
  // files placed sooner when peers pull them from this host meanwhile: they wait for each
  const batchBytes = opts.progress ? SHARED_PLACE_BATCH_BYTES : PLACE_BATCH_BYTES;
  // small files are checked here and written by the walk threads, many at a time: one blocking
  // call each instead of a thread-pool round trip per open, write, chmod, utimes and rename
  let pending: PlacedFile[] = [];
  let pendingEntries: ManifestEntry[] = [];
  let pendingBytes = 0;
  const place = async () => {
    if (pending.length === 0) return;
    const units = pending;
    const entries = pendingEntries;
    pending = [];
    pendingEntries = [];
    pendingBytes = 0;
    await walkPool.run<PlacedFile, true>('place', { into: opts.into, tmp, fsync: fsyncEach }, units, () => true);
    for (const f of entries) placed(f);
  };
  try {
    for (const want of batch) {
      // a peer still pulling ends its answer, whole, where its next file is not there yet
      if (from.sharing) {
        // between frames it waits for its pull to place the next file: each frame's pace is timed
        // on its own, the silence bound kept, the waits counted by the caller (`overPace`). An
        // answer that has taken its silence bound beyond its bytes' pace is left there: the rest
        // is asked for again, within the bound the finder keeps
        if (overPace(asked, stats.fromPeers - got, from) >= from.timeoutMs) break;
        reader.restartPace();
        const ended = await reader.atEnd();
        reader.restartPace();
        if (ended) break;
      }
      const lenBuf = await reader.read(4);
      checkFrameHeaderLength(lenBuf.readUInt32BE(0), limits, from.who);
      const header = parseFrameHeader(await reader.read(lenBuf.readUInt32BE(0)), from.who);
      if (header.path !== want.path || header.size !== want.size)
        throw new MirrorswapError(
          'FLEET_PULL',
          `${from.who} sent ${JSON.stringify(header.path.slice(0, 200))} (${header.size} bytes) where ${want.path} (${want.size} bytes) was due`,
        );
      if (want.size <= SMALL_FILE) {
        const data = await reader.read(want.size);
        checkHash(want, createHash('sha256').update(data).digest(), await reader.read(32), from);
        pending.push({ path: want.path, data: new Uint8Array(data), mode: want.mode, mtime: msInside(want.mtimeMs) });
        pendingEntries.push(want);
        pendingBytes += want.size;
        received(4 + lenBuf.readUInt32BE(0) + want.size + 32);
        if (pendingBytes >= batchBytes || pending.length >= PLACE_BATCH_FILES) await place();
      } else {
        await receiveLarge(opts, want, reader, tmp, fsyncEach, from);
        received(4 + lenBuf.readUInt32BE(0) + want.size + 32);
        placed(want);
      }
    }
    await place();
  } finally {
    res.destroy();
  }
  return overPace(asked, stats.fromPeers - got, from);
}

/** Milliseconds since `since` beyond what `bytes` take at `from`'s slowest allowed pace. */
function overPace(since: number, bytes: number, from: FileSource): number {
  return Math.max(0, performance.now() - since - (bytes / from.minBytesPerSecond) * 1000);
}

/** Files at most this large are read whole and placed by the walk threads. */
const SMALL_FILE = 1024 * 1024;
const PLACE_BATCH_BYTES = 16 * 1024 * 1024;
/** The batch when peers pull from this host while it pulls (`PullOptions.progress`): a round trip to a walk thread per MiB. */
const SHARED_PLACE_BATCH_BYTES = 1024 * 1024;
const PLACE_BATCH_FILES = 512;

function checkHash(want: ManifestEntry, got: Buffer, sent: Buffer, from: FileSource): void {
  if (!sent.equals(got))
    throw new MirrorswapError(
      'FLEET_PULL',
      `${want.path} arrived damaged from ${from.who} (its SHA-256 is not what was sent)`,
    );
  // from a peer, the manifest's hash is the only word that counts: it is always there (Sources)
  if ((want.hash || from.peer) && got.toString('hex') !== want.hash)
    throw new MirrorswapError(
      'FLEET_PULL',
      from.peer
        ? `${from.who} sent ${want.path} with other content than the coordinator's manifest names`
        : `${want.path} is not the content the manifest names: it changed on the coordinator`,
    );
}

/** A large file, streamed to a temp file beside the slot, checked, then renamed into place. */
async function receiveLarge(
  opts: PullOptions,
  want: ManifestEntry,
  reader: FrameReader,
  tmp: string,
  fsyncEach: boolean,
  from: FileSource,
): Promise<void> {
  const temp = join(tmp, randomBytes(8).toString('hex'));
  const handle = await open(temp, 'wx', 0o600);
  const hash = createHash('sha256');
  try {
    let left = want.size;
    while (left > 0) {
      const chunk = await reader.readUpTo(left);
      hash.update(chunk);
      await handle.write(chunk);
      left -= chunk.length;
    }
    checkHash(want, hash.digest(), await reader.read(32), from);
    await handle.chmod(want.mode);
    await handle.utimes(msInside(want.mtimeMs), msInside(want.mtimeMs));
    // after the mode and time: the fsync makes them durable with the content
    if (fsyncEach) await handle.sync();
    await handle.close();
    await rename(temp, join(opts.into, want.path));
  } catch (err) {
    await handle.close().catch(() => {});
    await unlink(temp).catch(() => {});
    throw err;
  }
}

/**
 * Reads exact byte counts from a response, failing on a cut one. Chunks are
 * kept as they came and joined once a read has enough: a coordinator sending
 * a file in tiny writes costs one copy of it, not one copy per chunk.
 */
export class FrameReader {
  readonly #res: http.IncomingMessage;
  readonly #it: AsyncIterator<Buffer>;
  readonly #pace: Pace;
  readonly #who: string;
  #chunks: Buffer[] = [];
  #length = 0;
  constructor(res: http.IncomingMessage, pace: Pace, who = 'the coordinator') {
    this.#res = res;
    this.#it = res[Symbol.asyncIterator]();
    this.#pace = pace;
    this.#who = who;
  }
  /**
   * The next chunk buffered (true), or false once the answer ended whole
   * (`allowEnd`); an answer cut, or ended where more was due, fails.
   */
  async #fill(allowEnd = false): Promise<boolean> {
    const next = await this.#pace.next(this.#it, this.#res).catch((err: Error) => {
      throw err instanceof MirrorswapError
        ? err
        : new MirrorswapError('FLEET_PULL', `${this.#who} cut its answer short (${err.message})`);
    });
    if (next.done) {
      if (allowEnd && this.#res.complete) return false;
      throw new MirrorswapError('FLEET_PULL', `${this.#who} cut its answer short (its copy changed, or it stopped)`);
    }
    this.#chunks.push(next.value);
    this.#length += next.value.length;
    return true;
  }
  /** The first `n` buffered bytes (n at most what is buffered), taken off the buffer. */
  #take(n: number): Buffer {
    const first = this.#chunks[0] as Buffer;
    const joined = first.length >= n ? first : Buffer.concat(this.#chunks, this.#length);
    const out = joined.subarray(0, n);
    const rest = joined.subarray(n);
    if (joined === first) this.#chunks[0] = rest;
    else this.#chunks = [rest];
    if (rest.length === 0) this.#chunks.shift();
    this.#length -= n;
    return out;
  }
  async read(n: number): Promise<Buffer> {
    if (n === 0) return Buffer.alloc(0);
    while (this.#length < n) await this.#fill();
    return this.#take(n);
  }
  /**
   * True when the answer ended whole here (nothing buffered, the body complete);
   * false when more bytes come. A cut answer fails, as any read of it does.
   */
  /** Time the bytes from here on by themselves (`Pace`): a new frame of a peer still pulling. */
  restartPace(): void {
    this.#pace.restart();
  }
  async atEnd(): Promise<boolean> {
    return this.#length === 0 && !(await this.#fill(true));
  }
  async readUpTo(n: number): Promise<Buffer> {
    if (this.#length === 0) await this.#fill();
    return this.#take(Math.min(n, (this.#chunks[0] as Buffer).length));
  }
}

/**
 * One request to the coordinator (or a peer: `who`), answered 200 within the timeout (its head whole
 * within it; an idle answer counts too), or an error naming why: `SNAPSHOT_GONE` for 410, `PEER_BUSY`
 * for a peer's 503. Its body is read at a pace (`Pace`).
 */
function request(
  opts: PullOptions,
  path: string,
  json?: object,
  who = 'the coordinator',
): Promise<http.IncomingMessage> {
  const url = new URL(path, opts.from);
  const lib = url.protocol === 'https:' ? https : http;
  const payload = json ? JSON.stringify(json) : undefined;
  const peer = who !== 'the coordinator';
  return new Promise((resolve, reject) => {
    const req = lib.request(
      url,
      {
        ...(opts.signal ? { signal: opts.signal } : {}),
        method: payload ? 'POST' : 'GET',
        headers: {
          authorization: `Bearer ${opts.token}`,
          ...(payload ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {}),
        },
      },
      (res) => {
        if (res.statusCode === 200) return resolve(res);
        // an error's body: its first KiB at most, within the timeout, never more (a peer may drip one for ever)
        const chunks: Buffer[] = [];
        let length = 0;
        const fail = () => {
          clearTimeout(cap);
          res.destroy();
          const text = Buffer.concat(chunks).toString('utf8').slice(0, 300);
          const code =
            res.statusCode === 410 ? 'SNAPSHOT_GONE' : peer && res.statusCode === 503 ? 'PEER_BUSY' : 'FLEET_PULL';
          reject(new MirrorswapError(code, `${who} answered ${url.pathname} with ${res.statusCode}: ${text}`));
        };
        const cap = setTimeout(fail, opts.timeoutMs);
        res.on('data', (c: Buffer) => {
          chunks.push(c);
          length += c.length;
          if (length >= 1024) fail();
        });
        res.on('end', fail);
        res.on('error', fail);
      },
    );
    // the answer's head within the timeout, however it trickles in (its body is paced: `Pace`)
    const head = setTimeout(
      () =>
        req.destroy(
          new MirrorswapError('FLEET_PULL', `${who} at ${url.origin} did not answer within ${opts.timeoutMs} ms`),
        ),
      opts.timeoutMs,
    );
    // the body's silences are timed by its reader (`Pace`): only while it waits for bytes, not while
    // it writes them out (a slow disk is no fault of the sender's)
    req.on('response', () => {
      clearTimeout(head);
      req.setTimeout(0);
    });
    req.on('close', () => clearTimeout(head));
    req.setTimeout(opts.timeoutMs, () =>
      req.destroy(new MirrorswapError('FLEET_PULL', `${who} at ${url.origin} sent nothing for ${opts.timeoutMs} ms`)),
    );
    req.on('error', (err) =>
      reject(
        err instanceof MirrorswapError
          ? err
          : new MirrorswapError('FLEET_PULL', `cannot reach ${who} at ${url.origin}: ${err.message}`),
      ),
    );
    req.end(payload);
  });
}
