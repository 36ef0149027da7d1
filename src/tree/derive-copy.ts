import { join } from 'node:path';
import { lstatOrNull } from '../core/lstat-or-null.js';
import { META_DIR_NAME } from '../store/store-layout.js';
import {
  type DeriveContext,
  type DeriveResult,
  type DeriveUnit,
  type StagedHash,
  addDeriveStats,
  emptyDeriveStats,
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
 */
export async function deriveCopy(
  context: DeriveContext,
  changed: Iterable<string>,
  dirs: ReadonlySet<string>,
  /** What the copy learnt of files as it staged them, by path (the derive then need not read them). */
  hashes: ReadonlyMap<string, StagedHash> = new Map(),
): Promise<DeriveResult> {
  const done: DeriveResult = { stats: emptyDeriveStats(), written: [], dirs: [] };
  const meta = join(context.slot, META_DIR_NAME);
  const indexed = (await lstatOrNull(meta)) !== null;
  const paths = indexed ? topmost([...new Set(changed)]) : [''];
  const listed = new Set(paths);
  const trees = indexed ? [...dirs].filter((d) => listed.has(d)) : [''];
  const treeSet = new Set(trees);
  const byParent = new Map<string, string[]>();
  for (const p of paths) {
    if (treeSet.has(p)) continue;
    const cut = p.lastIndexOf('/');
    const parent = cut === -1 ? '' : p.slice(0, cut);
    const names = byParent.get(parent);
    if (names) names.push(p.slice(cut + 1));
    else byParent.set(parent, [p.slice(cut + 1)]);
  }
  const units: DeriveUnit[] = [
    ...planUnits(context.slot, trees, WALK_THREADS).map(
      (u): DeriveUnit =>
        u.deep ? { dir: u.rel, names: null, deep: true } : { dir: u.rel, names: null, skip: u.subunits },
    ),
    ...[...byParent].map(([dir, names]): DeriveUnit => {
      const unit: DeriveUnit = { dir, names };
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
  await walkPool.run<DeriveUnit, DeriveResult>(
    'derive',
    context,
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
      }
      return true;
    },
    undefined,
    // a journal sync's few files go to the threads running: starting one costs what tens of compressions do
    {
      startAtMost: trees.length > 0 ? WALK_THREADS : Math.ceil(paths.length / FILES_PER_THREAD),
      // a journal sync's few units go out in one message per thread running: each message and its
      // answer cost about what a unit does (a large derive is cut finer, for the threads to share it)
      ...(units.length <= FEW_UNITS ? { minChunk: Math.ceil(units.length / WALK_THREADS) } : {}),
      ...(context.settings.threads > 0 ? { maxThreads: context.settings.threads } : {}),
    },
  );
  return done;
}
