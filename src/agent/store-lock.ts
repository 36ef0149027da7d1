import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readlink, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { writeFileAtomic } from '../atomic-write.js';
import { MirrorswapError } from '../errors.js';
import { readSmallFile } from '../read-small-file.js';

interface LockOwner {
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
 * lock file, held by a `flock` process tied to this one by a pipe. The kernel
 * releases it when that process exits, which it does as soon as the pipe
 * closes, that is when this process exits in any way (kill -9 included). No
 * pid or hostname is trusted to say who holds it: two agents in different
 * PID namespaces with the same hostname (two containers on host networking)
 * can never both take a store. The owner file beside the lock only names the
 * holder for the message a second agent prints.
 */
export class StoreLock {
  readonly #ownerFile: string;
  #holder: ChildProcess | undefined;

  private constructor(ownerFile: string, holder: ChildProcess) {
    this.#ownerFile = ownerFile;
    this.#holder = holder;
  }

  static async acquire(file: string): Promise<StoreLock> {
    const ownerFile = `${file}.owner`;
    const holder = spawn(
      'flock',
      [
        '--exclusive',
        '--nonblock',
        '--conflict-exit-code',
        String(CONFLICT),
        file,
        'sh',
        '-c',
        'echo locked; exec cat >/dev/null',
      ],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    let stderr = '';
    holder.stderr?.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const spawned = once(holder, 'spawn').then(
      () => null,
      (err: NodeJS.ErrnoException) => err,
    );
    const locked = new Promise<boolean>((resolve) => {
      holder.stdout?.once('data', () => resolve(true));
      holder.once('exit', () => resolve(false));
    });
    const spawnError = await spawned;
    if (spawnError) {
      throw new MirrorswapError(
        'MISSING_TOOL',
        spawnError.code === 'ENOENT'
          ? 'flock(1) is not installed: the agent takes its store with it (Debian package util-linux)'
          : `cannot start flock(1) to take the store: ${spawnError.message}`,
      );
    }
    if (await locked) {
      holder.stdout?.destroy(); // the one line it prints is read
      // the holder lives as long as this process, and must not keep it alive by itself
      holder.unref();
      for (const pipe of [holder.stdin, holder.stderr]) (pipe as unknown as { unref?: () => void } | null)?.unref?.();
      const me: LockOwner = {
        pid: process.pid,
        host: hostname(),
        pidNamespace: await pidNamespace(),
        startedAt: new Date().toISOString(),
      };
      await writeFileAtomic(ownerFile, `${JSON.stringify(me)}\n`, { durable: false });
      return new StoreLock(ownerFile, holder);
    }
    const code = holder.exitCode;
    if (code !== CONFLICT) {
      throw new MirrorswapError('STORE_LOCK', `cannot take ${file} (flock exited ${code}): ${stderr.trim()}`);
    }
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
      `another mirrorswap agent (${who}) holds ${file}; stop it first (the lock is the kernel's: it goes with that process)`,
    );
  }

  /** Let the store go: the holder sees its pipe close, exits, and the kernel drops the lock. */
  async release(): Promise<void> {
    const holder = this.#holder;
    if (!holder) return;
    this.#holder = undefined;
    holder.ref(); // waited on now: its exit must keep this process up until the lock is gone
    const exited = holder.exitCode !== null ? Promise.resolve() : once(holder, 'exit').then(() => {});
    await unlink(this.#ownerFile).catch(() => {});
    holder.stdin?.end();
    await exited;
  }
}
