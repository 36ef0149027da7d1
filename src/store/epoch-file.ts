import { dirname, isAbsolute, resolve } from 'node:path';
import { writeFileAtomic } from './atomic-write.js';
import { isIntegerAtLeast } from '../core/checks.js';
import { MirrorswapError } from '../core/errors.js';
import type { SlotName } from './store-layout.js';
import { readSmallFile } from './read-small-file.js';

/** The format this version writes and the only one it reads. */
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
  readonly roots: Readonly<Record<SlotName, string>>;
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
  if (obj.mounted !== 'a' && obj.mounted !== 'b') bad('mounted', '"a" or "b"');
  const roots = obj.roots as Record<string, unknown> | undefined;
  if (typeof roots !== 'object' || roots === null) bad('roots', 'an object with "a" and "b"');
  for (const slot of ['a', 'b'] as const) {
    const root = (roots as Record<string, unknown>)[slot];
    if (typeof root !== 'string' || root === '' || root.includes('\0')) bad(`roots.${slot}`, 'a non-empty path');
  }
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
  const r = roots as Record<SlotName, string>;
  return Object.freeze({
    format: EPOCH_FORMAT,
    epoch: obj.epoch as number,
    mounted: obj.mounted as SlotName,
    roots: Object.freeze({ a: r.a, b: r.b }),
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
    throw new MirrorswapError('EPOCH_READ', `cannot read epoch file ${file}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return bytes === null ? null : parseEpochRecord(bytes.toString('utf8'), file);
}

export async function writeEpochFile(file: string, record: EpochRecord): Promise<void> {
  await writeFileAtomic(file, `${JSON.stringify(record, null, 2)}\n`, { durable: true });
}

/** The absolute root of a slot as named by the record. */
export function slotRoot(record: EpochRecord, epochFile: string, slot: SlotName = record.mounted): string {
  const root = record.roots[slot];
  return isAbsolute(root) ? root : resolve(dirname(epochFile), root);
}
