import type http from 'node:http';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { PullLimits } from '../../tree/fleet-limits.js';
import { ANSWER_FIELDS, ENTRY_FIELDS, type Pace, checkEntry, checkRemoved, refuse } from './pull-checks.js';

/*
 * A manifest answer read as it comes, never held whole: a million files make
 * some 190 MB of JSON, which parsed whole took a host near a gigabyte. Its
 * bytes are scanned one by one for the shape of an answer (one object; two
 * arrays, `changed` of flat entry objects and `removed` of paths; its other
 * values strings or null), each element is cut out, parsed alone and checked
 * (`checkEntry`), and becomes a line of a sorted run on disk, as the
 * coordinator's own manifests are (`manifest-line.ts`): `key\tentry` for a
 * changed entry, `key` for a removed path, `key` the path as a JSON string.
 * The runs are merged with the slot's walk in a walk thread
 * (`manifest-delta.ts`). What is held: one chunk, one element, one run.
 */

/** Lines a run holds before it is sorted and written (some 7 MB of text at 200 bytes a line). */
const RUN_LINES = 32 * 1024;
/**
 * Characters a run holds before it is written, whatever its lines: an answer
 * of long paths (4 KB each, twice a line) would otherwise hold 32,768 lines
 * of 8 KB, a quarter of a gigabyte of strings and twice that while written.
 */
const RUN_CHARS = 8 * 1024 * 1024;

/** What the answer said, its entries in sorted runs on disk. */
export interface ReceivedAnswer {
  /** The snapshot it is a delta from; null for a whole manifest. */
  base: string | null;
  /** Runs of `key\tentry` lines, each sorted: the entries new or changed. */
  changedRuns: string[];
  /** Runs of `key` lines, each sorted: the paths removed (a delta's only). */
  removedRuns: string[];
  changed: number;
  removed: number;
  /** Bytes of the answer. */
  bytes: number;
}

/**
 * Read a manifest answer into sorted runs in `dir` (made by the caller),
 * checked against what was asked: `snapshot`, and a delta from `asked` (null:
 * the whole manifest). A delta is taken only as the answer to the delta asked
 * for: one from another base, or one when the whole manifest was asked for,
 * would make the host apply changes to a tree they were not computed from.
 * The coordinator may answer the whole manifest instead of a delta (it no
 * longer knows the base); a whole manifest's `removed` is ignored (what went
 * is worked out from the slot).
 */
export async function receiveManifest(
  res: http.IncomingMessage,
  dir: string,
  snapshot: string,
  asked: string | null,
  limits: Readonly<PullLimits>,
  pace: Pace,
): Promise<ReceivedAnswer> {
  const announced = Number(res.headers['content-length']);
  const tooLarge = (n: number) => {
    res.destroy();
    return refuse(`a manifest of ${n} bytes or more, over the bound of ${limits.manifestBytes} bytes`);
  };
  if (Number.isFinite(announced) && announced > limits.manifestBytes) throw tooLarge(announced);
  const runs = { changed: new RunWriter(join(dir, 'changed')), removed: new RunWriter(join(dir, 'removed')) };
  const scanner = new AnswerScanner(limits, (field, text) => {
    const raw = parsed(text);
    if (field === 'changed') {
      const entry = checkEntry(raw, limits);
      return runs.changed.add(`${JSON.stringify(entry.path)}\t${JSON.stringify(entry)}`);
    }
    return runs.removed.add(JSON.stringify(checkRemoved(raw, limits)));
  });
  let bytes = 0;
  try {
    const it = res[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    for (let next = await pace.next(it, res); !next.done; next = await pace.next(it, res)) {
      bytes += next.value.length;
      if (bytes > limits.manifestBytes) throw tooLarge(bytes);
      await scanner.scan(next.value);
    }
  } finally {
    res.destroy();
  }
  const answer = scanner.end();
  if (answer.snapshot !== undefined && answer.snapshot !== snapshot)
    throw refuse(`the manifest of snapshot ${JSON.stringify(answer.snapshot)} where ${snapshot} was asked for`);
  const base = answer.base ?? null;
  if (base !== null) {
    if (typeof base !== 'string') throw refuse('a malformed manifest (its base)');
    if (asked === null)
      throw refuse(`a delta from snapshot ${JSON.stringify(base)} where the whole manifest was asked for`);
    if (base !== asked)
      throw refuse(`a delta from snapshot ${JSON.stringify(base)} where one from ${asked} was asked for`);
  }
  await runs.changed.end();
  await runs.removed.end();
  return {
    base,
    changedRuns: runs.changed.files,
    // a whole manifest is compared with the slot: whatever it says went is worked out there
    removedRuns: base === null ? [] : runs.removed.files,
    changed: runs.changed.lines,
    removed: base === null ? 0 : runs.removed.lines,
    bytes,
  };
}

/** A piece of the answer parsed: an element, a key or a value; refused when it is not JSON. */
function parsed(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw refuse('a manifest that is not JSON');
  }
}

/** Lines gathered into sorted runs, each written once it holds RUN_LINES or RUN_CHARS. */
class RunWriter {
  readonly files: string[] = [];
  lines = 0;
  #run: string[] = [];
  #chars = 0;
  readonly #prefix: string;
  constructor(prefix: string) {
    this.#prefix = prefix;
  }
  async add(line: string): Promise<void> {
    this.lines++;
    this.#run.push(line);
    this.#chars += line.length;
    if (this.#run.length >= RUN_LINES || this.#chars >= RUN_CHARS) await this.#write();
  }
  async end(): Promise<void> {
    if (this.#run.length > 0) await this.#write();
  }
  async #write(): Promise<void> {
    const run = this.#run;
    this.#run = [];
    this.#chars = 0;
    // keys are JSON strings, never one the prefix of another: the lines sort as their keys
    run.sort();
    const file = `${this.#prefix}-${this.files.length}`;
    await writeFile(file, `${run.join('\n')}\n`, { flag: 'wx', mode: 0o600 });
    this.files.push(file);
  }
}

/** The answer's own values, as it gave them (checked by the caller). */
interface AnswerFields {
  snapshot?: unknown;
  base?: unknown;
}

type ArrayField = 'changed' | 'removed';

/** Where the scanner is in the answer's object, outside its arrays. */
type Expect = 'open' | 'key' | 'colon' | 'value' | 'comma' | 'done';

const QUOTE = 0x22;
const BACKSLASH = 0x5c;

/**
 * The answer's bytes, scanned for its shape one byte at a time across
 * chunks: nesting deeper than an entry, more fields than an entry or an
 * answer has, or an element over the bound of the largest entry are refused
 * before any of it is parsed (junk of many small values, `[{},{},...]`,
 * would make objects of many times its bytes). Each element of `changed` and
 * `removed`, and each value of the answer's other fields, is cut out whole
 * and handed on as text.
 */
class AnswerScanner {
  readonly #limits: Readonly<PullLimits>;
  readonly #onElement: (field: ArrayField, text: string) => Promise<void>;
  /** The largest element a well-formed answer holds: an entry with a path and a target of the bounds, escaped. */
  readonly #maxElement: number;
  readonly #fields: AnswerFields = {};
  readonly #seen = new Set<string>();
  #expect: Expect = 'open';
  /** 1: the answer's object; 2: one of its arrays; 3: an entry of one. */
  #depth = 0;
  #inString = false;
  #escaped = false;
  #key = '';
  #array: ArrayField | null = null;
  /** In an array: an element or its end next (after `[`), an element (after `,`), `,` or the end (after one). */
  #arrayExpect: 'first' | 'element' | 'comma' = 'first';
  #entryFields = 0;
  #elements = 0;
  /** What is being cut out: a key, a value or an element; its bytes so far and where it starts in this chunk. */
  #capture: 'key' | 'value' | 'element' | null = null;
  #parts: Buffer[] = [];
  #partBytes = 0;
  #from = 0;

  constructor(limits: Readonly<PullLimits>, onElement: (field: ArrayField, text: string) => Promise<void>) {
    this.#limits = limits;
    this.#onElement = onElement;
    this.#maxElement = 6 * (limits.pathBytes + limits.linkTargetBytes) + 1024;
  }

  async scan(chunk: Buffer): Promise<void> {
    this.#from = 0;
    for (let i = 0; i < chunk.length; i++) {
      const c = chunk[i] as number;
      if (this.#inString) {
        if (this.#escaped) this.#escaped = false;
        else if (c === BACKSLASH) this.#escaped = true;
        else if (c === QUOTE) {
          this.#inString = false;
          // a key, a string value of the answer, or a path of `removed`: cut out at its closing quote
          if (this.#depth <= 2 && this.#capture !== null) await this.#endCapture(chunk, i + 1);
        }
        continue;
      }
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) continue;
      if (this.#capture === 'value') {
        // a bare value (null, a number) ends where the next field or the end of the answer begins
        if (c !== 0x2c && c !== 0x7d) continue;
        await this.#endCapture(chunk, i);
        this.#afterValue(c);
        continue;
      }
      if (this.#depth === 3) this.#inEntry(c);
      else if (this.#depth === 2) this.#inArray(c, i);
      else this.#inAnswer(c, i);
      if (this.#capture === 'element' && this.#depth === 2 && c === 0x7d) await this.#endCapture(chunk, i + 1);
    }
    if (this.#capture !== null) this.#keep(chunk.subarray(this.#from));
  }

  /** The answer's fields, once it has ended whole. */
  end(): AnswerFields {
    if (this.#expect !== 'done') throw refuse('a manifest cut short (not JSON)');
    if (!this.#seen.has('changed') || !this.#seen.has('removed')) throw refuse('a malformed manifest');
    return this.#fields;
  }

  #malformed(): never {
    throw refuse('a manifest of another shape than a manifest (nested values, or extra fields)');
  }

  #inAnswer(c: number, i: number): void {
    switch (this.#expect) {
      case 'open':
        if (c !== 0x7b) throw refuse('a malformed manifest');
        this.#depth = 1;
        this.#expect = 'key';
        return;
      case 'key':
        if (c === 0x7d && this.#seen.size === 0) {
          this.#close();
          return;
        }
        if (c !== QUOTE) this.#malformed();
        this.#start('key', i);
        this.#inString = true;
        return;
      case 'colon':
        if (c !== 0x3a) this.#malformed();
        this.#expect = 'value';
        return;
      case 'value':
        if (c === 0x5b) {
          // only `changed` and `removed` are arrays, each once
          if ((this.#key !== 'changed' && this.#key !== 'removed') || this.#seen.has(this.#key)) this.#malformed();
          this.#seen.add(this.#key);
          this.#array = this.#key;
          this.#arrayExpect = 'first';
          this.#depth = 2;
          return;
        }
        if (c === 0x7b || c === 0x5d || c === 0x7d || c === 0x2c || c === 0x3a) this.#malformed();
        if (!ANSWER_FIELDS.has(this.#key))
          throw refuse(`a manifest with a field ${JSON.stringify(this.#key.slice(0, 50))}`);
        if (this.#seen.has(this.#key)) this.#malformed();
        this.#seen.add(this.#key);
        this.#start('value', i);
        if (c === QUOTE) this.#inString = true;
        return;
      case 'comma':
        this.#afterValue(c);
        return;
      case 'done':
        throw refuse('a manifest followed by more than a manifest (not JSON)');
    }
  }

  /** After a field's value: the next field, or the end of the answer. */
  #afterValue(c: number): void {
    if (c === 0x2c) this.#expect = 'key';
    else if (c === 0x7d) this.#close();
    else this.#malformed();
  }

  #close(): void {
    this.#depth = 0;
    this.#expect = 'done';
  }

  #inArray(c: number, i: number): void {
    if (c === 0x5d && this.#arrayExpect !== 'element') {
      this.#depth = 1;
      this.#array = null;
      this.#expect = 'comma';
      return;
    }
    if (this.#arrayExpect === 'comma') {
      if (c !== 0x2c) this.#malformed();
      this.#arrayExpect = 'element';
      return;
    }
    // an element: an entry object in `changed`, a path in `removed`
    if (++this.#elements > this.#limits.manifestEntries)
      throw refuse(
        `a manifest of more than ${this.#limits.manifestEntries} entries, over the bound of ${this.#limits.manifestEntries}`,
      );
    this.#arrayExpect = 'comma';
    if (this.#array === 'changed' && c === 0x7b) {
      this.#start('element', i);
      this.#depth = 3;
      this.#entryFields = 0;
    } else if (this.#array === 'removed' && c === QUOTE) {
      this.#start('element', i);
      this.#inString = true;
    } else this.#malformed();
  }

  #inEntry(c: number): void {
    if (c === QUOTE) {
      this.#inString = true;
    } else if (c === 0x7b || c === 0x5b) {
      this.#malformed();
    } else if (c === 0x3a) {
      if (++this.#entryFields > ENTRY_FIELDS.size) this.#malformed();
    } else if (c === 0x7d) {
      this.#depth = 2;
    }
  }

  #start(what: 'key' | 'value' | 'element', i: number): void {
    this.#capture = what;
    this.#parts = [];
    this.#partBytes = 0;
    this.#from = i;
  }

  /** Bytes of the capture from an earlier chunk (or this one's end), kept within the bound of an element. */
  #keep(part: Buffer): void {
    this.#partBytes += part.length;
    if (this.#partBytes > this.#maxElement)
      throw refuse(`a manifest entry over the bound of ${this.#maxElement} bytes`);
    this.#parts.push(Buffer.from(part)); // a copy: the chunk is let go
    this.#from = 0;
  }

  async #endCapture(chunk: Buffer, end: number): Promise<void> {
    const last = chunk.subarray(this.#from, end);
    if (this.#partBytes + last.length > this.#maxElement)
      throw refuse(`a manifest entry over the bound of ${this.#maxElement} bytes`);
    const text =
      this.#parts.length === 0 ? last.toString('utf8') : Buffer.concat([...this.#parts, last]).toString('utf8');
    const what = this.#capture;
    this.#capture = null;
    this.#parts = [];
    this.#partBytes = 0;
    if (what === 'element') return this.#onElement(this.#array as ArrayField, text);
    const value = parsed(text);
    if (what === 'key') {
      this.#key = value as string;
      this.#expect = 'colon';
      return;
    }
    if (this.#key === 'snapshot') this.#fields.snapshot = value;
    else if (this.#key === 'base') this.#fields.base = value;
    else this.#malformed(); // `changed` or `removed` given as something else than an array
    this.#expect = 'comma';
  }
}
