import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CoalescedRun } from '../../../src/core/coalesced-run.js';

describe('CoalescedRun', () => {
  it('never overlaps runs, and folds calls made during a run into one more', async () => {
    let active = 0;
    let runs = 0;
    const run = new CoalescedRun(
      async () => {
        assert.equal(active, 0, 'two runs overlapped');
        active++;
        runs++;
        await new Promise((r) => setImmediate(r));
        active--;
      },
      () => false,
    );
    await Promise.all(Array.from({ length: 10 }, () => run.run()));
    assert.equal(runs, 2);
  });

  it('starts a new run for a call made once a run resolved', async () => {
    let runs = 0;
    const run = new CoalescedRun(
      async () => {
        runs++;
        await new Promise((r) => setImmediate(r));
      },
      () => false,
    );
    await run.run().then(() => run.run());
    assert.equal(runs, 2);
    // and from a callback chained on the promise of the run still under way
    const first = run.run();
    const second = first.then(() => run.run());
    await Promise.all([first, second]);
    assert.equal(runs, 4);
  });

  it('starts nothing once stopped, and settles', async () => {
    let stopped = false;
    let runs = 0;
    const run = new CoalescedRun(
      async () => {
        runs++;
      },
      () => stopped,
    );
    await run.run();
    stopped = true;
    await run.run();
    await run.settled();
    assert.equal(runs, 1);
  });
});
