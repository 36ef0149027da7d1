import { join } from 'node:path';
import { lstatOrNullSync } from '../core/lstat-or-null.js';
import { realDirectories } from './real-directories.js';
import { type FileRecord, dropEveryIndex } from '../store/content-index.js';
import {
  type RecentRecords,
  RECENT_RECORDS_MAX,
  byDirectory,
  loadRecentRecordsSync,
  removeRecentRecords,
  writeRecentRecordsSync,
} from '../store/recent-records.js';
import { META_DIR_NAME } from '../store/store-layout.js';
import { variantOf } from './compressible.js';
import {
  type DeriveContext,
  type DeriveResult,
  type DeriveUnit,
  type StagedHash,
  addDeriveStats,
  emptyDeriveStats,
  setAsideName,
} from './derive-variants.js';
import { walkPool } from './walk-pool.js';
import { WALK_THREADS } from './walk-threads.js';
import { planUnits, topmost } from './walk-units.js';

/** A derive of at most this many units sends them in one chunk per thread. */
const FEW_UNITS = 64;
/** Changed files to derive per walk thread started (a thread start costs 70 to 90 ms, a file's variants 1 to 3). */
const FILES_PER_THREAD = 64;

/**
 * Run the derive step (derive-variants.ts) over what a copy changed, in the
 * walk threads: one unit per changed directory's tree (cut by planUnits when
 * large) and one per directory of changed files, so each directory's index
 * has one writer. `changed` are the paths placed, removed or found
 * different; `dirs` those of them known to be directories. A copy with no
 * index yet (its first, or variants just turned on) is derived whole.
 * Returns the variants written and their directories, for the caller's
 * durability round (indexes need none: content-index.ts).
 *
 * The copy's recent records (recent-records.ts): a small sync's derive
 * (`RecentPlan.collect`, with no directory changed) writes no index, and
 * keeps the records of the paths it derived there instead, while they stay
 * within `RECENT_RECORDS_MAX`. Any other derive folds them into the indexes
 * of their directories (as they are when `RecentPlan.trusted`, else their
 * files derived as never recorded) and removes them.
 */
/** What a copy's derive did; with `keepRecords` to call before the copy is done, when it collected records. */
export interface CopyDerived extends DeriveResult {
  /**
   * Write the records a small sync's derive collected into the copy's
   * recent records (blocking calls: a millisecond or two, run while the
   * copy's fsyncs are under way). The copy is not done, and must not be
   * published, until this has returned.
   */
  keepRecords?: () => void;
}

export async function deriveCopy(
  context: DeriveContext,
  changed: Iterable<string>,
  dirs: ReadonlySet<string>,
  /** What the copy learnt of files as it staged them, by path (the derive then need not read them). */
  hashes: ReadonlyMap<string, StagedHash> = new Map(),
  /** What may become of the copy's recent records (recent-records.ts); unset: they are voided and folded in. */
  plan: RecentPlan = { collect: false, trusted: false },
): Promise<CopyDerived> {
  const done: CopyDerived = { stats: emptyDeriveStats(), written: [], dirs: [] };
  const meta = join(context.slot, META_DIR_NAME);
  // a copy with no index has no recent records either (they live beside the indexes)
  // blocking calls, a few tens of microseconds: the copy's fsyncs hold libuv's pool meanwhile
  const found = lstatOrNullSync(meta) !== null ? loadRecentRecordsSync(context.slot) : null;
  // a copy whose recent records are torn (a crash as they were written) is derived whole, from no
  // index: which paths they named, whose indexes' records they void, is not known (a record a
  // tombstone hid may stamp-match a new file that took its inode number)
  if (found === 'torn') await dropEveryIndex(context.slot);
  const indexed = found !== null && found !== 'torn';
  const recent: RecentRecords = indexed ? found : Object.create(null);
  const named = [...new Set(changed)];
  const recentPaths = Object.keys(recent);
  const collect = indexed && plan.collect && dirs.size === 0 && fitsRecent(recent, named);
  // a derive that does not keep its records in the recent ones folds those into the indexes: each
  // in a directory of the copy's own (the file may have been edited to name a path through a link,
  // which the derive would follow out of the copy); the others go with the file
  const folded = indexed && !collect ? await inCopy(context.slot, recentPaths) : [];
  const paths = indexed ? topmost(collect ? named : [...new Set([...named, ...folded])]) : [''];
  const listed = new Set(paths);
  const trees = indexed ? [...dirs].filter((d) => listed.has(d)) : [''];
  const treeSet = new Set(trees);
  const byParent = new Map<string, string[]>();
  /** Of a parent's names, the directories derived whole by units of their own: looked at, not gone into. */
  const treesOf = new Map<string, string[]>();
  for (const p of paths) {
    if (p === '' && treeSet.has(p)) continue; // the whole copy: no parent
    const cut = p.lastIndexOf('/');
    const parent = cut === -1 ? '' : p.slice(0, cut);
    const name = p.slice(cut + 1);
    // a directory derived whole is named to its parent too, which settles the entry (the record and
    // the made variants of a file it replaced: no index names them any more, and nginx would serve
    // them by name) without going into it
    if (treeSet.has(p)) {
      const trees = treesOf.get(parent);
      if (trees) trees.push(name);
      else treesOf.set(parent, [name]);
    }
    const names = byParent.get(parent);
    if (names) names.push(name);
    else byParent.set(parent, [name]);
  }
  const units: DeriveUnit[] = [
    ...planUnits(context.slot, trees, WALK_THREADS).map(
      (u): DeriveUnit =>
        u.deep ? { dir: u.rel, names: null, deep: true } : { dir: u.rel, names: null, skip: u.subunits },
    ),
    ...[...byParent]
      .flatMap(([dir, names]) => (collect ? splitNames(names) : [names]).map((n) => [dir, n] as const))
      .map(([dir, names]): DeriveUnit => {
        const skip = treesOf.get(dir);
        const unit: DeriveUnit = skip ? { dir, names, skip } : { dir, names };
        const known: Record<string, StagedHash> = Object.create(null); // a name may be __proto__
        let any = false;
        for (const name of names) {
          const hash = hashes.get(dir === '' ? name : `${dir}/${name}`);
          if (hash) {
            known[name] = hash;
            any = true;
          }
        }
        if (any) unit.hashes = known;
        return unit;
      }),
  ];
  // a small sync's units are sent the recent records of the paths they derive (and of any below a
  // path named, which a unit would derive whole had it found a directory there): a few, not all
  const only = collect ? withOriginals(named) : undefined;
  const derive: DeriveContext = {
    ...throughOtherRecords(context, only, named),
    ...(recentPaths.length > 0 ? { recent: byDirectory(recent, only, named), recentTrusted: plan.trusted } : {}),
    ...(collect ? { collect: true } : {}),
  };
  await walkPool.run<DeriveUnit, DeriveResult>(
    'derive',
    derive,
    units,
    (parts) => {
      for (const part of parts) {
        addDeriveStats(done.stats, part.stats);
        done.written.push(...part.written);
        done.dirs.push(...part.dirs);
        if (part.taken) {
          done.taken ??= [];
          done.taken.push(...part.taken);
        }
        if (part.records) {
          done.records ??= Object.create(null);
          Object.assign(done.records as Record<string, FileRecord | null>, part.records);
        }
      }
      return true;
    },
    undefined,
    // a journal sync's few files go to the threads running: starting one costs what tens of compressions do
    {
      startAtMost: trees.length > 0 ? WALK_THREADS : Math.ceil(paths.length / FILES_PER_THREAD),
      // a journal sync's few units go out in one message per thread running: each message and its
      // answer cost about what a unit does (a large derive is cut finer, for the threads to share it)
      ...(units.length <= FEW_UNITS ? { minChunk: units.length, spread: true } : {}),
      ...(context.settings.threads > 0 ? { maxThreads: context.settings.threads } : {}),
    },
  );
  // kept by the caller, once it has started what the copy waits on anyway (its fsyncs)
  if (collect) done.keepRecords = () => keepRecent(context, recent, named, done.records ?? {});
  else if (recentPaths.length > 0 || found === 'torn') await removeRecentRecords(context.slot);
  return done;
}

/**
 * `context` as a derive that may reuse the other copy's variants must be
 * given it: the other copy's indexes are read through its recent records
 * (`DeriveContext.otherRecent`), as every reader of a copy reads them
 * (docs/CONTRACT.md, "Recent records"). An index record a recent one
 * replaced may name an inode number a newer file took, of the same size and
 * time: taken alone, it would link in a variant of other bytes under the
 * record of these. Torn or unreadable records void every index of that
 * copy: nothing is reused from it (`other` null). With `only`, the records
 * of those paths alone and of any below `below` (what a small sync's units
 * derive); else all of them (a derive of whole directories, a clone's).
 * Blocking calls (`loadRecentRecordsSync`).
 */
export function throughOtherRecords(
  context: DeriveContext,
  only?: ReadonlySet<string>,
  below?: readonly string[],
): DeriveContext {
  const { otherRecent: _, ...rest } = context;
  if (context.other === null) return rest;
  let other: RecentRecords | 'torn';
  try {
    other = loadRecentRecordsSync(context.other);
  } catch {
    other = 'torn'; // unreadable: nothing is reused from it
  }
  if (other === 'torn') return { ...rest, other: null };
  return Object.keys(other).length > 0 ? { ...rest, otherRecent: byDirectory(other, only, below) } : rest;
}

/**
 * Of `paths`, those whose directory is one of the copy at `slot`: reached
 * from its root through directories alone, no link on the way.
 */
async function inCopy(slot: string, paths: readonly string[]): Promise<string[]> {
  const realDir = realDirectories(slot);
  const real = await Promise.all(paths.map((p) => realDir(p.slice(0, Math.max(0, p.lastIndexOf('/'))))));
  return paths.filter((_, i) => real[i]);
}

/** How a derive may treat the copy's recent records. */
export interface RecentPlan {
  /** A small sync's derive: it keeps what it learns in the recent records (when they stay few, and no directory changed). */
  collect: boolean;
  /** The recent records still hold: the copy made no directory since they were written, nor was cut short (else they are voided). */
  trusted: boolean;
}

/** Names a collecting unit takes at most: a directory's many changed files are shared among the threads. */
const NAMES_PER_UNIT = 4;

/**
 * A directory's names cut into groups for units of their own: possible only
 * for a collecting derive (which writes no index, the one thing a directory
 * must have a single writer of). A name and its variants' names stay in one
 * group: the unit deriving a file places its variants.
 */
function splitNames(names: readonly string[]): string[][] {
  if (names.length <= NAMES_PER_UNIT) return [[...names]];
  const byOriginal = new Map<string, string[]>();
  for (const name of names) {
    // to the name with no variant suffix at all: `X.gz.br` goes with `X.gz` and `X`, whichever is a file
    let base = name;
    for (let v = variantOf(base); v !== null; v = variantOf(base)) base = v.base;
    const group = byOriginal.get(base);
    if (group) group.push(name);
    else byOriginal.set(base, [name]);
  }
  const units: string[][] = [];
  let unit: string[] = [];
  for (const group of byOriginal.values()) {
    if (unit.length > 0 && unit.length + group.length > NAMES_PER_UNIT) {
      units.push(unit);
      unit = [];
    }
    unit.push(...group);
  }
  if (unit.length > 0) units.push(unit);
  return units;
}

/** `named` with the original of each variant name among them: the paths a derive of them records. */
function withOriginals(named: readonly string[]): Set<string> {
  const paths = new Set(named);
  for (const p of named) {
    const cut = p.lastIndexOf('/') + 1;
    const v = variantOf(p.slice(cut));
    if (v) paths.add(p.slice(0, cut) + v.base);
  }
  return paths;
}

/** Whether the recent records stay within their bound with those of `named` added. */
function fitsRecent(recent: RecentRecords, named: readonly string[]): boolean {
  if (named.length > RECENT_RECORDS_MAX) return false;
  const paths = new Set(Object.keys(recent));
  for (const p of withOriginals(named)) paths.add(p);
  return paths.size <= RECENT_RECORDS_MAX;
}

/**
 * Keep `learnt` (records by path) in the copy's recent records, in place of
 * what they held for those paths. Records under a path named (a directory
 * that is a file or nothing now) go: nothing is there to describe.
 */
function keepRecent(
  context: DeriveContext,
  recent: RecentRecords,
  named: readonly string[],
  learnt: RecentRecords,
): void {
  const next: Record<string, FileRecord | null> = Object.assign(Object.create(null), recent);
  const gone = named.map((p) => `${p}/`);
  for (const path of Object.keys(next)) if (gone.some((g) => path.startsWith(g))) delete next[path];
  Object.assign(next, learnt);
  const aside = context.setAside;
  writeRecentRecordsSync(context.slot, next, aside ? () => setAsideName(aside) : undefined);
}
