import { Worker } from 'node:worker_threads';
import { WALK_THREADS } from './walk-threads.js';

/** The kinds of work the pool's threads know (walk-worker.ts). */
export type UnitTask =
  | 'compare'
  | 'clone'
  | 'list'
  | 'manifest'
  | 'manifest-run'
  | 'manifest-merge'
  | 'manifest-answer'
  | 'manifest-delta'
  | 'hash'
  | 'place'
  | 'count'
  | 'stage'
  | 'derive';

interface Job {
  /** Names the job to the threads, which keep its context once sent (`Thread.holds`). */
  id: number;
  task: UnitTask;
  context: unknown;
  units: readonly unknown[];
  next: number;
  running: number;
  onResult: (results: unknown[]) => boolean;
  onProgress: ((entries: number) => void) | undefined;
  minChunk: number;
  maxChunk: number;
  maxThreads: number;
  stopped: boolean;
  failed?: Error;
  resolve: () => void;
  reject: (err: Error) => void;
}

/** How a job is spread over the threads. */
export interface JobSizing {
  /** Start no more threads than this for it (those running are used whatever their number). */
  startAtMost?: number;
  /** Send at least this many units at a time: for units so small that a message costs more than one. */
  minChunk?: number;
  /**
   * Send at most this many units at a time: for units whose answers are
   * large (a manifest's entries), so that one chunk's answer, held whole in
   * the thread and again in the main thread, stays small. The first chunks
   * of 1,000 directories of 1,000 files were 125,000 entries each: 700 MB of
   * RSS for a walk that keeps a few MB.
   */
  maxChunk?: number;
  /**
   * Go before the jobs waiting: for a short job someone is waiting on (a
   * fleet host's manifest answer), which must not wait for a copy's walk to
   * hand out all its units first.
   */
  first?: boolean;
  /** Run its units in at most this many threads at once (a CPU budget); the others take other jobs meanwhile. */
  maxThreads?: number;
  /**
   * Cut `minChunk` to the job's share of each thread running (or started for
   * it): a job of fewer units than `minChunk` times the threads then goes
   * out in one message to each, not all in one to the first. For a few
   * small units, where each message and its answer cost about what a unit
   * does, however many threads are running.
   */
  spread?: boolean;
}

interface Thread {
  worker: Worker;
  job: Job | null;
  /** The job whose context the thread holds: a chunk of that job is sent without it. */
  holds: number | null;
}

/**
 * What a thread is sent: a chunk of a job's units, with the job's context
 * the first time it gets a chunk of that job (it keeps the context of the
 * last job it was sent, and only that one).
 */
export interface ChunkMessage {
  task: UnitTask;
  job: number;
  context?: unknown;
  units: readonly unknown[];
}

/** Told to a thread holding the context of a job that is done: it lets go of it (no answer). */
export interface ForgetMessage {
  forget: number;
}

/** A chunk's answer. */
type Answer = { results: unknown[] } | { error: string; code?: string };
/** What a thread sends: progress within its chunk, then the chunk's answer. */
type Reply = Answer | { progress: number };

/**
 * Worker threads kept for the tree walks (compare, full copy) and the copies
 * of a journal sync: starting a thread and loading its code costs 70 to 90
 * ms, more than a whole comparison of a tree of tens of thousands of files,
 * and ten times a journal sync's copy of a few files. The threads are
 * started on first use, kept while walks come (unref'd: they never hold
 * the process open), all but one stopped after `IDLE_MS` without one (each
 * holds a heap of its own, about 8 MiB idle; the one kept makes the next
 * sync's copy start at once), and replaced if one dies. A small job
 * (`JobSizing`) starts no more threads than it needs, using those running.
 *
 * Units of a job are handed out in chunks that shrink as its list runs down
 * (guided self-scheduling): a few messages in all, and a thread that drew a
 * large unit does not hold up the others, who take the rest meanwhile.
 */
/** Threads idle this long are stopped; the next walk starts them again. */
const IDLE_MS = 15_000;

/**
 * Each thread's young generation, in MiB. A walk allocates a stream of
 * short-lived objects (directory entries, stats) and keeps few: V8's default
 * lets each thread's young generation grow to tens of MiB, which at a
 * million files was a fifth of the agent's memory. At 4 MiB a walk is as
 * fast (measured on 100,000 and 1,000,000 files: `bench/README.md`).
 */
const YOUNG_GENERATION_MB = 4;

export class WalkPool {
  readonly #size: number;
  readonly #threads: Thread[] = [];
  readonly #jobs: Job[] = [];
  #idleTimer: NodeJS.Timeout | undefined;
  #lastJob = 0;

  constructor(size = WALK_THREADS) {
    this.#size = Math.max(1, size);
  }

  /**
   * Run `units` of `task` through the threads; `onResult` gets each chunk's
   * results as they come, and stops the job by returning false. Rejects on
   * the first unit that throws (the rest of the job is dropped).
   * `onProgress` hears, about every 100 ms per thread, how many entries the
   * units under way have walked meanwhile (for units that report it).
   */
  run<U, R>(
    task: UnitTask,
    context: unknown,
    units: readonly U[],
    onResult: (results: R[]) => boolean,
    onProgress?: (entries: number) => void,
    sizing: JobSizing = {},
  ): Promise<void> {
    if (units.length === 0) return Promise.resolve();
    clearTimeout(this.#idleTimer);
    return new Promise<void>((resolve, reject) => {
      const maxThreads = Math.max(1, sizing.maxThreads ?? this.#size);
      const want = Math.min(
        this.#size,
        Math.max(1, Math.min(sizing.startAtMost ?? this.#size, maxThreads), this.#threads.length),
      );
      while (this.#threads.length < want) this.#threads.push(this.#start());
      let minChunk = sizing.minChunk ?? 1;
      if (sizing.spread)
        minChunk = Math.min(minChunk, Math.ceil(units.length / Math.min(this.#threads.length, maxThreads)));
      this.#jobs[sizing.first ? 'unshift' : 'push']({
        id: ++this.#lastJob,
        task,
        context,
        units,
        next: 0,
        running: 0,
        onResult: onResult as (results: unknown[]) => boolean,
        onProgress,
        minChunk,
        maxChunk: sizing.maxChunk ?? Number.POSITIVE_INFINITY,
        maxThreads,
        stopped: false,
        resolve,
        reject,
      });
      for (const thread of this.#threads) if (!thread.job) this.#dispatch(thread);
    });
  }

  #start(): Thread {
    const worker = new Worker(new URL('./walk-worker.js', import.meta.url), {
      resourceLimits: { maxYoungGenerationSizeMb: YOUNG_GENERATION_MB },
    });
    const thread: Thread = { worker, job: null, holds: null };
    worker.on('message', (reply: Reply) => {
      if ('progress' in reply) {
        if (thread.job && !thread.job.stopped) thread.job.onProgress?.(reply.progress);
        return;
      }
      const job = thread.job;
      thread.job = null;
      worker.unref();
      if (job) this.#settle(job, reply);
      this.#dispatch(thread);
    });
    worker.on('error', (err) => this.#lost(thread, err));
    worker.on('exit', (code) => this.#lost(thread, new Error(`a tree walk thread exited with ${code}`)));
    worker.unref(); // after the listeners: adding a 'message' listener refs the worker's port again
    return thread;
  }

  /** A thread died: its chunk's job fails, and a new thread takes its place if work is waiting. */
  #lost(thread: Thread, err: Error): void {
    const i = this.#threads.indexOf(thread);
    if (i === -1) return;
    this.#threads.splice(i, 1);
    const job = thread.job;
    thread.job = null;
    if (job) {
      job.running--;
      this.#fail(job, err);
    }
    if (!this.#jobs.some((j) => !j.stopped && j.next < j.units.length)) return;
    // a replacement only if no thread is idle (a job's maxThreads can leave some idle with work left)
    if (this.#threads.every((t) => t.job)) {
      const fresh = this.#start();
      this.#threads.push(fresh);
      this.#dispatch(fresh);
    } else for (const t of this.#threads) this.#dispatch(t);
  }

  #settle(job: Job, reply: Answer): void {
    job.running--;
    if ('error' in reply) {
      const err = new Error(reply.error) as NodeJS.ErrnoException;
      if (reply.code) err.code = reply.code;
      this.#fail(job, err);
      return;
    }
    if (!job.stopped && !job.onResult(reply.results)) job.stopped = true;
    this.#finishIfDone(job);
  }

  /** The job fails, once the chunks still out are back: none of its units is then under way. */
  #fail(job: Job, err: Error): void {
    if (!job.failed) job.failed = err;
    job.stopped = true;
    this.#finishIfDone(job);
  }

  #finishIfDone(job: Job): void {
    if (job.running > 0 || (!job.stopped && job.next < job.units.length)) return;
    const i = this.#jobs.indexOf(job);
    if (i === -1) return;
    this.#jobs.splice(i, 1);
    // a thread keeps the last context it was sent: one kept idle would hold a derive's (the variant
    // cache's entries) until the next walk, however long that is
    for (const thread of this.#threads) {
      if (thread.holds !== job.id) continue;
      thread.holds = null;
      thread.worker.postMessage({ forget: job.id } satisfies ForgetMessage);
    }
    if (job.failed) job.reject(job.failed);
    else job.resolve();
    if (this.#jobs.length === 0) {
      clearTimeout(this.#idleTimer);
      this.#idleTimer = setTimeout(() => void this.#stopIdle(), IDLE_MS);
      this.#idleTimer.unref();
    }
  }

  #dispatch(thread: Thread): void {
    if (thread.job) return;
    const job = this.#jobs.find((j) => !j.stopped && j.next < j.units.length && j.running < j.maxThreads);
    if (!job) return;
    const threads = Math.min(this.#threads.length, job.maxThreads);
    const size = Math.min(
      job.maxChunk,
      Math.max(job.minChunk, Math.ceil((job.units.length - job.next) / (threads * 4))),
    );
    const units = job.units.slice(job.next, job.next + size);
    job.next += units.length;
    job.running++;
    thread.job = job;
    thread.worker.ref(); // a chunk under way keeps the process alive until it answers
    // a job's context is cloned once per thread, not once per chunk: a derive's carries the variant
    // cache's entries and records, and a large copy goes out in tens of chunks
    const message: ChunkMessage = { task: job.task, job: job.id, units };
    const sendContext = thread.holds !== job.id;
    if (sendContext) message.context = job.context;
    try {
      thread.worker.postMessage(message);
    } catch (err) {
      // not sent (a context or unit that cannot be cloned): the thread never got the chunk, nor a new
      // context (it may hold the last one still: sent again if need be), and is free; the job fails
      thread.job = null;
      if (sendContext) thread.holds = null;
      thread.worker.unref();
      job.running--;
      this.#fail(job, err as Error);
      this.#dispatch(thread);
      return;
    }
    if (sendContext) thread.holds = job.id;
  }

  /** Threads working on a chunk now. */
  get busyThreads(): number {
    return this.#threads.filter((t) => t.job !== null).length;
  }

  /** Stop all threads but one, with no walk under way. */
  async #stopIdle(): Promise<void> {
    if (this.#jobs.length > 0) return; // a walk came meanwhile
    const threads = this.#threads.splice(1);
    await Promise.all(threads.map((t) => t.worker.terminate()));
  }

  /** Stop every thread (in tests, and where a process must let go of them); the next walk starts new ones. */
  async close(): Promise<void> {
    clearTimeout(this.#idleTimer);
    if (this.#jobs.length > 0) return; // a walk came meanwhile
    const threads = this.#threads.splice(0);
    await Promise.all(threads.map((t) => t.worker.terminate()));
  }
}

/** The process's pool for tree walks. */
export const walkPool = new WalkPool();
