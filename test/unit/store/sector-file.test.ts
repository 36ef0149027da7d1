import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { link, lstat, mkdtemp, readFile, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SECTOR_BYTES, writeSectorFile } from '../../../src/store/sector-file.js';
import { SlotPositions } from '../../../src/store/slot-positions.js';

describe('writeSectorFile', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mirrorswap-sector-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('writes one sector of JSON padded with blanks, and rewrites that same file in place', async () => {
    const file = join(dir, 'pos.json');
    await writeSectorFile(file, JSON.stringify({ seq: 1, note: 'a longer first record' }));
    const first = await stat(file);
    assert.equal(first.size, SECTOR_BYTES);
    assert.deepEqual(JSON.parse(await readFile(file, 'utf8')), { seq: 1, note: 'a longer first record' });
    await writeSectorFile(file, JSON.stringify({ seq: 2 }));
    const second = await stat(file);
    assert.equal(second.ino, first.ino, 'a one-sector file is rewritten in place, not replaced');
    assert.equal(second.size, SECTOR_BYTES);
    // a shorter record leaves nothing of the longer one behind it
    assert.deepEqual(JSON.parse(await readFile(file, 'utf8')), { seq: 2 });
    assert.deepEqual(
      (await readdir(dir)).filter((n) => n.endsWith('.tmp')),
      [],
    );
  });

  it('replaces a file of another size (written by hand, or by an older version) whole', async () => {
    const file = join(dir, 'legacy.json');
    await writeFile(file, `${JSON.stringify({ seq: 7, pad: 'x'.repeat(900) }, null, 2)}\n`);
    const old = await stat(file);
    await writeSectorFile(file, JSON.stringify({ seq: 8 }));
    const now = await stat(file);
    assert.notEqual(now.ino, old.ino);
    assert.equal(now.size, SECTOR_BYTES);
    assert.deepEqual(JSON.parse(await readFile(file, 'utf8')), { seq: 8 });
  });

  it('never writes through a link put in its place: the link is replaced, its target untouched', async () => {
    const victim = join(dir, 'victim');
    await writeFile(victim, 'x'.repeat(SECTOR_BYTES)); // one sector: would be written in place if followed
    const file = join(dir, 'linked.json');
    await symlink(victim, file);
    await writeSectorFile(file, JSON.stringify({ seq: 3 }));
    assert.equal(await readFile(victim, 'utf8'), 'x'.repeat(SECTOR_BYTES));
    assert.ok((await lstat(file)).isFile());
    assert.deepEqual(JSON.parse(await readFile(file, 'utf8')), { seq: 3 });
  });

  it('never writes into another file through a hard link put in its place', async () => {
    const victim = join(dir, 'hard-victim');
    await writeFile(victim, 'v'.repeat(SECTOR_BYTES)); // one sector: would be written in place
    const file = join(dir, 'hardlinked.json');
    await link(victim, file);
    await writeSectorFile(file, JSON.stringify({ seq: 9 }));
    assert.equal(await readFile(victim, 'utf8'), 'v'.repeat(SECTOR_BYTES));
    assert.equal((await stat(file)).nlink, 1);
    assert.deepEqual(JSON.parse(await readFile(file, 'utf8')), { seq: 9 });
  });

  it('does not wait on a FIFO put in its place: replaces it', async () => {
    const file = join(dir, 'fifo.json');
    execFileSync('mkfifo', [file]);
    await writeSectorFile(file, JSON.stringify({ seq: 4 }));
    assert.ok((await lstat(file)).isFile());
    assert.deepEqual(JSON.parse(await readFile(file, 'utf8')), { seq: 4 });
  });

  it('a record of a sector or more is written whole, never cut', async () => {
    const file = join(dir, 'big.json');
    const big = { pad: 'y'.repeat(SECTOR_BYTES) };
    await writeSectorFile(file, JSON.stringify(big));
    assert.deepEqual(JSON.parse(await readFile(file, 'utf8')), big);
  });

  it('slot positions round-trip through it, and a format-1 file written by hand is still read', async () => {
    const file = join(dir, 'slots.json');
    await writeFile(
      file,
      `${JSON.stringify({ format: 1, journal: 'j1', slots: { a: { seq: 5, syncing: false }, b: { seq: 3, syncing: true } } }, null, 2)}\n`,
    );
    const positions = await SlotPositions.load(file, 'j1');
    assert.deepEqual(positions.get('a'), { seq: 5, copying: false });
    assert.deepEqual(positions.get('b'), { seq: 3, copying: true });
    await positions.set('b', { seq: 6, copying: false });
    assert.equal((await stat(file)).size, SECTOR_BYTES);
    const again = await SlotPositions.load(file, 'j1');
    assert.deepEqual(again.get('a'), { seq: 5, copying: false });
    assert.deepEqual(again.get('b'), { seq: 6, copying: false });
    assert.deepEqual(await again.recorded('b'), { seq: 6, copying: false });
    // still the documented JSON: format 1, the journal, each slot's seq and syncing
    assert.deepEqual(JSON.parse(await readFile(file, 'utf8')), {
      format: 1,
      journal: 'j1',
      slots: { a: { seq: 5, syncing: false }, b: { seq: 6, syncing: false } },
    });
    // against another journal the positions are unknown
    assert.deepEqual((await SlotPositions.load(file, 'j2')).get('b'), { seq: null, copying: false });
  });
});
