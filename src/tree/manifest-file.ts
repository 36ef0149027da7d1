import { randomUUID } from 'node:crypto';
import { mkdir, open, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { MirrorswapError } from '../core/errors.js';
import type { ManifestEntry } from './manifest-entry.js';
import { entryOf, isFileLine, keyOf } from './manifest-line.js';
import type { AnswerJob, MergeJob, MergedManifest } from './manifest-merge.js';
import { walkPool } from './walk-pool.js';
import { WALK_THREADS } from './walk-threads.js';
import { type WalkUnit, planUnits } from './walk-units.js';

/*
 * A manifest on disk, for a coordinator whose memory must not grow with the
 * tree (a million files made some 300 MB of objects per manifest, and it
 * kept six). One line per entry (`manifest-line.ts`), sorted, so two
 * manifests are compared by one merge holding a chunk of each. Everything
 * done per entry is done in the walk threads: the walk (a run per few
 * directories, sorted and written there), the merge of the runs and the
 * merge of two manifests (`manifest-merge.ts`).
 */

/** How a walk is cut. */
export interface ManifestSizing {
  /**
   * Walk units (a directory, or one with its tree) a walk thread walks,
   * sorts and writes as one run (8): at a million files in 1,000
   * directories, some 125 runs of 8,000 lines, merged together.
   */
  unitsPerRun: number;
}

const SIZING: ManifestSizing = { unitsPerRun: 8 };

/**
 * Run one job alone in a walk thread, and give back its one result; on a
 * failure (a thread that died too), what it was writing is removed.
 */
export async function inThread<J, R>(
  task: 'manifest-merge' | 'manifest-answer' | 'manifest-delta',
  job: J & { temp?: string; removedTemp?: string },
  first = false,
): Promise<R> {
  let result: R | undefined;
  try {
    await walkPool.run<J, R>(
      task,
      null,
      [job],
      ([r]) => {
        result = r;
        return true;
      },
      undefined,
      { first },
    );
  } catch (err) {
    for (const temp of [job.temp, job.removedTemp]) if (temp) await rm(temp, { force: true });
    throw err;
  }
  return result as R;
}

/**
 * One manifest written to disk, with a sparse index of it in memory (a key
 * and an offset per INDEX_EVERY lines: some 10,000 strings at a million
 * entries). Never changed once written.
 */
export class ManifestFile {
  readonly file: string;
  readonly entries: number;
  readonly bytes: number;
  /** Files read and hashed by the walk that made it (the others' hashes came from the earlier manifest). */
  readonly hashed: number;
  readonly #keys: string[];
  readonly #offsets: number[];

  private constructor(made: MergedManifest) {
    this.file = made.file;
    this.entries = made.entries;
    this.bytes = made.bytes;
    this.hashed = made.hashed;
    this.#keys = made.keys;
    this.#offsets = made.offsets;
  }

  /**
   * Walk `root` (its temp directory left out; links recorded, never
   * followed) into `file`, every file with its SHA-256: carried over from
   * `cache` (an earlier manifest of the same tree) when the file is the one
   * hashed then (same inode, change time and size: a copy never writes a file
   * in place), read and hashed otherwise. All of it in the walk threads: the
   * walk in sorted runs of a few directories each (`sizing`), written to a
   * directory beside `file` and removed after, then one merge of the runs.
   * The variants the agent made are marked (`ManifestEntry.made`).
   */
  static async write(
    root: string,
    file: string,
    cache: ManifestFile | null,
    sizing: Readonly<ManifestSizing> = SIZING,
  ): Promise<ManifestFile> {
    const runsDir = `${file}.runs`;
    await rm(runsDir, { recursive: true, force: true });
    await mkdir(runsDir, { mode: 0o700 });
    try {
      const runs = await walkIntoRuns(root, runsDir, sizing.unitsPerRun, true);
      const temp = `${file}.${randomUUID().slice(0, 8)}.tmp`;
      const job: MergeJob = { root, runs, file, temp, cache: cache?.file ?? null };
      return new ManifestFile(await inThread<MergeJob, MergedManifest>('manifest-merge', job));
    } catch (err) {
      await rm(file, { force: true });
      // the walk reads the slot; the runs and the merge also write beside `file`: both are named
      const where = `cannot make the manifest of ${root} in ${dirname(file)}`;
      throw new MirrorswapError('FLEET_MANIFEST', `${where}: ${(err as Error).message}`, { cause: err });
    } finally {
      await rm(runsDir, { recursive: true, force: true });
    }
  }

  /**
   * The files among `paths` (size and hash): one read of an indexed stretch
   * per stretch named, whatever their number. A path that is not a file of
   * the manifest is left out of the answer.
   */
  async files(paths: readonly string[]): Promise<Map<string, { size: number; hash: string }>> {
    const found = new Map<string, { size: number; hash: string }>();
    const stretches = new Map<number, string[]>();
    for (const path of paths) {
      const key = JSON.stringify(path);
      const at = this.#stretchOf(key);
      if (at < 0) continue;
      const keys = stretches.get(at);
      if (keys) keys.push(key);
      else stretches.set(at, [key]);
    }
    if (stretches.size === 0) return found;
    const handle = await open(this.file, 'r');
    try {
      for (const [at, keys] of stretches) {
        const start = this.#offsets[at] as number;
        const end = this.#offsets[at + 1] ?? this.bytes;
        const buffer = Buffer.allocUnsafe(end - start);
        const { bytesRead } = await handle.read(buffer, 0, buffer.length, start);
        const lines = new Map<string, string>();
        for (const line of buffer.toString('utf8', 0, bytesRead).split('\n')) lines.set(keyOf(line), line);
        for (const key of keys) {
          const line = lines.get(key);
          if (line === undefined || !isFileLine(line, key)) continue;
          const entry = JSON.parse(entryOf(line)) as ManifestEntry;
          found.set(entry.path, { size: entry.size, hash: entry.hash as string });
        }
      }
    } finally {
      await handle.close();
    }
    return found;
  }

  /** The stretch a key falls in: the last indexed key not after it; -1 before the first. */
  #stretchOf(key: string): number {
    let lo = 0;
    let hi = this.#keys.length - 1;
    let at = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if ((this.#keys[mid] as string) <= key) {
        at = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return at;
  }

  /** Remove the file (an open cursor reads on: the inode goes with the last descriptor). */
  async remove(): Promise<void> {
    await rm(this.file, { force: true });
  }
}

/**
 * The walk, in sorted runs: each a group of `unitsPerRun` walk units,
 * walked, sorted and written by a walk thread. With `made`, the variants the
 * copy's content index names as made are marked so (`ManifestEntry.made`).
 * Returns the runs written.
 */
export async function walkIntoRuns(root: string, dir: string, unitsPerRun: number, made = false): Promise<string[]> {
  const units = planUnits(root, [''], WALK_THREADS);
  const groups: { i: number; units: WalkUnit[] }[] = [];
  for (let i = 0; i * unitsPerRun < units.length; i++)
    groups.push({ i, units: units.slice(i * unitsPerRun, (i + 1) * unitsPerRun) });
  const runs: string[] = [];
  await walkPool.run<{ i: number; units: WalkUnit[] }, string | null>(
    'manifest-run',
    { root, runsDir: dir, made },
    groups,
    (files) => {
      for (const file of files) if (file !== null) runs.push(file);
      return true;
    },
    undefined,
    { maxChunk: 1 },
  );
  return runs;
}

/**
 * Write to `into` the manifest answer a host asks for: the whole of
 * `target`, or what changed in it since `base` (a merge of the two files, in
 * a walk thread). Written once per pair, then sent as it is to every host
 * that asks: the same bytes the objects' JSON made. Returns its size.
 */
export function writeManifestAnswer(
  into: string,
  snapshot: string,
  target: ManifestFile,
  base: { id: string; manifest: ManifestFile } | null,
): Promise<number> {
  // a host waits for it: before the jobs waiting, a copy's walk among them
  const temp = `${into}.${randomUUID().slice(0, 8)}.tmp`;
  return inThread<AnswerJob, number>(
    'manifest-answer',
    {
      into,
      temp,
      removedTemp: `${temp}.removed`,
      snapshot,
      target: target.file,
      base: base ? { id: base.id, file: base.manifest.file } : null,
    },
    true,
  );
}
