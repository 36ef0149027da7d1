import type http from 'node:http';
import { MirrorswapError } from '../../core/errors.js';
import { treeMode } from '../../tree/tree-mode.js';
import { variantOf } from '../../tree/compressible.js';
import { pathCharacterProblem } from '../../store/write-path.js';
import type { PullLimits } from '../../tree/fleet-limits.js';
import { type ManifestEntry, badPath } from '../../tree/manifest.js';

/**
 * A host's checks of what its coordinator answers: nothing it is sent is
 * trusted for its shape, its size or its modes. Each refusal is a
 * FLEET_PULL error naming what was wrong, and the bound when one was passed.
 */

/** `who`: the coordinator, or a peer (named by its URL) for a files answer from one. */
export const refuse = (message: string, who = 'the coordinator') =>
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

/** The fields of a manifest answer and of an entry: anything else is refused, never held. */
export const ANSWER_FIELDS = new Set(['snapshot', 'base', 'changed', 'removed']);
export const ENTRY_FIELDS = new Set(['path', 'type', 'mode', 'size', 'mtimeMs', 'target', 'made', 'hash']);

const TYPES = new Set(['file', 'dir', 'link']);
const HASH = /^[0-9a-f]{64}$/;

/** One manifest entry as the host will use it: checked field by field, its mode masked (`treeMode`). */
export function checkEntry(raw: unknown, limits: Readonly<PullLimits>): ManifestEntry {
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
  if (e.made !== undefined) {
    // only ever `true`, and only of a file named as a variant of another (`app.js.br`)
    if (e.made !== true || type !== 'file' || variantOf(path.slice(path.lastIndexOf('/') + 1)) === null)
      throw refuse(`${path} marked made, which only a file named as a variant (X.br, X.gz) can be`);
    // a coordinator marks only files of a manifest with hashes; the mark is read beside the hash
    if (e.hash === undefined) throw refuse(`${path} marked made without a hash`);
    entry.made = true; // before the hash: a line's entry ends with its hash
  }
  if (e.hash !== undefined) {
    if (typeof e.hash !== 'string' || !HASH.test(e.hash)) throw refuse(`${path} with a hash that is no SHA-256`);
    entry.hash = e.hash;
  }
  return entry;
}

export function checkRemoved(path: unknown, limits: Readonly<PullLimits>): string {
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
