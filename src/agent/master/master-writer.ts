import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { lstat, mkdir, open, rename, rm, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fsyncDir } from '../../store/atomic-write.js';
import { type ErrorCode, MirrorswapError } from '../../core/errors.js';
import { TEMP_DIR_NAME } from '../../store/store-layout.js';
import { unlockTree } from '../../tree/tree-mode.js';
import { WritableDirs } from '../../tree/writable-dirs.js';
import { writeStream } from '../../store/write-all.js';
import type { Journal, MasterOp } from './journal.js';
import { entrySignature } from './master-watcher.js';
import { Limiter } from '../../core/limiter.js';
import { Mutex } from '../../core/mutex.js';
import { type PathLimits, SYSTEM_LIMITS, pathTooLong } from '../../core/path-limits.js';

/** A write refused for a reason the writer can act on; `status` is the HTTP answer. */
export class WriteError extends MirrorswapError {
  readonly status: number;
  constructor(status: number, code: ErrorCode, message: string) {
    super(code, message);
    this.status = status;
  }
}

/** A change requested by a writer, with any body already staged on disk. */
export type StagedOp = { op: 'put'; path: string; tmp: string; size: number } | { op: 'delete'; path: string };

const DISK_FULL = new Set(['ENOSPC', 'EDQUOT']);

/** The most operations one batch may hold, JSON or tar. */
export const MAX_BATCH_OPS = 10_000;

/** A body refused for its size: whether declared up front or counted as it arrives. */
export function bodyTooLarge(limit: number): WriteError {
  return new WriteError(413, 'BODY_TOO_LARGE', `body is larger than the limit of ${limit} bytes`);
}

/** A body whose client went away before sending all of it. */
export function bodyAborted(): WriteError {
  return new WriteError(400, 'ABORTED', 'the body ended before it was complete');
}

/** Temp files of an archive batch held open while their fsync runs; the next ones are written meanwhile. */
const SYNCS_IN_FLIGHT = 16;

/**
 * The only writer of master. Bodies are staged in master's temp directory and
 * fsynced; a batch is then logged as an intent, renamed into place and marked
 * done, all under the master mutex. A batch is thus all or nothing, even
 * across a crash (the journal's redo), and never split by a sync.
 */
export class MasterWriter {
  readonly #master: string;
  readonly #tmpDir: string;
  readonly #journal: Journal;
  /** Held by a batch while it is applied and by a copy while it reads master: a copy never splits a batch. */
  readonly #mutex = new Mutex();
  /** Identity of each entry this writer last changed, so the master watcher does not log it twice. */
  readonly ownWrites = new Map<string, string>();
  /** Told the paths a batch put into master, once it is applied (the agent precompresses them: precompress.ts). */
  onApplied: ((paths: string[]) => void) | undefined;
  /** A batch logged and partly applied when its application failed: finished before anything else. */
  #unfinished: { seq: number; ops: MasterOp[] } | null = null;
  /** What every tree of the store can hold: a path past it is refused before it is logged. */
  #limits: PathLimits;
  readonly #onDropped: (path: string, err: Error) => void;

  constructor(
    master: string,
    journal: Journal,
    opts: { limits?: PathLimits; onDropped?: (path: string, err: Error) => void } = {},
  ) {
    this.#master = master;
    this.#tmpDir = join(master, TEMP_DIR_NAME);
    this.#journal = journal;
    this.#limits = opts.limits ?? SYSTEM_LIMITS;
    this.#onDropped = opts.onDropped ?? (() => {});
  }

  /** Set the path limits of the store's file systems (found once they exist). */
  set limits(limits: PathLimits) {
    this.#limits = limits;
  }

  /** Write a body to a new temp file in master, fsynced; refuse it past `limit` bytes. */
  async stage(body: Readable, limit: number): Promise<{ tmp: string; size: number }> {
    await mkdir(this.#tmpDir, { recursive: true });
    const tmp = join(this.#tmpDir, randomBytes(12).toString('hex'));
    let size = 0;
    const counter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        size += chunk.length;
        if (size > limit) cb(bodyTooLarge(limit));
        else cb(null, chunk);
      },
    });
    // The body is piped by hand, not through pipeline(): on a refusal the
    // request must stay open so the writer gets its 413 instead of a reset.
    // a request's error before its end is its client going away (node:http's "aborted"): the writer's doing, a 400
    body.on('error', (err) => counter.destroy(body.readableEnded ? err : bodyAborted()));
    body.once('close', () => {
      if (!body.readableEnded) counter.destroy(bodyAborted());
    });
    body.pipe(counter);
    const out = createWriteStream(tmp, { flags: 'wx', mode: 0o644 });
    try {
      await pipeline(counter, out);
      const handle = await open(tmp, 'r');
      await handle.sync().finally(() => handle.close());
      return { tmp, size };
    } catch (err) {
      body.unpipe(counter);
      body.resume(); // discard the rest of a refused body
      // a write stream destroyed before its open lands still makes its file when it does: removed
      // before the stream has closed, a refused body's temp file could be left behind
      if (!out.closed) await new Promise<void>((resolve) => out.once('close', () => resolve()));
      await unlink(tmp).catch(() => {});
      throw mapFsError(err);
    }
  }

  /** Stage in-memory bodies (batch requests), several at a time; results in the bodies' order. */
  async stageBuffers(bodies: Buffer[]): Promise<{ tmp: string; size: number }[]> {
    await mkdir(this.#tmpDir, { recursive: true });
    const limiter = new Limiter(16);
    const staged = bodies.map((data) => ({
      tmp: join(this.#tmpDir, randomBytes(12).toString('hex')),
      size: data.length,
    }));
    try {
      await Promise.all(
        bodies.map((data, i) =>
          limiter.run(async () => {
            const handle = await open((staged[i] as { tmp: string }).tmp, 'wx', 0o644);
            try {
              await handle.writeFile(data);
              await handle.sync();
            } finally {
              await handle.close();
            }
          }),
        ),
      );
      return staged;
    } catch (err) {
      await Promise.all(staged.map((s) => unlink(s.tmp).catch(() => {})));
      throw mapFsError(err);
    }
  }

  /**
   * Stage bodies that arrive one after another (the files of an archive),
   * each streamed to its own temp file and fsynced in the background while
   * the next one arrives; results in the bodies' order. On any error every
   * temp file written so far is removed.
   */
  async stageSequence(bodies: AsyncIterable<AsyncIterable<Uint8Array>>): Promise<{ tmp: string; size: number }[]> {
    await mkdir(this.#tmpDir, { recursive: true });
    const prefix = join(this.#tmpDir, randomBytes(12).toString('hex'));
    const staged: { tmp: string; size: number }[] = [];
    const syncing = new Set<Promise<void>>();
    let syncError: unknown = null;
    try {
      for await (const body of bodies) {
        const item = { tmp: `${prefix}.${staged.length}`, size: 0 };
        staged.push(item);
        const handle = await open(item.tmp, 'wx', 0o644);
        try {
          item.size = await writeStream(handle, body);
        } catch (err) {
          await handle.close();
          throw err;
        }
        const synced: Promise<void> = handle
          .sync()
          .finally(() => handle.close())
          .catch((err: unknown) => {
            syncError ??= err;
          })
          .finally(() => syncing.delete(synced));
        syncing.add(synced);
        if (syncing.size >= SYNCS_IN_FLIGHT) await Promise.race(syncing);
        if (syncError) throw syncError;
      }
      await Promise.all(syncing);
      if (syncError) throw syncError;
      return staged;
    } catch (err) {
      await Promise.all(syncing);
      await Promise.all(staged.map((s) => unlink(s.tmp).catch(() => {})));
      throw mapFsError(err);
    }
  }

  /**
   * Apply staged ops as one batch; returns the journal sequence. Staged files
   * are consumed, removed if the batch is refused before it is logged, or kept
   * to finish it if it fails after.
   */
  async apply(ops: StagedOp[]): Promise<number> {
    let logged = false;
    try {
      return await this.exclusive(async () => {
        await this.#check(ops);
        const logOps: MasterOp[] = ops.map((o) => (o.op === 'put' ? { op: 'put', path: o.path, tmp: o.tmp } : o));
        // Remember what each entry will be before it changes: the master watcher may
        // report the change before this batch returns. A rename keeps the inode.
        for (const o of ops) {
          if (this.ownWrites.size >= 10_000) this.ownWrites.delete(this.ownWrites.keys().next().value as string);
          this.ownWrites.set(o.path, o.op === 'put' ? entrySignature(await lstat(o.tmp)) : entrySignature(null));
        }
        const seq = await this.#journal.logIntent(logOps);
        logged = true;
        try {
          await this.#applyOps(logOps);
          await this.#journal.logDone(seq);
          this.onApplied?.(logOps.flatMap((o) => (o.op === 'put' ? [o.path] : [])));
        } catch (err) {
          // Part of the batch may be in master already, and it cannot be taken back: it must be
          // finished (from its staged files, kept for that) before anything else runs, or a sync
          // would publish half of it, or a later batch be undone when this one is redone at start.
          this.#unfinished = { seq, ops: logOps };
          throw unfinishedError(seq, err);
        }
        return seq;
      });
    } catch (err) {
      if (!logged) await Promise.all(ops.map((o) => (o.op === 'put' ? unlink(o.tmp).catch(() => {}) : undefined)));
      throw mapFsError(err);
    }
  }

  /**
   * Run `work` alone with master (under the master mutex), once the batch a
   * failure left half applied, if any, is finished: no write or copy ever sees
   * half a batch. Throws BATCH_UNFINISHED while it still cannot be finished.
   */
  exclusive<T>(work: () => Promise<T>): Promise<T> {
    return this.#mutex.lock(async () => {
      const unfinished = this.#unfinished;
      if (unfinished !== null) {
        try {
          await this.redo(unfinished.seq, unfinished.ops);
        } catch (err) {
          throw unfinishedError(unfinished.seq, err);
        }
        this.#unfinished = null;
      }
      return work();
    });
  }

  /** Finish a batch whose intent was logged before a crash (or a failure in mid-batch). */
  async redo(seq: number, ops: MasterOp[]): Promise<void> {
    await this.#applyOps(ops, true);
    await this.#journal.logDone(seq);
  }

  /** Remove staged bodies nobody will apply (after a crash, once redo is done). */
  async clearTemp(): Promise<void> {
    await rm(this.#tmpDir, { recursive: true, force: true });
  }

  async #check(ops: StagedOp[]): Promise<void> {
    const seen = new Set<string>();
    const stats = new Map<string, Promise<import('node:fs').Stats | null>>();
    const lstatCached = (rel: string) => {
      let p = stats.get(rel);
      if (!p) {
        p = lstat(join(this.#master, rel)).catch(() => null);
        stats.set(rel, p);
      }
      return p;
    };
    const putPaths = new Set(ops.filter((o) => o.op === 'put').map((o) => o.path));
    for (const o of ops) {
      const tooLong = pathTooLong(o.path, this.#limits);
      if (tooLong) throw new WriteError(400, 'PATH_TOO_LONG', `"${o.path.slice(0, 80)}…": ${tooLong}`);
      if (seen.has(o.path)) throw new WriteError(400, 'DUPLICATE_PATH', `path "${o.path}" appears twice in one batch`);
      seen.add(o.path);
      const parts = o.path.split('/');
      for (let i = 1; i < parts.length; i++) {
        const ancestor = parts.slice(0, i).join('/');
        if (putPaths.has(ancestor)) {
          throw new WriteError(
            409,
            'PATH_CONFLICT',
            `"${o.path}" would be under "${ancestor}", which this batch writes as a file`,
          );
        }
        const st = await lstatCached(ancestor);
        if (st && !st.isDirectory()) {
          throw new WriteError(409, 'PATH_CONFLICT', `"${o.path}" is under "${ancestor}", which is a file`);
        }
        if (!st) break;
      }
      const here = await lstatCached(o.path);
      if (o.op === 'put' && here?.isDirectory()) {
        throw new WriteError(409, 'PATH_CONFLICT', `"${o.path}" is a directory; delete it first`);
      }
      if (o.op === 'delete' && !here) throw new WriteError(404, 'NOT_FOUND', `"${o.path}" does not exist in master`);
    }
  }

  /**
   * A directory of master whose mode denies its owner write (a read-only
   * release written in by tools) is opened for the batch and given its mode
   * back at its end (WritableDirs): a batch must never be left unfinished by
   * a mode, or no write nor sync would run until someone changed it.
   */
  async #applyOps(ops: MasterOp[], redo = false): Promise<void> {
    const modes = new WritableDirs();
    try {
      await this.#applyOpsIn(ops, redo, modes);
    } catch (err) {
      await modes.settle().catch(() => {}); // what the batch opened gets its mode back; the batch is redone
      throw err;
    }
    await modes.settle();
  }

  /** Open the deepest directory of master that holds `dir` now, for what mkdir -p makes in it. */
  async #openNearest(dir: string, modes: WritableDirs): Promise<void> {
    for (let d = dir; d.length >= this.#master.length; d = dirname(d)) {
      const st = await lstat(d).catch(() => null);
      if (st !== null) {
        if (st.isDirectory()) await modes.open(d);
        return;
      }
      if (dirname(d) === d) return;
    }
  }

  async #applyOpsIn(ops: MasterOp[], redo: boolean, modes: WritableDirs): Promise<void> {
    const dirs = new Set<string>();
    for (const o of ops) {
      const target = join(this.#master, o.path);
      if (o.op === 'put') {
        let made = dirs.has(dirname(target));
        try {
          if (!made) {
            await this.#openNearest(dirname(target), modes);
            await mkdir(dirname(target), { recursive: true });
          }
          made = true;
          await modes.open(dirname(target));
          await rename(o.tmp, target);
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          // redoing a batch whose renames partly happened: those bodies are already in place
          // (an ENOENT of the directory's creation is not that: a full disk can answer so)
          if (redo && made && code === 'ENOENT') continue;
          // An entry the file system can never hold (logged by an older version, which checked
          // less) is dropped, or the batch could never be finished and every write would wait.
          if (redo && code === 'ENAMETOOLONG') {
            await unlink(o.tmp).catch(() => {});
            this.#onDropped(o.path, err as Error);
            continue;
          }
          throw err;
        }
      } else {
        await modes.open(dirname(target));
        await unlockTree(target); // a read-only directory below would stop the removal
        modes.forget(target);
        await rm(target, { recursive: true, force: true });
      }
      dirs.add(dirname(target));
    }
    await Promise.all([...dirs].map((d) => fsyncDir(d).catch(() => {})));
  }
}

/** The answer while a batch stays half applied: nothing else is written or copied until it is finished. */
function unfinishedError(seq: number, cause: unknown): WriteError {
  const why = (cause as Error).message ?? String(cause);
  return new WriteError(
    503,
    'BATCH_UNFINISHED',
    `write batch ${seq} is logged but could not be finished (${why}); master keeps the part applied so far, and no write or sync runs until the batch is finished, which is tried again on each: free what it needs (disk space, say)`,
  );
}

function mapFsError(err: unknown): unknown {
  if (err instanceof WriteError) return err;
  const code = (err as NodeJS.ErrnoException).code ?? '';
  if (DISK_FULL.has(code)) return new WriteError(507, 'DISK_FULL', 'master has no space left; nothing was written');
  if (code === 'ENOTDIR' || code === 'EEXIST' || code === 'EISDIR') {
    return new WriteError(409, 'PATH_CONFLICT', 'the path conflicts with an existing file or directory');
  }
  if (code === 'ENAMETOOLONG') return new WriteError(400, 'BAD_PATH', 'path is too long for the file system');
  return err;
}
