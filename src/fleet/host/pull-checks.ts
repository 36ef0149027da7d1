import type http from 'node:http';
import { MirrorswapError } from '../../core/errors.js';
import { treeMode } from '../../tree/tree-mode.js';
import { pathCharacterProblem } from '../../store/write-path.js';
import type { PullLimits } from '../../tree/fleet-limits.js';
import { type ManifestDelta, type ManifestEntry, badPath } from '../../tree/manifest.js';

/**
 * A host's checks of what its coordinator answers: nothing it is sent is
 * trusted for its shape, its size or its modes. Each refusal is a
 * FLEET_PULL error naming what was wrong, and the bound when one was passed.
 */

/** `who`: the coordinator, or a peer (named by its URL) for a files answer from one. */
const refuse = (message: string, who = 'the coordinator') =>
  new MirrorswapError('FLEET_PULL', `${who} sent ${message}`);

/**
 * The pace of one answer: the time the host waits for its bytes (not what it
 * spends on them) may pass `timeoutMs` only by what `minBytesPerSecond`
 * allows for the bytes that came. A coordinator that sends a byte every
 * half second is never idle long enough for the idle timer, and would hold a
 * pull for ever.
 */
export class Pace {
  #waited = 0;
  #bytes = 0;
  readonly #graceMs: number;
  readonly #minBytesPerSecond: number;
  readonly #who: string;
  constructor(graceMs: number, minBytesPerSecond: number, who = 'the coordinator') {
    this.#graceMs = graceMs;
    this.#minBytesPerSecond = minBytesPerSecond;
    this.#who = who;
  }
  /** Count from here on as a new answer: its bytes and its waits only (the silence bound stays). */
  restart(): void {
    this.#waited = 0;
    this.#bytes = 0;
  }
  /**
   * The next chunk of `it`, timed; refused when the answer has come too
   * slowly so far, or when nothing came for the grace (the time counted is
   * the host's wait for bytes, never what it spends writing them).
   */
  async next(it: AsyncIterator<Buffer>, res: http.IncomingMessage): Promise<IteratorResult<Buffer>> {
    const started = performance.now();
    let timer: NodeJS.Timeout | undefined;
    const silent = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        res.destroy();
        reject(new MirrorswapError('FLEET_PULL', `${this.#who} sent nothing for ${this.#graceMs} ms`));
      }, this.#graceMs);
    });
    let next: IteratorResult<Buffer>;
    try {
      next = await Promise.race([it.next(), silent]);
    } finally {
      clearTimeout(timer);
    }
    this.#waited += performance.now() - started;
    if (!next.done) this.#bytes += next.value.length;
    const allowedMs = this.#graceMs + (this.#bytes / this.#minBytesPerSecond) * 1000;
    if (this.#waited > allowedMs) {
      res.destroy();
      throw refuse(
        `${this.#bytes} bytes in ${Math.round(this.#waited)} ms of waiting, slower than the bound of ${this.#minBytesPerSecond} bytes a second past ${this.#graceMs} ms`,
        this.#who,
      );
    }
    return next;
  }
}

/** The body of `res`, refused once it passes `max` bytes (announced or sent): never held beyond it. */
export async function readCapped(res: http.IncomingMessage, max: number, what: string, pace: Pace): Promise<Buffer> {
  const announced = Number(res.headers['content-length']);
  const tooLarge = (n: number) => {
    res.destroy();
    return refuse(`${what} of ${n} bytes or more, over the bound of ${max} bytes`);
  };
  if (Number.isFinite(announced) && announced > max) throw tooLarge(announced);
  const chunks: Buffer[] = [];
  let length = 0;
  const it = res[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  for (let next = await pace.next(it, res); !next.done; next = await pace.next(it, res)) {
    length += next.value.length;
    if (length > max) throw tooLarge(length);
    chunks.push(next.value);
  }
  return Buffer.concat(chunks, length);
}

/** The fields of a manifest answer and of an entry: anything else is refused, never held. */
const ANSWER_FIELDS = new Set(['snapshot', 'base', 'changed', 'removed']);
const ENTRY_FIELDS = new Set(['path', 'type', 'mode', 'size', 'mtimeMs', 'target', 'hash']);

/**
 * The shape of a manifest answer's JSON, looked at byte by byte before it is
 * parsed: one object whose values are strings, null or two arrays of
 * entries, each entry an object of at most as many fields as an entry has,
 * each field a string, a number or null. So parsing it makes no more values
 * than its entries need (junk of many small values, `[{},{},...]`, would make
 * 30 MB of JSON a gigabyte of objects), and its entries are counted before
 * it is parsed. Only the shape: what the values are is checked once parsed.
 */
export function checkManifestShape(json: Buffer, limits: Readonly<PullLimits>): void {
  const malformed = () => refuse('a manifest of another shape than a manifest (nested values, or extra fields)');
  let depth = 0;
  let arrays = 0;
  let answerFields = 0;
  let entryFields = 0; // of the entry being read
  let elements = 0;
  let expectElement = false;
  for (let i = 0; i < json.length; i++) {
    const c = json[i] as number;
    if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) continue;
    if (expectElement && c !== 0x5d) {
      expectElement = false;
      if (++elements > limits.manifestEntries)
        throw refuse(
          `a manifest of more than ${limits.manifestEntries} entries, over the bound of ${limits.manifestEntries}`,
        );
    }
    if (c === 0x22) {
      // a string: skipped whole, escapes included
      for (i++; i < json.length && json[i] !== 0x22; i++) if (json[i] === 0x5c) i++;
      continue;
    }
    if (c === 0x7b) {
      // the answer itself, or an entry of one of its arrays
      if (depth !== 0 && depth !== 2) throw malformed();
      depth++;
      entryFields = 0;
    } else if (c === 0x5b) {
      if (depth !== 1 || ++arrays > 2) throw malformed();
      depth++;
      expectElement = true;
    } else if (c === 0x7d || c === 0x5d) {
      depth--;
      expectElement = false; // an empty array
    } else if (c === 0x3a) {
      if (depth === 1 ? ++answerFields > ANSWER_FIELDS.size : ++entryFields > ENTRY_FIELDS.size) throw malformed();
    } else if (c === 0x2c && depth === 2) {
      expectElement = true;
    }
  }
}

const TYPES = new Set(['file', 'dir', 'link']);
const HASH = /^[0-9a-f]{64}$/;

/** One manifest entry as the host will use it: checked field by field, its mode masked (`treeMode`). */
function checkEntry(raw: unknown, limits: Readonly<PullLimits>): ManifestEntry {
  if (typeof raw !== 'object' || raw === null) throw refuse('a manifest entry that is not an object');
  const e = raw as Record<string, unknown>;
  for (const field in e)
    if (!ENTRY_FIELDS.has(field)) throw refuse(`a manifest entry with a field ${JSON.stringify(field.slice(0, 50))}`);
  const bad = badPath(e.path, limits);
  if (bad) throw refuse(`an unsafe path ${JSON.stringify(String(e.path).slice(0, 200))}: ${bad}`);
  const path = e.path as string;
  if (typeof e.type !== 'string' || !TYPES.has(e.type)) throw refuse(`${path} of an unknown type`);
  const type = e.type as ManifestEntry['type'];
  if (!Number.isInteger(e.mode) || (e.mode as number) < 0 || (e.mode as number) > 0o7777)
    throw refuse(`${path} with a mode that is no permission bits`);
  if (!Number.isSafeInteger(e.size) || (e.size as number) < 0) throw refuse(`${path} with a bad size`);
  if (typeof e.mtimeMs !== 'number' || !Number.isFinite(e.mtimeMs)) throw refuse(`${path} with a bad time`);
  const entry: ManifestEntry = {
    path,
    type,
    // no setuid, setgid or sticky bit lands on a host: a web tree needs none
    mode: treeMode(e.mode as number, type === 'dir'),
    size: type === 'file' ? (e.size as number) : 0,
    mtimeMs: Math.floor(e.mtimeMs),
  };
  if (type === 'link') {
    const target = e.target;
    if (typeof target !== 'string' || target === '') throw refuse(`a link ${path} without a target`);
    const chars = pathCharacterProblem(target);
    if (chars) throw refuse(`a link ${path} whose target holds ${chars}`);
    if (Buffer.byteLength(target) > limits.linkTargetBytes)
      throw refuse(`a link ${path} whose target is over the bound of ${limits.linkTargetBytes} bytes`);
    entry.target = target;
  }
  if (e.hash !== undefined) {
    if (typeof e.hash !== 'string' || !HASH.test(e.hash)) throw refuse(`${path} with a hash that is no SHA-256`);
    entry.hash = e.hash;
  }
  return entry;
}

/** A manifest answer, checked: the delta asked for, or the whole manifest (`base` null). */
export interface CheckedAnswer extends ManifestDelta {
  base: string | null;
}

/**
 * Check a manifest answer against what was asked: `snapshot`, and a delta
 * from `asked` (null: the whole manifest). A delta is taken only as the
 * answer to the delta asked for: one from another base, or one when the
 * whole manifest was asked for, would make the host apply changes to a tree
 * they were not computed from. The coordinator may answer the whole
 * manifest instead of a delta (it no longer knows the base).
 */
export function checkManifestAnswer(
  body: unknown,
  snapshot: string,
  asked: string | null,
  limits: Readonly<PullLimits>,
): CheckedAnswer {
  if (typeof body !== 'object' || body === null) throw refuse('a malformed manifest');
  const b = body as Record<string, unknown>;
  for (const field in b)
    if (!ANSWER_FIELDS.has(field)) throw refuse(`a manifest with a field ${JSON.stringify(field.slice(0, 50))}`);
  if (!Array.isArray(b.changed) || !Array.isArray(b.removed)) throw refuse('a malformed manifest');
  if (b.snapshot !== undefined && b.snapshot !== snapshot)
    throw refuse(`the manifest of snapshot ${JSON.stringify(b.snapshot)} where ${snapshot} was asked for`);
  const base = b.base ?? null;
  if (base !== null) {
    if (typeof base !== 'string') throw refuse('a malformed manifest (its base)');
    if (asked === null)
      throw refuse(`a delta from snapshot ${JSON.stringify(base)} where the whole manifest was asked for`);
    if (base !== asked)
      throw refuse(`a delta from snapshot ${JSON.stringify(base)} where one from ${asked} was asked for`);
  }
  const count = b.changed.length + b.removed.length;
  if (count > limits.manifestEntries)
    throw refuse(`a manifest of ${count} entries, over the bound of ${limits.manifestEntries}`);
  const changed = b.changed.map((raw) => checkEntry(raw, limits));
  // a path sorts before every path under it: parents are made first, whatever order it came in
  changed.sort((x, y) => (x.path < y.path ? -1 : x.path > y.path ? 1 : 0));
  // a path named twice is refused, compared as the bytes it names on disk: sorted, twice is side by
  // side (paths are well-formed by now, so equal bytes are equal strings)
  for (let i = 1; i < changed.length; i++)
    if (Buffer.from(changed[i - 1].path).equals(Buffer.from(changed[i].path)))
      throw refuse(`${changed[i].path} twice in one manifest`);
  // a whole manifest is compared with the slot: whatever it says went is worked out here
  const removed = base === null ? [] : (b.removed as unknown[]).map((p) => checkRemoved(p, limits));
  // deepest first, so a directory is emptied before it goes
  removed.sort((x, y) => y.split('/').length - x.split('/').length || (x < y ? 1 : -1));
  return { base, changed, removed };
}

function checkRemoved(path: unknown, limits: Readonly<PullLimits>): string {
  const bad = badPath(path, limits);
  if (bad) throw refuse(`an unsafe path ${JSON.stringify(String(path).slice(0, 200))}: ${bad}`);
  return path as string;
}

/** A frame's header, its length checked against the bound before a byte of it is read. */
export function checkFrameHeaderLength(length: number, limits: Readonly<PullLimits>, who?: string): void {
  if (length > limits.frameHeaderBytes)
    throw refuse(`a frame header of ${length} bytes, over the bound of ${limits.frameHeaderBytes}`, who);
}

export function parseFrameHeader(bytes: Buffer, who?: string): { path: string; size: number } {
  let header: unknown;
  try {
    header = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw refuse('a frame header that is not JSON', who);
  }
  const h = header as { path?: unknown; size?: unknown } | null;
  if (typeof h?.path !== 'string' || !Number.isSafeInteger(h.size)) throw refuse('a malformed frame header', who);
  const chars = pathCharacterProblem(h.path);
  if (chars) throw refuse(`a frame header whose path holds ${chars}`, who);
  return { path: h.path, size: h.size as number };
}
