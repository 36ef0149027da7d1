import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { tempDirs } from '../../../testkit/store.js';
import { StoreLock } from '../../../src/store/store-lock.js';

const dirs = tempDirs();
after(() => dirs.removeAll());

async function lockFile(): Promise<string> {
  const dir = await dirs.make('mirrorswap-lock-');
  return join(dir, 'agent.lock');
}

describe('StoreLock', () => {
  it('lets one holder in, refuses a second naming the first, and lets the next in after release', async () => {
    const file = await lockFile();
    const first = await StoreLock.acquire(file);
    await assert.rejects(StoreLock.acquire(file), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'STORE_LOCKED');
      assert.match(err.message, new RegExp(`pid ${process.pid}`));
      return true;
    });
    await first.release();
    await first.release(); // idempotent
    const second = await StoreLock.acquire(file);
    await second.release();
  });

  it('is held by the kernel for another process too, whatever that process says of itself', async () => {
    const file = await lockFile();
    const held = await StoreLock.acquire(file);
    // flock(1) from outside, without waiting: it must find the lock taken
    const code = (() => {
      try {
        execFileSync('flock', ['--nonblock', '--conflict-exit-code', '75', file, 'true']);
        return 0;
      } catch (err) {
        return (err as { status: number }).status;
      }
    })();
    assert.equal(code, 75);
    await held.release();
    execFileSync('flock', ['--nonblock', file, 'true']);
  });

  it('refuses a lock path that is a FIFO or a link, without waiting on it', async () => {
    const fifo = await lockFile();
    execFileSync('mkfifo', [fifo]);
    await assert.rejects(StoreLock.acquire(fifo), /not a regular file/);
    const link = await lockFile();
    const target = `${link}.target`;
    await writeFile(target, '');
    await symlink(target, link);
    await assert.rejects(StoreLock.acquire(link), (err: Error & { code?: string }) => err.code === 'STORE_LOCK');
  });
});
