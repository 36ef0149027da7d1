import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdir, readdir, rename, rmdir, symlink, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { parseEpochRecord, readEpochFile, readEpochFileSync, writeEpochFile } from '../../../src/store/epoch-file.js';
import type { MirrorswapError } from '../../../src/core/errors.js';
import { tempStore } from '../../../testkit/store.js';

const good = {
  format: 1,
  epoch: 3,
  mounted: 'b',
  roots: { a: '/srv/a', b: '/srv/b' },
  publishedAt: '2026-11-25T10:00:00.000Z',
};

describe('epoch file', () => {
  describe('parseEpochRecord', () => {
    it('accepts a valid record', () => {
      const r = parseEpochRecord(JSON.stringify(good), 'x');
      assert.equal(r.epoch, 3);
      assert.equal(r.mounted, 'b');
    });

    const broken: [string, unknown][] = [
      ['partial JSON', '{"format":1,"epo'],
      ['an array', '[]'],
      ['epoch zero', { ...good, epoch: 0 }],
      ['fractional epoch', { ...good, epoch: 1.5 }],
      ['unknown slot', { ...good, mounted: 'c' }],
      ['missing root', { ...good, roots: { a: '/srv/a' } }],
      ['bad date', { ...good, publishedAt: 'yesterday' }],
      ['format 0', { ...good, format: 0 }],
    ];
    for (const [name, value] of broken) {
      it(`rejects ${name} with EPOCH_CORRUPT`, () => {
        const text = typeof value === 'string' ? value : JSON.stringify(value);
        assert.throws(
          () => parseEpochRecord(text, 'epoch.json'),
          (err: MirrorswapError) => {
            assert.equal(err.code, 'EPOCH_CORRUPT');
            assert.match(err.message, /^epoch\.json: /);
            return true;
          },
        );
      });
    }

    // a store keeping more releases (--keep above 2)
    const kept = {
      ...good,
      epoch: 9,
      mounted: 'c',
      roots: { a: '/srv/a', b: '/srv/b', c: '/srv/c', d: '/srv/d' },
      since: 8,
      retained: [
        {
          slot: 'a',
          epoch: 7,
          release: 'v7',
          replacedAt: '2026-11-25T10:00:00.000Z',
          until: '2026-11-26T10:00:00.000Z',
        },
        { slot: 'b', epoch: 5, replacedAt: '2026-11-24T10:00:00.000Z' },
      ],
    };

    it('accepts a store keeping more releases: a slot past b, retained releases, since', () => {
      const r = parseEpochRecord(JSON.stringify(kept), 'x');
      assert.equal(r.mounted, 'c');
      assert.equal(r.roots.d, '/srv/d');
      assert.equal(r.since, 8);
      assert.deepEqual(
        r.retained?.map((x) => [x.slot, x.epoch, x.release, x.until]),
        [
          ['a', 7, 'v7', '2026-11-26T10:00:00.000Z'],
          ['b', 5, undefined, undefined],
        ],
      );
      assert.ok(Object.isFrozen(r.retained) && Object.isFrozen(r.retained?.[0]));
    });

    const retainedBroken: [string, unknown][] = [
      ['a mounted slot without a root', { ...kept, mounted: 'e' }],
      ['a slot name past h', { ...kept, mounted: 'i', roots: { ...kept.roots, i: '/srv/i' } }],
      ['an empty root', { ...kept, roots: { ...kept.roots, d: '' } }],
      ['retained not a list', { ...kept, retained: { slot: 'a' } }],
      ['the mounted slot retained', { ...kept, retained: [{ ...kept.retained[0], slot: 'c' }] }],
      ['a retained slot without a root', { ...kept, retained: [{ ...kept.retained[0], slot: 'f' }] }],
      ['one slot retained twice', { ...kept, retained: [kept.retained[0], { ...kept.retained[1], slot: 'a' }] }],
      ['a retained epoch not below the epoch', { ...kept, retained: [{ ...kept.retained[0], epoch: 9 }] }],
      ['a retained release id that needs quoting', { ...kept, retained: [{ ...kept.retained[0], release: 'a b' }] }],
      ['a retained bad date', { ...kept, retained: [{ ...kept.retained[0], replacedAt: 'soon' }] }],
      ['a retained bad until', { ...kept, retained: [{ ...kept.retained[0], until: 42 }] }],
      ['more retained than copies', { ...kept, retained: Array.from({ length: 8 }, () => kept.retained[1]) }],
      ['since above the epoch', { ...kept, since: 10 }],
      ['since zero', { ...kept, since: 0 }],
    ];
    for (const [name, value] of retainedBroken) {
      it(`rejects ${name} with EPOCH_CORRUPT`, () => {
        assert.throws(
          () => parseEpochRecord(JSON.stringify(value), 'epoch.json'),
          (err: MirrorswapError) => err.code === 'EPOCH_CORRUPT',
        );
      });
    }

    it('names an upgrade when the format is newer', () => {
      assert.throws(() => parseEpochRecord(JSON.stringify({ ...good, format: 2 }), 'e'), /newer mirrorswap/);
    });
  });

  describe('read and write', () => {
    const stores: Awaited<ReturnType<typeof tempStore>>[] = [];
    after(() => Promise.all(stores.map((s) => s.dispose())));

    it('reads null when the file does not exist', async () => {
      const store = await tempStore();
      stores.push(store);
      assert.equal(await readEpochFile(store.epochFile), null);
    });

    it('round-trips and leaves no temp file behind', async () => {
      const store = await tempStore();
      stores.push(store);
      const written = await store.publish(7, 'a');
      assert.deepEqual(await readEpochFile(store.epochFile), written);
      await writeEpochFile(store.epochFile, { ...written, epoch: 8 });
      assert.equal((await readEpochFile(store.epochFile))?.epoch, 8);
      assert.deepEqual((await readdir(store.stateDir)).sort(), ['epoch.json', 'servers']);
    });

    // the same guards in the pool and in the calling thread (web servers read a local epoch file in theirs)
    const readers = { readEpochFile, readEpochFileSync: async (f: string) => readEpochFileSync(f) };
    for (const [name, read] of Object.entries(readers)) {
      it(`${name}: reads the record, and refuses a link, a FIFO, a directory or an oversized file in its place`, async () => {
        const store = await tempStore();
        stores.push(store);
        const written = await store.publish(4, 'b');
        assert.deepEqual(await read(store.epochFile), written);
        const elsewhere = join(store.root, 'elsewhere.json');
        await rename(store.epochFile, elsewhere);
        assert.equal(await read(store.epochFile), null, 'missing');
        await symlink(elsewhere, store.epochFile);
        await assert.rejects(read(store.epochFile), /EPOCH_READ|symbolic link/);
        await unlink(store.epochFile);
        execFileSync('mkfifo', [store.epochFile]);
        // opened without waiting for a writer: an error at once, not a hang
        await assert.rejects(read(store.epochFile), /not a regular file/);
        await unlink(store.epochFile);
        await mkdir(store.epochFile);
        await assert.rejects(read(store.epochFile), /not a regular file|EISDIR/);
        await rmdir(store.epochFile);
        await writeFile(store.epochFile, ' '.repeat(1024 * 1024));
        await assert.rejects(read(store.epochFile), /more than the/);
        await writeFile(store.epochFile, '{"format":1,"epo');
        await assert.rejects(read(store.epochFile), (err: MirrorswapError) => err.code === 'EPOCH_CORRUPT');
      });
    }
  });
});
