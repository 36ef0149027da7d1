import { parentPort } from 'node:worker_threads';
import { type CloneContext, type CloneUnit, cloneUnitSync } from './clone-trees.js';
import { type CompareContext, compareUnitSync } from './compare-trees.js';
import { type DeriveContext, type DeriveUnit, deriveUnitSync } from './derive-variants.js';
import { subdirectoriesWithIdentity } from './directory-identity.js';
import { countUnitSync, hashFileSync, manifestRunSync, manifestUnitSync, placeFileSync } from './manifest-unit.js';
import type { PlacedFile } from './manifest-entry.js';
import { type AnswerJob, type MergeJob, mergeRunsSync, writeAnswerSync } from './manifest-merge.js';
import { type DeltaJob, writeDeltaSync } from './manifest-delta.js';
import { type StageContext, type StageUnit, stageFileSync } from './stage-files.js';
import type { ChunkMessage, ForgetMessage, UnitTask } from './walk-pool.js';
import type { WalkUnit } from './walk-units.js';
import { setWalkReporter } from './walk-report.js';

/** A thread of the WalkPool: runs each chunk of units it is sent with blocking calls, and answers. */
const tasks: Record<UnitTask, (context: never, unit: never) => unknown> = {
  compare: (c: CompareContext, unit: WalkUnit) => compareUnitSync(c.source, c.target, unit, c.opts),
  clone: (c: CloneContext, unit: CloneUnit) => cloneUnitSync(c, unit),
  list: (c: { skip: string[] }, dir: string) => subdirectoriesWithIdentity(dir, c.skip),
  manifest: (c: { root: string }, unit: WalkUnit) => manifestUnitSync(c.root, unit),
  'manifest-run': (c: { root: string; runsDir: string; made: boolean }, group: { i: number; units: WalkUnit[] }) =>
    manifestRunSync(c, group),
  'manifest-merge': (_: null, job: MergeJob) => mergeRunsSync(job),
  'manifest-answer': (_: null, job: AnswerJob) => writeAnswerSync(job),
  'manifest-delta': (_: null, job: DeltaJob) => writeDeltaSync(job),
  hash: (c: { root: string }, unit: { i: number; path: string }) => ({
    i: unit.i,
    hash: hashFileSync(c.root, unit.path),
  }),
  place: (c: { into: string; tmp: string; fsync: boolean }, file: PlacedFile) => placeFileSync(c, file),
  count: (c: { root: string }, unit: WalkUnit) => countUnitSync(c.root, unit),
  stage: (c: StageContext, unit: StageUnit) => stageFileSync(c, unit),
  derive: (c: DeriveContext, unit: DeriveUnit) => deriveUnitSync(c, unit),
};

/** Entries walked and not yet told to the pool; told at most every PROGRESS_MS, and before each answer. */
let walked = 0;
let toldAt = 0;
const PROGRESS_MS = 100;
const tell = () => {
  if (walked === 0) return;
  parentPort?.postMessage({ progress: walked });
  walked = 0;
  toldAt = Date.now();
};
setWalkReporter((entries) => {
  walked += entries;
  if (Date.now() - toldAt >= PROGRESS_MS) tell();
});

/** The context of the last job a chunk came of: sent with a job's first chunk to this thread only. */
let held: { job: number; context: never } | null = null;

parentPort?.on('message', (msg: ChunkMessage | ForgetMessage) => {
  if ('forget' in msg) {
    // its job is done: its context is garbage here too (a chunk of another job may have replaced it)
    if (held?.job === msg.forget) held = null;
    return;
  }
  try {
    if ('context' in msg) held = { job: msg.job, context: msg.context as never };
    // the pool sends a job's context before its first chunk here: anything else is a bug in the pool
    if (held?.job !== msg.job) throw new Error(`a chunk of walk job ${msg.job} came without its context`);
    const run = tasks[msg.task];
    const context = held.context;
    const results = (msg.units as never[]).map((u) => run(context, u));
    tell();
    parentPort?.postMessage({ results });
  } catch (err) {
    walked = 0;
    const e = err as NodeJS.ErrnoException;
    parentPort?.postMessage({ error: e.message, ...(e.code ? { code: e.code } : {}) });
  }
});
