import { dirname, isAbsolute, resolve } from 'node:path';
import { writeFileAtomic } from './atomic-write.js';
import { isIntegerAtLeast } from '../core/checks.js';
import { MirrorswapError } from '../core/errors.js';
import { ALL_SLOTS, MAX_KEEP, type SlotMap, type SlotName, isSlotName } from './store-layout.js';
import { readSmallFile, readSmallFileSync } from './read-small-file.js';

/**
 * The format this version writes and the only one it reads. A store keeping
 * more than two releases adds optional fields (`retained`, `since`) and
 * mounts slots past b: a reader older than that keeps its last good epoch
 * and reports EPOCH_CORRUPT for slot c, so upgrade web servers first.
 */
export const EPOCH_FORMAT = 1;

/**
 * The shared epoch file: the whole contract between the agent and the web
 * servers. Only the agent writes it, always by atomic rename.
 */
export interface EpochRecord {
  readonly format: typeof EPOCH_FORMAT;
  /** Strictly increasing; readers never go back to a lower one. */
  readonly epoch: number;
  /** The slot every web server must serve from. */
  readonly mounted: SlotName;
  /** Slot roots; a relative root is resolved against the epoch file's directory. */
  readonly roots: Readonly<SlotMap<string>>;
  readonly publishedAt: string;
  /**
   * The agent's server lease (its --server-ttl), in ms: a server whose last
   * heartbeat is older is taken as dead, and the copy it mounts may be
   * rewritten. A server must re-read this file before it serves again after
   * going that long without renewing (optional: readers assume 10 s).
   */
  readonly lease?: number;
  /** The release id given at sync (`sync --release ID`: a git SHA, a deployment id), when one was. */
  readonly release?: string;
  /**
   * What the other slot held when this was published: the epoch (and release)
   * mounted before. A rollback mounts it again while that slot still holds it.
   */
  readonly previous?: PreviousRelease;
  /**
   * Keeping more than two releases: the releases other copies hold that a request pinned to one may
   * still be served from (skew protection), newest first. A copy the agent
   * is about to reuse leaves this list first, by a publish of its own, and is
   * written only once every live server reports it drained.
   */
  readonly retained?: readonly RetainedRelease[];
  /**
   * Keeping more than two releases: the epoch that published what `mounted` holds, when an earlier
   * one did (a publish that only retires a retained copy mounts the same
   * release again under a new epoch). Servers keep their cache across it,
   * and a pin names the release by this epoch.
   */
  readonly since?: number;
}

/** The epoch that published the release `record` mounts. */
export function releaseEpochOf(record: EpochRecord): number {
  return record.since ?? record.epoch;
}

/** A release a copy still holds, servable to requests pinned to it. */
export interface RetainedRelease {
  readonly slot: SlotName;
  readonly epoch: number;
  readonly release?: string;
  /** When a newer release replaced it as the mounted one (ISO 8601). */
  readonly replacedAt: string;
  /** After this (ISO 8601), pinned requests are no longer served from it (`--skew-max-age`); none: until it leaves the list. */
  readonly until?: string;
}

/** The release the other slot held at a publish. */
export interface PreviousRelease {
  readonly epoch: number;
  readonly release?: string;
}

/**
 * What a release id may be: 1 to 128 of letters, digits and `. _ : + @ -`,
 * starting with a letter or digit. A git SHA, `v1.2.3+build.5` or a
 * framework's deployment id (`dpl_8f2c…`) fit; it goes into headers, metric
 * labels and URLs, so nothing that needs quoting does.
 */
export const RELEASE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:+@-]{0,127}$/;

/** Why `value` is not a release id, or null when it is one. */
export function releaseIdProblem(value: unknown): string | null {
  if (typeof value !== 'string' || value === '') return 'a release id must be a non-empty string';
  if (!RELEASE_ID_PATTERN.test(value))
    return `release id ${JSON.stringify(value.slice(0, 140))} is not 1-128 of A-Z a-z 0-9 . _ : + @ - starting with a letter or digit`;
  return null;
}

/** The lease readers assume when the epoch file does not state one. */
export const DEFAULT_LEASE_MS = 10_000;

/** Validate parsed JSON as an epoch record; throws a MirrorswapError naming the field. */
export function parseEpochRecord(text: string, source: string): EpochRecord {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new MirrorswapError('EPOCH_CORRUPT', `${source}: not valid JSON (a partial or corrupt write?)`, {
      cause: err,
    });
  }
  const bad = (field: string, want: string): never => {
    throw new MirrorswapError('EPOCH_CORRUPT', `${source}: field "${field}" must be ${want}`);
  };
  if (typeof value !== 'object' || value === null || Array.isArray(value)) bad('(root)', 'an object');
  const obj = value as Record<string, unknown>;
  if (typeof obj.format === 'number' && obj.format > EPOCH_FORMAT) {
    throw new MirrorswapError(
      'EPOCH_FORMAT',
      `${source}: format ${obj.format} was written by a newer mirrorswap; upgrade the web servers first`,
    );
  }
  if (obj.format !== EPOCH_FORMAT) bad('format', String(EPOCH_FORMAT));
  if (!isIntegerAtLeast(obj.epoch, 1)) {
    bad('epoch', 'a positive integer');
  }
  const roots = obj.roots as Record<string, unknown> | undefined;
  if (typeof roots !== 'object' || roots === null) bad('roots', 'an object with "a" and "b"');
  const r: Record<string, string> = {};
  for (const slot of ALL_SLOTS) {
    const root = (roots as Record<string, unknown>)[slot];
    if (root === undefined && slot !== 'a' && slot !== 'b') continue;
    if (typeof root !== 'string' || root === '' || root.includes('\0')) bad(`roots.${slot}`, 'a non-empty path');
    r[slot] = root as string;
  }
  const named = (slot: unknown) => isSlotName(slot) && r[slot] !== undefined;
  if (!named(obj.mounted)) bad('mounted', '"a", "b", or another slot named in "roots"');
  if (typeof obj.publishedAt !== 'string' || Number.isNaN(Date.parse(obj.publishedAt))) {
    bad('publishedAt', 'an ISO 8601 timestamp');
  }
  if (obj.lease !== undefined && !isIntegerAtLeast(obj.lease, 1)) {
    bad('lease', 'a positive integer of milliseconds');
  }
  if (obj.release !== undefined && releaseIdProblem(obj.release)) bad('release', 'a release id (RELEASE_ID_PATTERN)');
  const previous = obj.previous as Record<string, unknown> | undefined;
  if (previous !== undefined) {
    if (typeof previous !== 'object' || previous === null) bad('previous', 'an object with "epoch"');
    const p = previous as Record<string, unknown>;
    if (!isIntegerAtLeast(p.epoch, 1)) bad('previous.epoch', 'a positive integer');
    if (p.release !== undefined && releaseIdProblem(p.release)) bad('previous.release', 'a release id');
  }
  if (obj.since !== undefined && (!isIntegerAtLeast(obj.since, 1) || (obj.since as number) > (obj.epoch as number))) {
    bad('since', 'a positive integer not above "epoch"');
  }
  let retained: RetainedRelease[] | undefined;
  if (obj.retained !== undefined) {
    if (!Array.isArray(obj.retained) || obj.retained.length >= MAX_KEEP) {
      bad('retained', `a list of at most ${MAX_KEEP - 1} releases`);
    }
    retained = (obj.retained as unknown[]).map((item, i) => {
      const it = (typeof item === 'object' && item !== null ? item : {}) as Record<string, unknown>;
      if (!named(it.slot) || it.slot === obj.mounted)
        bad(`retained[${i}].slot`, 'a slot named in "roots", not the mounted one');
      if (!isIntegerAtLeast(it.epoch, 1) || (it.epoch as number) >= (obj.epoch as number)) {
        bad(`retained[${i}].epoch`, 'a positive integer below "epoch"');
      }
      if (it.release !== undefined && releaseIdProblem(it.release)) bad(`retained[${i}].release`, 'a release id');
      if (typeof it.replacedAt !== 'string' || Number.isNaN(Date.parse(it.replacedAt))) {
        bad(`retained[${i}].replacedAt`, 'an ISO 8601 timestamp');
      }
      if (it.until !== undefined && (typeof it.until !== 'string' || Number.isNaN(Date.parse(it.until)))) {
        bad(`retained[${i}].until`, 'an ISO 8601 timestamp');
      }
      return Object.freeze({
        slot: it.slot as SlotName,
        epoch: it.epoch as number,
        ...(it.release !== undefined ? { release: it.release as string } : {}),
        replacedAt: it.replacedAt as string,
        ...(it.until !== undefined ? { until: it.until as string } : {}),
      });
    });
    if (new Set(retained.map((x) => x.slot)).size !== retained.length) bad('retained', 'one entry per slot');
  }
  return Object.freeze({
    format: EPOCH_FORMAT,
    epoch: obj.epoch as number,
    mounted: obj.mounted as SlotName,
    roots: Object.freeze(r) as SlotMap<string>,
    publishedAt: obj.publishedAt as string,
    ...(obj.lease !== undefined ? { lease: obj.lease as number } : {}),
    ...(obj.release !== undefined ? { release: obj.release as string } : {}),
    ...(previous !== undefined
      ? {
          previous: Object.freeze({
            epoch: previous.epoch as number,
            ...(previous.release !== undefined ? { release: previous.release as string } : {}),
          }),
        }
      : {}),
    ...(retained !== undefined ? { retained: Object.freeze(retained) } : {}),
    ...(obj.since !== undefined ? { since: obj.since as number } : {}),
  });
}

/** An epoch file is a few hundred bytes; a larger one is not read. */
const MAX_EPOCH_FILE_BYTES = 64 * 1024;

/** Read the epoch file; `null` when it does not exist yet (the store is not ready). */
export async function readEpochFile(file: string): Promise<EpochRecord | null> {
  let bytes: Buffer | null;
  try {
    bytes = await readSmallFile(file, MAX_EPOCH_FILE_BYTES);
  } catch (err) {
    throw epochReadError(file, err);
  }
  return bytes === null ? null : parseEpochRecord(bytes.toString('utf8'), file);
}

/** `readEpochFile` in the calling thread: for an epoch file on a local disk (see `readSmallFileSync`). */
export function readEpochFileSync(file: string): EpochRecord | null {
  let bytes: Buffer | null;
  try {
    bytes = readSmallFileSync(file, MAX_EPOCH_FILE_BYTES);
  } catch (err) {
    throw epochReadError(file, err);
  }
  return bytes === null ? null : parseEpochRecord(bytes.toString('utf8'), file);
}

function epochReadError(file: string, err: unknown): MirrorswapError {
  return new MirrorswapError('EPOCH_READ', `cannot read epoch file ${file}: ${(err as Error).message}`, { cause: err });
}

export async function writeEpochFile(file: string, record: EpochRecord): Promise<void> {
  await writeFileAtomic(file, `${JSON.stringify(record, null, 2)}\n`, { durable: true });
}

/** The absolute root of a slot as named by the record. */
export function slotRoot(record: EpochRecord, epochFile: string, slot: SlotName = record.mounted): string {
  const root = record.roots[slot];
  if (root === undefined) {
    throw new MirrorswapError('EPOCH_CORRUPT', `${epochFile}: names slot ${slot}, which its "roots" lack`);
  }
  return isAbsolute(root) ? root : resolve(dirname(epochFile), root);
}
