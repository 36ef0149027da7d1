import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Limiter, forEachLimited } from '../../../src/core/limiter.js';
import { Mutex } from '../../../src/core/mutex.js';

/** A promise and the function that resolves it. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { promise, open };
}

describe('Limiter', () => {
  it('never runs more than its concurrency at once, and runs every task', async () => {
    const limiter = new Limiter(3);
    let active = 0;
    let peak = 0;
    const done: number[] = [];
    await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        limiter.run(async () => {
          active++;
          peak = Math.max(peak, active);
          await new Promise((r) => setImmediate(r));
          active--;
          done.push(i);
        }),
      ),
    );
    assert.equal(peak, 3);
    assert.equal(done.length, 50);
  });

  it('frees the slot of a task that throws, and passes the error on', async () => {
    const limiter = new Limiter(1);
    await assert.rejects(
      limiter.run(async () => {
        throw new Error('boom');
      }),
      /boom/,
    );
    assert.equal(await limiter.run(async () => 7), 7);
  });

  it('keeps its order and its bound over a long queue (past the queue compaction)', async () => {
    const limiter = new Limiter(2);
    const order: number[] = [];
    await Promise.all(Array.from({ length: 5000 }, (_, i) => limiter.run(async () => void order.push(i))));
    assert.deepEqual(
      order,
      Array.from({ length: 5000 }, (_, i) => i),
    );
  });
});

describe('forEachLimited', () => {
  it('visits every item, concurrency at a time, and rejects on the first failure', async () => {
    let active = 0;
    let peak = 0;
    const seen: number[] = [];
    await forEachLimited([1, 2, 3, 4, 5, 6, 7], 2, async (n) => {
      active++;
      peak = Math.max(peak, active);
      await new Promise((r) => setImmediate(r));
      seen.push(n);
      active--;
    });
    assert.equal(peak, 2);
    assert.deepEqual(
      seen.sort((a, b) => a - b),
      [1, 2, 3, 4, 5, 6, 7],
    );
    await assert.rejects(
      forEachLimited([1, 2, 3], 2, async (n) => {
        if (n === 2) throw new Error('two');
      }),
      /two/,
    );
    await forEachLimited([], 4, async () => assert.fail('called on nothing'));
  });
});

describe('Mutex', () => {
  it('runs one task at a time, in the order they asked', async () => {
    const mutex = new Mutex();
    const first = gate();
    const events: string[] = [];
    const a = mutex.lock(async () => {
      events.push('a start');
      await first.promise;
      events.push('a end');
    });
    const b = mutex.lock(async () => {
      events.push('b');
    });
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(events, ['a start'], 'b ran while a held the lock');
    first.open();
    await Promise.all([a, b]);
    assert.deepEqual(events, ['a start', 'a end', 'b']);
  });

  it('lets the next task in after one that throws', async () => {
    const mutex = new Mutex();
    await assert.rejects(
      mutex.lock(async () => {
        throw new Error('held and failed');
      }),
    );
    assert.equal(await mutex.lock(async () => 'next'), 'next');
  });
});
