import { randomBytes } from 'node:crypto';
import { type FileHandle, open } from 'node:fs/promises';
import { writeFileAtomic } from '../../store/atomic-write.js';
import { readSmallFile } from '../../store/read-small-file.js';
import { writeAll } from '../../store/write-all.js';

/** Far beyond any journal compaction leaves (it is rewritten compact past 1000 lines). */
const MAX_JOURNAL_BYTES = 1024 ** 3;

/** A change to master as the write API makes it: staged temp file renamed into place, or a removal. */
export type MasterOp = { op: 'put'; path: string; tmp: string } | { op: 'delete'; path: string };

type JournalLine =
  | { journal: string; seq: number } // header: this journal's id and the sequence it starts after
  | { seq: number; ops: MasterOp[] } // intent of a write batch, durable before master changes
  | { seq: number; done: true } // the batch is fully applied to master
  | { seq: number; touched: string[] } // paths changed in master by something else (the watcher)
  | { seq: number; gap: string } // from here on, changes may have been missed: why
  | { seq: number; reconciled: number; through: number }; // master compared with a copy at `reconciled`: gaps up to `through` are covered

/**
 * The change journal: which master paths changed, in order. A slot synced up
 * to sequence S needs exactly the paths changed after S, so a sync costs time
 * in proportion to the changes, not to the tree.
 *
 * The journal is a hint, not the truth: master can change by paths it never
 * sees (while the agent is down, through a lost inotify event, in a directory
 * that could not be watched). Each such moment is logged as a gap; a position
 * with a gap after it is not trusted, and a slot at it is compared whole
 * (`trusts`). A comparison of master with a copy at position P, whose
 * differences are logged, covers the gaps after P that came before it.
 *
 * Write batches are logged as intents (fsync) before master is touched and
 * marked done after: on restart an intent without its done mark is redone,
 * which makes a batch all-or-nothing across a crash.
 */
export class Journal {
  readonly #file: string;
  #id: string;
  #lastSeq: number;
  /** Every path changed after the compaction point, with the last sequence that changed it. */
  readonly #changed = new Map<string, number>();
  /** Sequences at which changes may have been missed, ascending. */
  #gaps: number[] = [];
  #handle: FileHandle | undefined;
  /** Bytes in the file: where a line cut short by a full disk is cut back to. */
  #size = 0;
  /** Lines appended since the file was last rewritten: past a threshold, it is rewritten compact. */
  #appended = 0;
  #tail: Promise<unknown> = Promise.resolve();

  private constructor(file: string, id: string, lastSeq: number) {
    this.#file = file;
    this.#id = id;
    this.#lastSeq = lastSeq;
  }

  /**
   * Open (or create) the journal. Returns the batch whose intent was logged but
   * not marked done, which the caller must redo before anything else.
   */
  static async open(
    file: string,
  ): Promise<{ journal: Journal; unfinished: { seq: number; ops: MasterOp[] } | null; created: boolean }> {
    // a FIFO or a link in its place is refused at once (NOT_REGULAR), never waited on
    const text = (await readSmallFile(file, MAX_JOURNAL_BYTES))?.toString('utf8') ?? null;
    let journal: Journal | undefined;
    const intents = new Map<number, MasterOp[]>(); // logged, not yet marked done
    let validBytes = 0;
    if (text !== null) {
      for (const line of text.split('\n')) {
        if (line === '') {
          validBytes += 1;
          continue;
        }
        let rec: JournalLine;
        try {
          rec = JSON.parse(line) as JournalLine;
        } catch {
          break; // a torn last line from a crash: everything after it is dropped
        }
        validBytes += Buffer.byteLength(line) + 1;
        if ('journal' in rec) {
          journal = new Journal(file, rec.journal, rec.seq);
          continue;
        }
        if (!journal) break;
        journal.#lastSeq = Math.max(journal.#lastSeq, rec.seq);
        if ('ops' in rec) {
          intents.set(rec.seq, rec.ops);
          for (const op of rec.ops) journal.#changed.set(op.path, rec.seq);
        } else if ('done' in rec) {
          intents.delete(rec.seq);
        } else if ('touched' in rec) {
          for (const p of rec.touched) journal.#changed.set(p, rec.seq);
        } else if ('gap' in rec) {
          journal.#gaps.push(rec.seq);
        } else if ('reconciled' in rec) {
          journal.#cover(rec.reconciled, rec.through);
        }
      }
    }
    const created = journal === undefined;
    if (!journal) {
      journal = new Journal(file, randomBytes(8).toString('hex'), 0);
      await journal.#rewrite();
    } else if (text !== null && validBytes < Buffer.byteLength(text)) {
      await journal.#rewrite(); // cut the torn tail so new lines start clean
    }
    await journal.#openAppend();
    const pending = [...intents.entries()].sort((x, y) => x[0] - y[0]);
    const last = pending.at(-1);
    return { journal, unfinished: last ? { seq: last[0], ops: last[1] } : null, created };
  }

  /** Identifies this journal; slot positions recorded against another id are meaningless. */
  get id(): string {
    return this.#id;
  }

  get lastSeq(): number {
    return this.#lastSeq;
  }

  /** Paths changed after `seq`, in no particular order. */
  changedSince(seq: number): string[] {
    const out: string[] = [];
    for (const [path, s] of this.#changed) if (s > seq) out.push(path);
    return out;
  }

  /**
   * Whether `changedSince(position)` names every change made after it: no gap
   * was logged after the position and left uncovered.
   */
  trusts(position: number): boolean {
    const last = this.#gaps.at(-1);
    return last === undefined || last <= position;
  }

  /** Positions below this are not trusted (0: every position is). */
  get untrustedBelow(): number {
    return this.#gaps.at(-1) ?? 0;
  }

  /** Record that changes to master may have been missed from now on; returns the gap's sequence. */
  logGap(reason: string): Promise<number> {
    const seq = ++this.#lastSeq;
    this.#gaps.push(seq);
    return this.#append({ seq, gap: reason }, true).then(() => seq);
  }

  /**
   * Record that master was compared with a copy at `position` and every
   * difference is logged: gaps after `position`, up to `through` (the last
   * sequence logged before the comparison began), no longer hide anything.
   */
  logReconciled(position: number, through: number): Promise<void> {
    const seq = ++this.#lastSeq;
    this.#cover(position, through);
    return this.#append({ seq, reconciled: position, through }, true);
  }

  #cover(position: number, through: number): void {
    this.#gaps = this.#gaps.filter((g) => g <= position || g > through);
  }

  countSince(seq: number): number {
    let n = 0;
    for (const s of this.#changed.values()) if (s > seq) n++;
    return n;
  }

  /** Log a batch's intent durably; returns its sequence number. */
  logIntent(ops: MasterOp[]): Promise<number> {
    const seq = ++this.#lastSeq;
    for (const op of ops) this.#changed.set(op.path, seq);
    return this.#append({ seq, ops }, true).then(() => seq);
  }

  logDone(seq: number): Promise<void> {
    // not synced: a later intent's fsync flushes it, and redoing a finished batch is harmless
    return this.#append({ seq, done: true }, false);
  }

  /** Record paths changed in master by something other than the write API. */
  logTouched(paths: string[]): Promise<number> {
    const seq = ++this.#lastSeq;
    for (const p of paths) this.#changed.set(p, seq);
    return this.#append({ seq, touched: paths }, true).then(() => seq);
  }

  #append(line: JournalLine, sync: boolean): Promise<void> {
    const run = async () => {
      const handle = this.#handle;
      if (!handle) throw new Error('journal is closed');
      const bytes = Buffer.from(`${JSON.stringify(line)}\n`);
      try {
        await writeAll(handle, [bytes]);
        if (sync) await handle.datasync();
      } catch (err) {
        // A line that failed (cut short by a full disk, or not made durable) is cut off: what it
        // logs is refused, and the next line must not be glued to half of it.
        await handle.truncate(this.#size).catch(() => {});
        throw err;
      }
      this.#size += bytes.length;
      this.#appended++;
    };
    const next = this.#tail.then(run, run);
    this.#tail = next.catch(() => {});
    return next;
  }

  /**
   * Forget changes every slot already has (sequence <= `upTo`) and rewrite the
   * file if that makes it much smaller.
   */
  async compact(upTo: number): Promise<void> {
    for (const [path, s] of this.#changed) {
      if (s <= upTo) this.#changed.delete(path);
    }
    // a gap at or below every slot's position can no longer make any of them untrusted
    this.#gaps = this.#gaps.filter((g) => g > upTo);
    // rewrite once the file holds far more lines than the changes still remembered
    if (this.#appended < 1000 + 2 * this.#changed.size) return;
    this.#appended = 0;
    const rewrite = async () => {
      await this.#handle?.close();
      try {
        await this.#rewrite();
      } finally {
        await this.#openAppend(); // a rewrite that failed left the old file whole (it is atomic)
      }
    };
    const next = this.#tail.then(rewrite, rewrite);
    this.#tail = next.catch(() => {});
    await next;
  }

  /** Write header plus the remembered changes as one compact file, atomically. */
  async #rewrite(): Promise<void> {
    const lines: JournalLine[] = [{ journal: this.#id, seq: 0 }];
    const bySeq = new Map<number, string[]>();
    for (const [path, s] of this.#changed) {
      const list = bySeq.get(s) ?? [];
      list.push(path);
      bySeq.set(s, list);
    }
    const body: JournalLine[] = [...bySeq.entries()].map(([seq, touched]) => ({ seq, touched }));
    for (const seq of this.#gaps) body.push({ seq, gap: 'kept across compaction' });
    lines.push(...body.sort((x, y) => x.seq - y.seq));
    lines.push({ seq: this.#lastSeq, touched: [] });
    await writeFileAtomic(this.#file, `${lines.map((l) => JSON.stringify(l)).join('\n')}\n`, { durable: true });
  }

  async #openAppend(): Promise<void> {
    this.#handle = await open(this.#file, 'a', 0o644);
    this.#size = (await this.#handle.stat()).size;
  }

  async close(): Promise<void> {
    await this.#tail;
    await this.#handle?.close();
    this.#handle = undefined;
  }
}
