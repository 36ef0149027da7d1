import { open, readFile, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { MirrorswapError } from '../errors.js';

interface LockOwner {
  pid: number;
  host: string;
  startedAt: string;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * One agent per store. The lock file names its owner; a lock left by a dead
 * process on this host is taken over, one held by a live process (or by
 * another host, whose processes we cannot see) is refused with its owner named.
 */
export class StoreLock {
  readonly #file: string;
  #held = false;

  private constructor(file: string) {
    this.#file = file;
  }

  static async acquire(file: string): Promise<StoreLock> {
    const me: LockOwner = { pid: process.pid, host: hostname(), startedAt: new Date().toISOString() };
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const handle = await open(file, 'wx', 0o644);
        await handle.writeFile(`${JSON.stringify(me)}\n`);
        await handle.sync();
        await handle.close();
        const lock = new StoreLock(file);
        lock.#held = true;
        return lock;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      let owner: LockOwner | undefined;
      try {
        owner = JSON.parse(await readFile(file, 'utf8')) as LockOwner;
      } catch {
        owner = undefined; // torn by a crash while writing it: stale
      }
      if (owner && owner.pid !== process.pid && (owner.host !== me.host || alive(owner.pid))) {
        throw new MirrorswapError(
          'STORE_LOCKED',
          `another mirrorswap agent (pid ${owner.pid} on ${owner.host}, since ${owner.startedAt}) holds ${file}; ` +
            'stop it first, or remove the file if that process is gone',
        );
      }
      await unlink(file).catch(() => {});
    }
    throw new MirrorswapError('STORE_LOCKED', `could not take ${file}: it keeps reappearing`);
  }

  async release(): Promise<void> {
    if (!this.#held) return;
    this.#held = false;
    await unlink(this.#file).catch(() => {});
  }
}
