import {
  constants,
  type Dirent,
  closeSync,
  copyFileSync,
  fstatSync,
  futimesSync,
  mkdirSync,
  openSync,
  readSync,
  readdirSync,
  readlinkSync,
  realpathSync,
  symlinkSync,
  writeSync,
  chmodSync,
  fchmodSync,
} from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { msInside } from './copy-times.js';
import { isGone, isUnplaceable } from './source-tree.js';
import { WALK_THREADS } from './walk-threads.js';

/** One directory of the source to copy whole as a new directory `dest` (which must not exist). */
export interface CloneJob {
  rel: string;
  dest: string;
}

/** What a clone did. */
export interface CloneResult {
  files: number;
  bytes: number;
  dirs: number;
  /** Jobs whose source was not a directory reached without a link (copied by path instead). */
  missed: string[];
  /** Entries the target cannot hold (a name too long for its file system), left out. */
  skipped: string[];
}

/** Files up to this size are copied by one read and one write through their descriptors. */
const SMALL_FILE = 1024 * 1024;
const NO_FOLLOW = constants.O_NOFOLLOW | constants.O_NONBLOCK;

const fdPath = (fd: number) => `/proc/self/fd/${fd}`;

/**
 * Copy whole directories of a source tree with blocking calls, in the thread
 * that runs it (a worker): a tree of many small files costs a few system
 * calls each, not a hop through the thread pool per call.
 *
 * Nothing is ever reached through a link. A job's directory is opened
 * without following a final link and checked against where the kernel says
 * it is; every entry below is opened by its name inside its parent as opened
 * (`/proc/self/fd/N/name`, `O_NOFOLLOW`), so a parent swapped for a link
 * during the copy is never followed. Files are read from the descriptor
 * that was checked.
 */
export function cloneTreesSync(source: string, jobs: readonly CloneJob[]): CloneResult {
  const realSource = realpathSync(source);
  const result: CloneResult = { files: 0, bytes: 0, dirs: 0, missed: [], skipped: [] };
  const buffer = Buffer.allocUnsafe(SMALL_FILE);

  const guard = (rel: string, work: () => void): void => {
    try {
      work();
    } catch (err) {
      if (isUnplaceable(err)) result.skipped.push(rel);
      else if (!isGone(err)) throw err; // gone or swapped meanwhile: the watcher reports it again
    }
  };

  const copyFile = (parentFd: number, name: string, dest: string): void => {
    const fd = openSync(join(fdPath(parentFd), name), constants.O_RDONLY | NO_FOLLOW);
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) return;
      if (st.size <= SMALL_FILE) {
        const mode = st.mode & 0o7777;
        const out = openSync(dest, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, mode);
        let length = 0;
        try {
          while (length < buffer.length) {
            const n = readSync(fd, buffer, length, buffer.length - length, length);
            if (n === 0) break;
            length += n;
          }
          for (let written = 0; written < length; ) written += writeSync(out, buffer, written, length - written);
          fchmodSync(out, mode); // creation's mode is cut by the umask (reading it is deprecated)
          futimesSync(out, msInside(st.atimeMs), msInside(st.mtimeMs));
        } finally {
          closeSync(out);
        }
        result.bytes += length;
      } else {
        copyFileSync(fdPath(fd), dest); // copy_file_range in the kernel; the path names the opened file
        const out = openSync(dest, constants.O_WRONLY);
        try {
          futimesSync(out, msInside(st.atimeMs), msInside(st.mtimeMs));
        } finally {
          closeSync(out);
        }
        result.bytes += st.size;
      }
      result.files++;
    } finally {
      closeSync(fd);
    }
  };

  /** Copy the directory open as `fd` into the new directory `dest`. */
  const copyDirectory = (fd: number, rel: string, dest: string): void => {
    const st = fstatSync(fd);
    mkdirSync(dest, { mode: 0o700 });
    result.dirs++;
    const entries: Dirent[] = readdirSync(fdPath(fd), { withFileTypes: true });
    for (const e of entries) {
      const child = `${rel}/${e.name}`;
      const to = join(dest, e.name);
      if (e.isFile()) guard(child, () => copyFile(fd, e.name, to));
      else if (e.isSymbolicLink()) {
        guard(child, () => {
          symlinkSync(readlinkSync(join(fdPath(fd), e.name)), to);
          result.files++;
        });
      } else if (e.isDirectory()) {
        guard(child, () => {
          const sub = openSync(join(fdPath(fd), e.name), constants.O_RDONLY | constants.O_DIRECTORY | NO_FOLLOW);
          try {
            copyDirectory(sub, child, to);
          } finally {
            closeSync(sub);
          }
        });
      }
    }
    chmodSync(dest, st.mode & 0o7777);
  };

  for (const job of jobs) {
    let fd: number;
    try {
      fd = openSync(join(source, job.rel), constants.O_RDONLY | constants.O_DIRECTORY | NO_FOLLOW);
    } catch (err) {
      if (!isGone(err)) throw err;
      result.missed.push(job.rel);
      continue;
    }
    try {
      // the job's own path is checked once: none of its parents may be a link
      if (readlinkSync(fdPath(fd)) !== join(realSource, job.rel)) {
        result.missed.push(job.rel);
        continue;
      }
      guard(job.rel, () => copyDirectory(fd, job.rel, job.dest));
    } finally {
      closeSync(fd);
    }
  }
  return result;
}

/**
 * cloneTreesSync in worker threads, the jobs shared among them (default
 * `WALK_THREADS`).
 */
export async function cloneTrees(
  source: string,
  jobs: readonly CloneJob[],
  workers = WALK_THREADS,
): Promise<CloneResult> {
  const n = Math.min(workers, jobs.length);
  const parts = await Promise.all(
    Array.from(
      { length: n },
      (_, index) =>
        new Promise<CloneResult>((resolve, reject) => {
          const worker = new Worker(new URL('./clone-worker.js', import.meta.url), {
            workerData: { source, jobs: jobs.filter((_, i) => i % n === index) },
          });
          worker.once('message', (r: CloneResult) => resolve(r));
          worker.once('error', reject);
          worker.once('exit', (code) => {
            if (code !== 0) reject(new Error(`tree copy worker exited with ${code}`));
          });
        }),
    ),
  );
  const all: CloneResult = { files: 0, bytes: 0, dirs: 0, missed: [], skipped: [] };
  for (const p of parts) {
    all.files += p.files;
    all.bytes += p.bytes;
    all.dirs += p.dirs;
    all.missed.push(...p.missed);
    all.skipped.push(...p.skipped);
  }
  return all;
}
