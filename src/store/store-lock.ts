import { spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { once } from 'node:events';
import { type FileHandle, open, readlink, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { writeFileAtomic } from './atomic-write.js';
import { MirrorswapError } from '../core/errors.js';
import { readSmallFile } from './read-small-file.js';

interface LockOwner {
  /** What holds it ("mirrorswap agent", "mirrorswap host agent (web-3)", …); absent in files of older versions. */
  holder?: string;
  pid: number;
  host: string;
  /** The PID namespace the pid belongs to: two containers may each have a process 1. */
  pidNamespace: string;
  startedAt: string;
}

/** flock(1) exits with this when the lock is held by someone else (--conflict-exit-code). */
const CONFLICT = 75;

async function pidNamespace(): Promise<string> {
  return readlink('/proc/self/ns/pid').catch(() => 'unknown');
}

/**
 * One agent per store, enforced by the kernel: an exclusive flock(2) on the
 * lock file, taken on a descriptor this process opened and keeps. flock(1)
 * locks that descriptor (inherited as fd 3) and exits; the lock belongs to
 * the open file description, so it lasts exactly as long as this process's
 * descriptor: the kernel drops it when the agent exits in any way (kill -9
 * included), and no helper process can die and drop it meanwhile. No pid or
 * hostname is trusted to say who holds it: two agents in different PID
 * namespaces with the same hostname (two containers on host networking) can
 * never both take a store. The owner file beside the lock only names the
 * holder for the message a second agent prints.
 */
export class StoreLock {
  readonly #ownerFile: string;
  #handle: FileHandle | undefined;

  private constructor(ownerFile: string, handle: FileHandle) {
    this.#ownerFile = ownerFile;
    this.#handle = handle;
  }

  static async acquire(file: string, holder = 'mirrorswap agent'): Promise<StoreLock> {
    const ownerFile = `${file}.owner`;
    // O_NONBLOCK and O_NOFOLLOW: a FIFO or a link put in its place is refused, never waited on
    const handle = await open(
      file,
      constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW | constants.O_NONBLOCK,
      0o644,
    ).catch((err: NodeJS.ErrnoException) => {
      throw new MirrorswapError('STORE_LOCK', `cannot open the store lock ${file}: ${err.message}`);
    });
    let locked = false;
    try {
      if (!(await handle.stat()).isFile()) {
        throw new MirrorswapError('STORE_LOCK', `the store lock ${file} is not a regular file: remove it`);
      }
      const { code, stderr } = await lockDescriptor(handle.fd);
      if (code === 0) {
        locked = true;
        const me: LockOwner = {
          holder,
          pid: process.pid,
          host: hostname(),
          pidNamespace: await pidNamespace(),
          startedAt: new Date().toISOString(),
        };
        await writeFileAtomic(ownerFile, `${JSON.stringify(me)}\n`, { durable: false });
        return new StoreLock(ownerFile, handle);
      }
      if (code !== CONFLICT)
        throw new MirrorswapError('STORE_LOCK', `cannot take ${file} (flock exited ${code}): ${stderr}`);
      let owner: LockOwner | null = null;
      try {
        owner = JSON.parse((await readSmallFile(ownerFile, 4096))?.toString('utf8') ?? 'null') as LockOwner | null;
      } catch {
        owner = null;
      }
      const who = owner
        ? `pid ${owner.pid} on ${owner.host}, PID namespace ${owner.pidNamespace}, since ${owner.startedAt}`
        : 'which has not written who it is yet';
      throw new MirrorswapError(
        'STORE_LOCKED',
        // named as the holder wrote itself down: an agent refused by a host agent's lock, say, names that
        `another ${owner?.holder ?? holder} (${who}) holds ${file}; stop it first (the lock is the kernel's: it goes with that process)`,
      );
    } finally {
      if (!locked) await handle.close();
    }
  }

  /** Let the store go: closing the descriptor drops the kernel's lock. */
  async release(): Promise<void> {
    const handle = this.#handle;
    if (!handle) return;
    this.#handle = undefined;
    await unlink(this.#ownerFile).catch(() => {});
    await handle.close();
  }
}

/** flock(1) on an inherited descriptor: 0 when locked, CONFLICT when someone else holds it. */
async function lockDescriptor(fd: number): Promise<{ code: number | null; stderr: string }> {
  const child = spawn('flock', ['--exclusive', '--nonblock', '--conflict-exit-code', String(CONFLICT), '3'], {
    stdio: ['ignore', 'ignore', 'pipe', fd],
  });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const [code] = await Promise.race([
    once(child, 'exit') as Promise<[number | null]>,
    once(child, 'error').then(([err]) => {
      const e = err as NodeJS.ErrnoException;
      throw new MirrorswapError(
        'MISSING_TOOL',
        e.code === 'ENOENT'
          ? 'flock(1) is not installed: the agent takes its store with it (Debian package util-linux)'
          : `cannot start flock(1) to take the store: ${e.message}`,
      );
    }),
  ]);
  return { code, stderr: stderr.trim() };
}
