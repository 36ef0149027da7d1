import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { writeFileAtomic } from './atomic-write.js';
import { MirrorswapError } from './errors.js';
import type { SlotName } from './store-layout.js';

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
}

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
  if (typeof obj.epoch !== 'number' || !Number.isSafeInteger(obj.epoch) || obj.epoch < 1) {
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
  const r = roots as Record<SlotName, string>;
  return Object.freeze({
    format: EPOCH_FORMAT,
    epoch: obj.epoch as number,
    mounted: obj.mounted as SlotName,
    roots: Object.freeze({ a: r.a, b: r.b }),
    publishedAt: obj.publishedAt as string,
  });
}

/** Read the epoch file; `null` when it does not exist yet (the store is not ready). */
export async function readEpochFile(file: string): Promise<EpochRecord | null> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new MirrorswapError('EPOCH_READ', `cannot read epoch file ${file}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return parseEpochRecord(text, file);
}

export async function writeEpochFile(file: string, record: EpochRecord): Promise<void> {
  await writeFileAtomic(file, `${JSON.stringify(record, null, 2)}\n`, { durable: true });
}

/** The absolute root of a slot as named by the record. */
export function slotRoot(record: EpochRecord, epochFile: string, slot: SlotName = record.mounted): string {
  const root = record.roots[slot];
  return isAbsolute(root) ? root : resolve(dirname(epochFile), root);
}
