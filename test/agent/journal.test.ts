import assert from 'node:assert/strict';
import { appendFile, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Journal } from '../../src/agent/master/journal.js';
import { type TempStore, tempStore } from '../../testkit/store.js';
import { onSmallDisk } from '../../testkit/tools.js';

describe('change journal', () => {
  let store: TempStore;
  before(async () => {
    store = await tempStore();
  });
  after(() => store.dispose());

  it('answers which paths changed after a position, across a reopen', async () => {
    const file = join(store.stateDir, 'j1.jsonl');
    const { journal, created } = await Journal.open(file);
    assert.equal(created, true);
    const s1 = await journal.logIntent([{ op: 'put', path: 'a.txt', tmp: '/x' }]);
    await journal.logDone(s1);
    const s2 = await journal.logTouched(['b.txt', 'a.txt']);
    assert.deepEqual(journal.changedSince(0).sort(), ['a.txt', 'b.txt']);
    // a.txt changed again at s2, so a slot synced to s1 still needs it
    assert.deepEqual(journal.changedSince(s1).sort(), ['a.txt', 'b.txt']);
    assert.deepEqual(journal.changedSince(s2), []);
    assert.equal(journal.countSince(s2), 0);
    await journal.close();
    const again = await Journal.open(file);
    assert.equal(again.created, false);
    assert.equal(again.journal.id, journal.id);
    assert.equal(again.journal.lastSeq, s2);
    assert.equal(again.unfinished, null);
    await again.journal.close();
  });

  it('returns the last batch logged without its done mark, to be redone', async () => {
    const file = join(store.stateDir, 'j2.jsonl');
    const { journal } = await Journal.open(file);
    const seq = await journal.logIntent([{ op: 'delete', path: 'gone.txt' }]);
    await journal.close();
    const { unfinished, journal: reopened } = await Journal.open(file);
    assert.deepEqual(unfinished, { seq, ops: [{ op: 'delete', path: 'gone.txt' }] });
    await reopened.close();
  });

  it('drops a torn last line left by a crash and keeps working', async () => {
    const file = join(store.stateDir, 'j3.jsonl');
    const { journal } = await Journal.open(file);
    await journal.logTouched(['kept.txt']);
    await journal.close();
    await appendFile(file, '{"seq":2,"ops":[{"op":"put","pa');
    const { journal: reopened, unfinished } = await Journal.open(file);
    assert.equal(unfinished, null, 'a torn intent was never acknowledged and must not be redone');
    assert.deepEqual(reopened.changedSince(0), ['kept.txt']);
    const next = await reopened.logTouched(['after.txt']);
    await reopened.close();
    const text = await readFile(file, 'utf8');
    for (const line of text.trim().split('\n')) JSON.parse(line);
    assert.ok(next >= 2);
  });

  it('forgets what every slot has and rewrites itself compact', async () => {
    const file = join(store.stateDir, 'j4.jsonl');
    const { journal } = await Journal.open(file);
    let last = 0;
    for (let i = 0; i < 1500; i++) last = await journal.logTouched([`f${i % 10}.txt`]);
    const before = (await stat(file)).size;
    await journal.compact(last - 1);
    assert.equal(journal.countSince(0), 1);
    const afterSize = (await stat(file)).size;
    assert.ok(afterSize < before / 10, `journal not rewritten: ${before} -> ${afterSize}`);
    await journal.close();
    const reopened = await Journal.open(file);
    assert.equal(reopened.journal.lastSeq, last);
    assert.deepEqual(reopened.journal.changedSince(last - 1), [`f${(1500 - 1) % 10}.txt`]);
    await reopened.journal.close();
  });

  it('starts a new journal (with a new id) when the file is unreadable', async () => {
    const file = join(store.stateDir, 'j5.jsonl');
    await writeFile(file, 'not json at all\n');
    const { created, journal } = await Journal.open(file);
    assert.equal(created, true);
    assert.equal(journal.lastSeq, 0);
    await journal.close();
  });

  it('cuts off a line the disk had no room for: the append fails, and later lines survive a reopen', async () => {
    await onSmallDisk(join(store.root, 'small-disk'), '64k', async (dir) => {
      const file = join(dir, 'journal.jsonl');
      const { journal } = await Journal.open(file);
      await journal.logTouched(['before.txt']);
      // leave about one page free, then log a line of ten
      const filler = join(dir, 'filler');
      await writeFile(filler, Buffer.alloc(56 * 1024, 1));
      const long = Array.from({ length: 40 }, (_, i) => `${'d'.repeat(240)}/${i}.txt`);
      await assert.rejects(journal.logTouched(long), { code: 'ENOSPC' });
      await rm(filler);
      await journal.logTouched(['after.txt']);
      await journal.close();
      const text = await readFile(file, 'utf8');
      for (const line of text.trim().split('\n')) JSON.parse(line); // no line glued to a cut-off one
      const reopened = await Journal.open(file);
      assert.deepEqual(reopened.journal.changedSince(0).sort(), ['after.txt', 'before.txt']);
      await reopened.journal.close();
    });
  });

  it('keeps appending when a compaction finds no room to rewrite the file', async () => {
    await onSmallDisk(join(store.root, 'small-disk-2'), '64k', async (dir) => {
      const file = join(dir, 'journal.jsonl');
      const { journal } = await Journal.open(file);
      let last = 0;
      for (let i = 0; i < 1100; i++) last = await journal.logTouched([`f${i % 10}.txt`]);
      const filler = join(dir, 'filler');
      await writeFile(filler, Buffer.alloc(64 * 1024, 1)).catch(() => {}); // whatever fits: the disk is full
      await assert.rejects(journal.compact(last - 1), { code: 'ENOSPC' });
      await rm(filler);
      const after = await journal.logTouched(['after.txt']);
      await journal.close();
      const reopened = await Journal.open(file);
      assert.equal(reopened.journal.lastSeq, after);
      assert.deepEqual(reopened.journal.changedSince(last), ['after.txt']);
      await reopened.journal.close();
    });
  });
});
