import type { WalkProgress } from '../agent/master/master-walks.js';
import type { CopyStats } from '../tree/tree-copy.js';

/** What a long operation has done so far, and what it will do in all when that is known. */
export interface ProgressCount {
  files: number;
  bytes: number;
  /** The bytes it will have done at its end, when known: the line then shows an ETA. */
  totalBytes?: number;
  /** The files it will have done at its end, when known. */
  totalFiles?: number;
}

const mib = (bytes: number) => `${(bytes / 1048576).toFixed(1)} MiB`;

/** "1m05s", "42s": a remaining time, to the second. */
function formatEta(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  return s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

/**
 * The status line of a copy: files, bytes, rates, and an ETA when the total
 * is known. Pure, for tests.
 */
export function describeProgress(label: string, count: ProgressCount, elapsedSeconds: number): string {
  const of = count.totalFiles !== undefined ? ` of ${count.totalFiles}` : '';
  const parts = [`${label}: ${count.files}${of} files, ${mib(count.bytes)}`];
  if (elapsedSeconds > 0) {
    parts.push(
      `${Math.round(count.files / elapsedSeconds)} files/s, ${mib(count.bytes / elapsedSeconds).replace(' MiB', ' MiB/s')}`,
    );
    if (count.totalBytes !== undefined && count.totalBytes > 0 && count.bytes > 0) {
      const rate = count.bytes / elapsedSeconds;
      const left = Math.max(0, count.totalBytes - count.bytes);
      parts.push(
        `${Math.min(100, Math.floor((count.bytes / count.totalBytes) * 100))}%, ETA ${formatEta(left / rate)}`,
      );
    }
  }
  return parts.join(', ');
}

const WALK_LABEL: Record<WalkProgress['purpose'], string> = {
  sync: 'full sync',
  verify: 'verify',
  compare: 'comparing master',
};

/**
 * The status line of a whole walk of master (a full sync, a verify, a
 * comparison): entries so far, of how many master had at its last walk,
 * the rate, and from those a share and an ETA (an estimate: master may
 * have grown or shrunk since). Past the estimate, only the count and
 * rate. A full sync's copy counts follow. `recentRate` (entries/s lately,
 * from `RecentRate`) stands for the average since the start when given: a
 * full sync compares fast, then copies what is missing far slower, and an
 * average from the start would promise too soon an end. Pure, for tests.
 */
export function describeWalk(walk: WalkProgress, nowMs: number, copied?: CopyStats, recentRate?: number): string {
  const elapsed = Math.max(0, (nowMs - Date.parse(walk.startedAt)) / 1000);
  const expected = walk.expected !== null && walk.expected > walk.entries ? walk.expected : null;
  const parts = [
    `${WALK_LABEL[walk.purpose]} against slot ${walk.slot}: ${walk.entries}${expected !== null ? ` of ~${expected}` : ''} entries`,
  ];
  if (elapsed > 0 && walk.entries > 0) {
    const rate = recentRate !== undefined && recentRate > 0 ? recentRate : walk.entries / elapsed;
    parts.push(`${Math.round(rate)} entries/s`);
    if (expected !== null)
      parts.push(`${Math.floor((walk.entries / expected) * 100)}%, ETA ${formatEta((expected - walk.entries) / rate)}`);
  }
  if (copied && (copied.files > 0 || copied.deleted > 0))
    parts.push(`copied ${copied.files} files, ${mib(copied.bytes)}, deleted ${copied.deleted}`);
  return parts.join(', ');
}

/** A rate over the last few seconds of samples of a growing count. */
export class RecentRate {
  readonly #windowMs: number;
  readonly #samples: { at: number; count: number }[] = [];

  constructor(windowMs = 5000) {
    this.#windowMs = windowMs;
  }

  /** Add a sample; returns the rate (per second) since the oldest sample in the window, if any. */
  add(atMs: number, count: number): number | undefined {
    const last = this.#samples.at(-1);
    if (last && count < last.count) this.#samples.length = 0; // another walk
    this.#samples.push({ at: atMs, count });
    while (this.#samples.length > 2 && atMs - (this.#samples[1]?.at ?? atMs) >= this.#windowMs) this.#samples.shift();
    const first = this.#samples[0] as { at: number; count: number };
    return atMs > first.at ? ((count - first.count) * 1000) / (atMs - first.at) : undefined;
  }
}

/**
 * One self-rewriting status line on stderr, only when it is a terminal; a
 * log file or a pipe gets nothing from it.
 */
export function progressLine(stream: NodeJS.WriteStream = process.stderr) {
  const tty = stream.isTTY === true;
  let started = Date.now();
  let last = 0;
  const write = (text: string) => {
    const now = Date.now();
    if (now - last < 100) return;
    last = now;
    stream.write(`\r\u001b[2K${text}`);
  };
  return {
    /** Whether the line is shown at all (a terminal). */
    shown: tty,
    /** A free-form line (a phase without counts). */
    update(text: string): void {
      if (tty) write(text);
    },
    /** A copy's counts since the last `restart()` (or creation). */
    count(label: string, count: ProgressCount): void {
      if (tty) write(describeProgress(label, count, (Date.now() - started) / 1000));
    },
    /** Rates and ETA count from now (a new copy begins). */
    restart(): void {
      started = Date.now();
    },
    done(): void {
      if (tty && last > 0) stream.write('\r\u001b[2K');
    },
  };
}
