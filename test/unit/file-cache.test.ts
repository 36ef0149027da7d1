import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { describe, it } from 'node:test';
import { type Entry, FileCache, type FileEntry } from '../../middleware/file-cache.js';

const stats = statSync('.');

function file(bytes: number | null): FileEntry {
  return {
    kind: 'file',
    path: '/x',
    stats,
    etag: 'W/"x"',
    lastModified: '',
    lastModifiedMs: 0,
    headers: {},
    body: bytes === null ? null : Buffer.alloc(bytes),
  };
}
const missing: Entry = { kind: 'refused', status: 404 };

describe('FileCache', () => {
  it('looks a path up once however many requests ask at the same time', async () => {
    const cache = new FileCache({ maxBytes: 1024, maxEntries: 10 });
    let lookups = 0;
    const lookup = async () => {
      lookups++;
      await new Promise((r) => setImmediate(r));
      return file(10);
    };
    const results = await Promise.all(Array.from({ length: 20 }, () => cache.resolve('/a', lookup)));
    assert.equal(lookups, 1);
    assert.ok(results.every((r) => r === results[0]));
    assert.equal(cache.get('/a'), results[0]);
  });

  it('forgets a failed lookup, so the next request tries again', async () => {
    const cache = new FileCache({ maxBytes: 1024, maxEntries: 10 });
    await assert.rejects(
      cache.resolve('/a', async () => {
        throw new Error('EIO');
      }),
    );
    assert.equal(cache.get('/a'), undefined);
    assert.equal((await cache.resolve('/a', async () => missing)).kind, 'refused');
  });

  it('keeps body bytes within maxBytes, evicting the oldest first', async () => {
    const cache = new FileCache({ maxBytes: 100, maxEntries: 100 });
    for (let i = 0; i < 10; i++) await cache.resolve(`/f${i}`, async () => file(30));
    assert.ok(cache.bytes <= 100, `${cache.bytes} bytes held`);
    assert.equal(cache.size, 3);
    assert.ok(cache.get('/f9') && cache.get('/f8') && cache.get('/f7'));
    assert.equal(cache.get('/f0'), undefined);
  });

  it('keeps at most maxEntries paths, negative entries included', async () => {
    const cache = new FileCache({ maxBytes: 1000, maxEntries: 5 });
    for (let i = 0; i < 20; i++) await cache.resolve(`/missing${i}`, async () => missing);
    assert.equal(cache.size, 5);
  });

  it('never keeps a body larger than the whole budget, and never lets it evict the rest', async () => {
    const cache = new FileCache({ maxBytes: 100, maxEntries: 100 });
    await cache.resolve('/small', async () => file(50));
    const big = await cache.resolve('/big', async () => file(500));
    assert.equal(big.kind, 'file', 'the entry is still answered');
    assert.equal(cache.get('/big'), undefined);
    assert.ok(cache.get('/small'));
    assert.equal(cache.bytes, 50);
  });

  it('lists found paths newest first for the next epoch, never refused ones', async () => {
    const cache = new FileCache({ maxBytes: 1000, maxEntries: 100 });
    await cache.resolve('/a', async () => file(null));
    await cache.resolve('/gone', async () => missing);
    await cache.resolve('/b', async () => ({ kind: 'redirect' }));
    assert.deepEqual(cache.foundKeys(10), ['/b', '/a']);
    assert.deepEqual(cache.foundKeys(1), ['/b']);
    cache.clear();
    assert.equal(cache.size, 0);
    assert.equal(cache.bytes, 0);
  });
});
