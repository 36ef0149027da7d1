import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { chooseStandby, nextStandby, rollbackChoice } from '../../../src/agent/swap/retention.js';
import { retainedAfter } from '../../../src/store/retained-releases.js';
import type { EpochRecord } from '../../../src/store/epoch-file.js';
import type { SlotName } from '../../../src/store/store-layout.js';

const at = '2026-12-01T00:00:00.000Z';
const record = (over: Partial<EpochRecord>): EpochRecord => ({
  format: 1,
  epoch: 10,
  mounted: 'a',
  roots: { a: 'a', b: 'b', c: 'c', d: 'd' },
  publishedAt: at,
  ...over,
});
const known = (seqs: Partial<Record<SlotName, number>>) => (s: SlotName) => ({ seq: seqs[s] ?? null, copying: false });

describe('which copy a sync reuses, and what stays retained', () => {
  it('two copies: the other one, with nothing to retire', () => {
    assert.deepEqual(chooseStandby(record({}), 2, known({ a: 5, b: 4 })), { slot: 'b', retire: null, early: false });
  });

  it('a free copy first, the one furthest along in the journal; a copy never made counts as furthest behind', () => {
    const r = record({ retained: [{ slot: 'b', epoch: 9, replacedAt: at }] });
    assert.equal(chooseStandby(r, 4, known({ c: 3, d: 7 })).slot, 'd');
    assert.equal(chooseStandby(r, 4, known({ c: 3 })).slot, 'c');
  });

  it('every copy holding a release: the oldest retained, retired first; early while younger than its until', () => {
    const now = Date.parse(at);
    const r = record({
      retained: [
        { slot: 'b', epoch: 9, replacedAt: at, until: new Date(now + 1000).toISOString() },
        { slot: 'c', epoch: 6, replacedAt: at, until: new Date(now + 1000).toISOString() },
        { slot: 'd', epoch: 8, replacedAt: at, until: new Date(now - 1).toISOString() },
      ],
    });
    const young = chooseStandby(r, 4, known({}), now);
    assert.equal(young.slot, 'c');
    assert.equal(young.retire?.epoch, 6);
    assert.equal(young.early, true);
    assert.equal(chooseStandby(r, 4, known({}), now + 2000).early, false);
  });

  it('--keep lowered: a release retained past the slots kept is never the copy reused; two copies retain nothing', () => {
    const r = record({
      mounted: 'a',
      retained: [
        { slot: 'd', epoch: 4, replacedAt: at },
        { slot: 'c', epoch: 9, replacedAt: at },
        { slot: 'b', epoch: 8, replacedAt: at },
      ],
    });
    const three = nextStandby(r, 3, known({}));
    assert.equal(three.slot, 'b', 'the oldest among the kept slots, not d');
    assert.equal(three.retire?.epoch, 8);
    assert.deepEqual(nextStandby(record({ mounted: 'c', retained: r.retained }), 2, known({ a: 1, b: 3 })), {
      slot: 'b',
      retire: null,
      early: false,
    });
  });

  it('the release replaced joins the retained list, newest first; the copy mounted leaves it', () => {
    const now = Date.parse(at);
    const r = record({
      epoch: 12,
      since: 11,
      release: 'v11',
      retained: [
        { slot: 'b', epoch: 9, replacedAt: at },
        { slot: 'c', epoch: 7, replacedAt: at },
      ],
    });
    const after = retainedAfter(r, 'c', 60_000, now);
    assert.deepEqual(
      after.map((x) => [x.slot, x.epoch, x.release]),
      [
        ['a', 11, 'v11'],
        ['b', 9, undefined],
      ],
    );
    assert.equal(after[0]?.until, new Date(now + 60_000).toISOString());
    assert.equal(retainedAfter(r, 'd', 0, now)[0]?.until, undefined, 'no max age: servable until reused');
  });

  it('rollback: the release named by id or epoch, else the newest; refused naming what is kept', () => {
    const r = record({
      release: 'v10',
      retained: [
        { slot: 'b', epoch: 8, release: 'v8', replacedAt: at },
        { slot: 'c', epoch: 9, release: 'v9', replacedAt: at },
      ],
    });
    assert.equal(rollbackChoice(r, undefined).release, 'v9');
    assert.equal(rollbackChoice(r, 'v8').slot, 'b');
    assert.equal(rollbackChoice(r, '8').slot, 'b');
    assert.throws(() => rollbackChoice(r, 'v10'), /is the release mounted/);
    assert.throws(() => rollbackChoice(r, 'v3'), /v3 is not retained; the retained releases are: v9 \(epoch 9\), v8/);
    assert.throws(() => rollbackChoice(record({}), undefined), /no earlier release is retained/);
  });
});
