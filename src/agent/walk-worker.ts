import { parentPort } from 'node:worker_threads';
import { type CloneContext, type CloneUnit, cloneUnitSync } from './clone-trees.js';
import { type CompareContext, compareUnitSync } from './compare-trees.js';
import { subdirectoriesWithIdentity } from './directory-identity.js';
import { countUnitSync, hashFileSync, manifestUnitSync, placeFileSync } from '../fleet/manifest-unit.js';
import type { PlacedFile } from '../fleet/pull.js';
import type { UnitTask } from './walk-pool.js';
import type { WalkUnit } from './walk-units.js';

/** A thread of the WalkPool: runs each chunk of units it is sent with blocking calls, and answers. */
const tasks: Record<UnitTask, (context: never, unit: never) => unknown> = {
  compare: (c: CompareContext, unit: WalkUnit) => compareUnitSync(c.source, c.target, unit, c.opts),
  clone: (c: CloneContext, unit: CloneUnit) => cloneUnitSync(c, unit),
  list: (c: { skip: string }, dir: string) => subdirectoriesWithIdentity(dir, c.skip),
  manifest: (c: { root: string }, unit: WalkUnit) => manifestUnitSync(c.root, unit),
  hash: (c: { root: string }, unit: { i: number; path: string }) => ({
    i: unit.i,
    hash: hashFileSync(c.root, unit.path),
  }),
  place: (c: { into: string; tmp: string; fsync: boolean }, file: PlacedFile) => placeFileSync(c, file),
  count: (c: { root: string }, unit: WalkUnit) => countUnitSync(c.root, unit),
};

parentPort?.on('message', (msg: { task: UnitTask; context: never; units: never[] }) => {
  try {
    const run = tasks[msg.task];
    parentPort?.postMessage({ results: msg.units.map((u) => run(msg.context, u)) });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    parentPort?.postMessage({ error: e.message, ...(e.code ? { code: e.code } : {}) });
  }
});
