import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ReconcileTrigger, SwapKind, SwapRecord } from '../../../src/agent/agent-types.js';
import { SwapQueue, rollbackRefusal } from '../../../src/agent/swap/swap-queue.js';
import { emptyStats } from '../../../src/tree/tree-copy.js';

/** A queue over work that records what it ran and finishes each swap when told. */
function harness() {
  const ran: string[] = [];
  let epoch = 1;
  let release: (() => void) | undefined;
  let hold = false;
  const queue = new SwapQueue({
    async swap(kind: SwapKind, full: boolean, onPublished: () => void): Promise<SwapRecord> {
      ran.push(`${kind}${full ? ' full' : ''}`);
      if (hold) await new Promise<void>((resolve) => (release = resolve));
      onPublished();
      epoch += 1;
      return {
        kind,
        result: 'ok',
        epoch,
        from: 'a',
        to: 'b',
        mode: 'none',
        startedAt: '',
        phases: {},
        copied: emptyStats(),
        dropped: [],
      };
    },
    async reconcile(trigger: ReconcileTrigger) {
      ran.push(`reconcile ${trigger}`);
    },
  });
  return {
    queue,
    ran,
    hold: () => {
      hold = true;
    },
    finish: () => {
      hold = false;
      release?.();
    },
    /** Until the work has started its n-th job. */
    started: async (n: number) => {
      while (ran.length < n) await new Promise((r) => setImmediate(r));
    },
  };
}

describe('SwapQueue', () => {
  it('coalesces sync requests made while one runs into one more, and every caller gets its record', async () => {
    const h = harness();
    h.hold();
    const first = h.queue.requestSync({ reason: 'api' });
    await h.started(1);
    const waiting = [
      h.queue.requestSync({ reason: 'api' }),
      h.queue.requestSync({ reason: 'signal', full: true }),
      h.queue.requestSync({ reason: 'auto' }),
    ];
    h.finish();
    const [r1, ...rest] = await Promise.all([first, ...waiting]);
    assert.deepEqual(h.ran, ['sync', 'sync full'], 'a full request makes the coalesced sync full');
    assert.equal(r1?.epoch, 2);
    assert.ok(rest.every((r) => r.epoch === 3));
  });

  it('runs a request made as the last job resolves (no lost wake-up)', async () => {
    const h = harness();
    const second = await h.queue.requestSync({ reason: 'api' }).then(() => h.queue.requestSync({ reason: 'api' }));
    assert.equal(second.epoch, 3);
    assert.deepEqual(h.ran, ['sync', 'sync']);
  });

  it('a published rollback pauses scheduled syncs from its publish on; an explicit sync lifts the pause', async () => {
    const h = harness();
    assert.equal(h.queue.paused, false);
    h.hold();
    const rollback = h.queue.rollback();
    await h.started(1);
    h.finish();
    await rollback;
    assert.equal(h.queue.paused, true);
    await h.queue.requestSync({ reason: 'interval' });
    assert.equal(h.queue.paused, true, 'a scheduled sync lifted the pause');
    await h.queue.requestSync({ reason: 'api' });
    assert.equal(h.queue.paused, false);
  });

  it('keeps one comparison waiting at most, and runs jobs in order', async () => {
    const h = harness();
    h.hold();
    const sync = h.queue.requestSync({ reason: 'api' });
    await h.started(1);
    const reconciles = [h.queue.reconcile('verify'), h.queue.reconcile('incomplete'), h.queue.reconcile('verify')];
    const rollback = h.queue.rollback();
    h.finish();
    await Promise.all([sync, rollback, ...reconciles]);
    assert.deepEqual(h.ran, ['sync', 'reconcile verify', 'rollback']);
  });

  it('close drops waiting comparisons and waits for the swaps queued', async () => {
    const h = harness();
    h.hold();
    const sync = h.queue.requestSync({ reason: 'api' });
    await h.started(1);
    const reconcile = h.queue.reconcile('verify');
    const next = h.queue.requestSync({ reason: 'api', full: true });
    let closed = false;
    const closing = h.queue.close().then(() => {
      closed = true;
    });
    await reconcile; // resolved by close without running
    assert.equal(closed, false, 'close returned while a swap ran');
    h.finish();
    await closing;
    assert.equal((await sync).epoch, 2);
    assert.equal((await next).epoch, 3);
    assert.deepEqual(h.ran, ['sync', 'sync full']);
    await h.queue.reconcile('verify');
    assert.deepEqual(h.ran, ['sync', 'sync full'], 'a comparison ran after close');
  });
});

describe('rollbackRefusal', () => {
  it('refuses a standby that is incomplete, unknown, or not older than the mounted copy', () => {
    assert.match(
      rollbackRefusal('b', { seq: 3, copying: true }, { seq: 5, copying: false })?.message ?? '',
      /does not hold a complete earlier copy/,
    );
    assert.ok(rollbackRefusal('b', { seq: null, copying: false }, { seq: 5, copying: false }));
    assert.match(
      rollbackRefusal('b', { seq: 5, copying: false }, { seq: 5, copying: false })?.message ?? '',
      /no release older/,
    );
    assert.ok(rollbackRefusal('b', { seq: 6, copying: false }, { seq: 5, copying: false }));
    assert.equal(rollbackRefusal('b', { seq: 4, copying: false }, { seq: 5, copying: false }), null);
    assert.equal(rollbackRefusal('a', { seq: 4, copying: false }, { seq: null, copying: false }), null);
  });
});
