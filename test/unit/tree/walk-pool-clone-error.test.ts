import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { WalkPool } from '../../../src/tree/walk-pool.js';
import { tempDirs } from '../../../testkit/store.js';

const dirs = tempDirs();
after(() => dirs.removeAll());

describe('WalkPool: a job whose context cannot be sent to a thread', () => {
  it('fails that job alone: the thread stays free for the next, and the pool closes', async () => {
    const pool = new WalkPool(1);
    try {
      const root = await dirs.make('walk-pool-clone-');
      for (const name of ['a', 'b', 'c']) {
        await mkdir(join(root, name));
        await writeFile(join(root, name, 'x'), name);
      }
      const units = [
        { rel: 'a', deep: true },
        { rel: 'b', deep: true },
        { rel: 'c', deep: true },
      ];
      // a function cannot be cloned: postMessage throws DataCloneError
      await assert.rejects(
        pool.run('count', { root, notCloneable: () => 0 }, units, () => true),
        (err: Error) => err.name === 'DataCloneError',
      );
      assert.equal(pool.busyThreads, 0, 'no thread is left waiting on a chunk it was never sent');
      let results = 0;
      const next = pool.run('count', { root }, units, (r: unknown[]) => {
        results += r.length;
        return true;
      });
      const late = new Promise((_, reject) => {
        setTimeout(() => reject(new Error('the next job never ran')), 5000).unref();
      });
      await Promise.race([next, late]);
      assert.equal(results, 3);
    } finally {
      await pool.close();
    }
  });
});
