import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import { StringDecoder } from 'node:string_decoder';

/**
 * Bytes a cursor reads at a time, and holds (with the lines made of them): a
 * merge of 125 runs holds 125 such chunks.
 */
const READ_BYTES = 32 * 1024;
/** Bytes a writer gathers before it writes. */
const WRITE_BYTES = 256 * 1024;

/*
 * Both run in a walk thread, with blocking calls: a merge of a million lines
 * makes garbage at a rate that grows the main thread's young generation to
 * its ceiling (some 48 MB in V8), where a walk thread's is held to 4 MB.
 */

/**
 * A file's lines in order, read a chunk at a time: what a merge of sorted
 * files walks, holding one chunk of each file, never the file. `line` is the
 * line under the cursor (null past the end); `next()` moves on.
 */
export class LineCursor {
  readonly #fd: number;
  readonly #decoder = new StringDecoder('utf8');
  readonly #buffer = Buffer.allocUnsafe(READ_BYTES);
  #lines: string[] = [];
  #at = 0;
  /** The end of the last chunk read, when it did not end a line. */
  #partial = '';
  #ended = false;
  #closed = false;

  /** A cursor on the first line of `file`. */
  constructor(file: string) {
    this.#fd = openSync(file, 'r');
    try {
      this.#fill();
    } catch (err) {
      closeSync(this.#fd);
      throw err;
    }
  }

  /** The line under the cursor, without its newline; null past the last one. */
  get line(): string | null {
    return this.#at < this.#lines.length ? (this.#lines[this.#at] as string) : null;
  }

  /** Move to the next line. */
  next(): void {
    this.#at++;
    if (this.#at >= this.#lines.length) this.#fill();
  }

  /** Read on until a whole line is under the cursor, or the file ends. */
  #fill(): void {
    while (this.#at >= this.#lines.length && !this.#ended) {
      const n = readSync(this.#fd, this.#buffer, 0, READ_BYTES, null);
      let text = this.#partial;
      if (n === 0) {
        this.#ended = true;
        text += this.#decoder.end();
        this.#lines = text === '' ? [] : [text];
        this.#partial = '';
      } else {
        text += this.#decoder.write(this.#buffer.subarray(0, n));
        const lines = text.split('\n');
        this.#partial = lines.pop() as string;
        this.#lines = lines;
      }
      this.#at = 0;
    }
  }

  /** Close the file, once: a second call does nothing (the number may be another file's by then). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeSync(this.#fd);
  }
}

/**
 * Text gathered and written to a file in large writes. `add` says where the
 * text starts in the file (for an index of it). The text is encoded into
 * one buffer, kept for the writer's life: a fresh buffer for each write
 * lives on outside the heap until a full collection finds it (in a walk
 * thread, whose young generation is small, that was 300 MB of RSS for a
 * merge of a million lines).
 */
export class LineWriter {
  readonly #fd: number;
  readonly #buffer = Buffer.allocUnsafe(WRITE_BYTES);
  #closed = false;
  #used = 0;
  /** Bytes written so far. */
  #written = 0;

  /** A writer on `file`, made anew (never one there already), readable by its owner only. */
  constructor(file: string) {
    this.#fd = openSync(file, 'wx', 0o600);
  }

  /** Add `text` (newlines are the caller's); returns the byte offset it starts at. */
  add(text: string): number {
    const at = this.#written + this.#used;
    const bytes = Buffer.byteLength(text);
    if (this.#used + bytes > WRITE_BYTES) this.flush();
    if (bytes > WRITE_BYTES) {
      this.#writeAll(Buffer.from(text));
      return at;
    }
    this.#used += this.#buffer.write(text, this.#used);
    return at;
  }

  /** The bytes of the file once all that was added is written. */
  get size(): number {
    return this.#written + this.#used;
  }

  flush(): void {
    if (this.#used === 0) return;
    const used = this.#used;
    this.#used = 0;
    this.#writeAll(this.#buffer.subarray(0, used));
  }

  #writeAll(data: Buffer): void {
    for (let off = 0; off < data.length; ) off += writeSync(this.#fd, data, off, data.length - off);
    this.#written += data.length;
  }

  /** Add the whole of `file`, read and written a chunk at a time (through the writer's buffer). */
  append(file: string): void {
    this.flush();
    const source = openSync(file, 'r');
    try {
      for (;;) {
        const n = readSync(source, this.#buffer, 0, WRITE_BYTES, null);
        if (n === 0) break;
        this.#writeAll(this.#buffer.subarray(0, n));
      }
    } finally {
      closeSync(source);
    }
  }

  /** Write what is left and close; `close()` after a failure closes without writing. */
  end(): void {
    try {
      this.flush();
    } finally {
      this.close();
    }
  }

  /** Close the file, once: a second call does nothing (the number may be another file's by then). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeSync(this.#fd);
  }
}
