import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { after, describe, it } from 'node:test';
import { parseEpochRecord, readEpochFile, writeEpochFile } from '../../../src/store/epoch-file.js';
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
  });
});
