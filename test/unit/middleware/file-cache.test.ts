import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type ArenaBody, BodyArena } from '../../../middleware/static/body-arena.js';
import {
  ENTRY_COST,
  type Entry,
  FileCache,
  type FileEntry,
  HEAP_HEADROOM,
} from '../../../middleware/static/file-cache.js';

const MB = 1024 * 1024;
const missing: Entry = { kind: 'refused', status: 404 };

function file(body: ArenaBody | null): FileEntry {
  return {
    kind: 'file',
    path: '/x',
    identity: { dev: 1, ino: 1, size: body?.length ?? 0, mtimeMs: 0 },
    stats: null,
    etag: 'W/"x"',
    lastModified: '',
    lastModifiedMs: 0,
    headers: {},
    body,
    variants: null,
    variantMask: 0,
  };
}

/** An arena with all the room asked, and a body of `n` bytes filled with `fill` in it. */
function arenaOf(room = 64 * MB): BodyArena {
  return new BodyArena({ maxBodyBytes: 256 * 1024, room: () => room });
}
function bodyIn(arena: BodyArena, n: number, fill = 'x'): ArenaBody {
  const room = arena.reserve(n);
  assert.ok(room);
  room.bytes.fill(fill);
  room.done();
  return room.body;
}

describe('FileCache', () => {
  it('looks a path up once however many requests ask at the same time', async () => {
    const arena = arenaOf();
    const cache = new FileCache({ maxBytes: 64 * MB, maxEntries: 10 }, arena);
    let lookups = 0;
    const lookup = async () => {
      lookups++;
      await new Promise((r) => setImmediate(r));
      return file(bodyIn(arena, 10));
    };
    const results = await Promise.all(Array.from({ length: 20 }, () => cache.resolve('/a', lookup)));
    assert.equal(lookups, 1);
    assert.ok(results.every((r) => r === results[0]));
    assert.equal(cache.get('/a'), results[0]);
  });

  it('a cleared cache keeps and counts no recent records a late lookup reads (its epoch is gone)', async () => {
    const cache = new FileCache({ maxBytes: MB, maxEntries: 10 }, arenaOf());
    cache.clear();
    const records = { d: { 'x.js': { ino: 1, size: 2, mtimeMs: 3, sha256: 'A'.repeat(43) } } };
    let reads = 0;
    const read = async () => {
      reads++;
      return records;
    };
    assert.equal(await cache.recentRecords(read), records);
    await cache.recentRecords(read);
    assert.equal(reads, 2, 'read again, as a cleared cache reads each index again');
    assert.equal(cache.entryBytes, 0);
  });

  it('forgets a failed lookup, so the next request tries again', async () => {
    const cache = new FileCache({ maxBytes: MB, maxEntries: 10 }, arenaOf());
    await assert.rejects(
      cache.resolve('/a', async () => {
        throw new Error('EIO');
      }),
    );
    assert.equal(cache.get('/a'), undefined);
    assert.equal((await cache.resolve('/a', async () => missing)).kind, 'refused');
  });

  it('counts what entries cost and keeps them within the budget; once full, a path is kept at its second miss', async () => {
    const budget = 100 * HEAP_HEADROOM * (ENTRY_COST.negative + 10);
    const cache = new FileCache({ maxBytes: budget, maxEntries: 10_000 }, arenaOf(0));
    const key = (i: number) => `/missing${String(i).padStart(4, '0')}`;
    for (let i = 0; i < 1000; i++) await cache.resolve(key(i), async () => missing);
    // the paths remembered since the last entry was kept are counted, in a 32nd of the budget
    assert.ok(
      cache.entryBytes <= budget * (1 + 1 / 32),
      `${cache.entryBytes} bytes of entries in a budget of ${budget}`,
    );
    assert.ok(cache.size >= 90 && cache.size <= 100, `${cache.size} entries`);
    // a sweep of distinct paths did not turn the cache over: the oldest left only to make room at first
    assert.equal(cache.get(key(0)), undefined);
    assert.ok(cache.get(key(10)));
    assert.equal(cache.get(key(999)), undefined);
    // missed again soon: kept now, the oldest making room
    let looked = 0;
    await cache.resolve(key(999), async (admitted) => {
      looked++;
      assert.equal(admitted, true);
      return missing;
    });
    assert.equal(looked, 1);
    assert.ok(cache.get(key(999)));
    assert.equal(cache.get(key(1)), undefined);
    // missed once, long ago: not kept, and told so
    await cache.resolve(key(500), async (admitted) => {
      assert.equal(admitted, false);
      return missing;
    });
    assert.equal(cache.get(key(500)), undefined);
    assert.deepEqual(cache.counts, { file: 0, redirect: 0, negative: cache.size });
  });

  it('keeps at most maxEntries paths', async () => {
    const cache = new FileCache({ maxBytes: 64 * MB, maxEntries: 5 }, arenaOf());
    for (let i = 0; i < 20; i++) await cache.resolve(`/missing${i}`, async () => missing);
    for (let i = 0; i < 20; i++) await cache.resolve(`/missing${i}`, async () => missing);
    assert.equal(cache.size, 5);
  });

  it('drops an entry whose body the arena reused, so its next request reads the file again', async () => {
    const arena = new BodyArena({ maxBodyBytes: 0, room: () => MB });
    const cache = new FileCache({ maxBytes: 64 * MB, maxEntries: 100 }, arena);
    await cache.resolve('/first', async () => file(bodyIn(arena, 600 * 1024, 'a')));
    // a second body that does not fit the one segment makes the arena reuse it
    await cache.resolve('/second', async () => file(bodyIn(arena, 600 * 1024, 'b')));
    assert.equal(cache.get('/first'), undefined);
    assert.ok(cache.get('/second'));
    assert.equal(arena.bytes, MB);
  });

  it('lists found paths newest first for the next epoch, never refused ones, and clears', async () => {
    const arena = arenaOf();
    const cache = new FileCache({ maxBytes: 64 * MB, maxEntries: 100 }, arena);
    await cache.resolve('/a', async () => file(null));
    await cache.resolve('/gone', async () => missing);
    await cache.resolve('/b', async () => ({ kind: 'redirect' }));
    assert.deepEqual(cache.foundKeys(10), ['/b', '/a']);
    assert.deepEqual(cache.foundKeys(1), ['/b']);
    cache.clear();
    assert.equal(cache.size, 0);
    assert.equal(cache.entryBytes, 0);
  });
});

describe('BodyArena', () => {
  it('holds bodies in segments allocated as needed, within the room it is given', () => {
    let room = 3 * MB;
    const arena = new BodyArena({ maxBodyBytes: 0, room: () => room });
    assert.equal(arena.bytes, 0);
    for (let i = 0; i < 1000; i++) bodyIn(arena, 2048);
    assert.equal(arena.bytes, 2 * MB, '1000 bodies of 2 KB take two segments');
    for (let i = 0; i < 10_000; i++) bodyIn(arena, 2048);
    assert.equal(arena.bytes, 3 * MB, 'the arena grew past its room');
    room = 0;
    for (let i = 0; i < 10_000; i++) bodyIn(arena, 2048);
    assert.equal(arena.bytes, 3 * MB, 'the arena neither grows nor frees: it reuses');
  });

  it('never reuses a segment whose bytes a response still holds; a body taken after reuse is refused', () => {
    const arena = new BodyArena({ maxBodyBytes: 0, room: () => MB });
    const held = bodyIn(arena, 512 * 1024, 'h');
    let release: (() => void) | undefined;
    const bytes = arena.take(held, {
      untilClose: (fn) => {
        release = fn;
      },
    });
    assert.ok(bytes);
    // the only segment is held: no room can be made, so nothing overwrites the bytes being sent
    assert.equal(arena.reserve(600 * 1024), null);
    assert.equal(bytes.toString('latin1', 0, 4), 'hhhh');
    release?.();
    const next = arena.reserve(600 * 1024);
    assert.ok(next, 'the segment was not reused once released');
    next.bytes.fill('n');
    next.done();
    assert.equal(arena.take(held, { untilClose: () => {} }), null, 'a body whose room was reused was handed out');
  });

  it('a range reserved for a read is not reused until the read is done', () => {
    const arena = new BodyArena({ maxBodyBytes: 0, room: () => MB });
    const reading = arena.reserve(700 * 1024);
    assert.ok(reading);
    assert.equal(arena.reserve(700 * 1024), null);
    reading.done();
    assert.ok(arena.reserve(700 * 1024));
  });

  it('still holds bodies under a budget smaller than a segment, with segments made to fit it', () => {
    const arena = new BodyArena({ maxBodyBytes: 256 * 1024, maxSegmentBytes: 48 * 1024, room: () => 48 * 1024 });
    assert.ok(arena.reserve(2048), 'a small budget cached no body at all');
    assert.equal(arena.bytes, 48 * 1024);
    assert.equal(arena.reserve(100 * 1024), null, 'a body larger than the segment is streamed, not cached');
    const none = new BodyArena({ maxBodyBytes: 256 * 1024, maxSegmentBytes: 0, room: () => 0 });
    for (let i = 0; i < 100; i++) assert.equal(none.reserve(0), null);
    assert.equal(none.bytes, 0);
  });

  it('refuses a body larger than a segment', () => {
    const arena = new BodyArena({ maxBodyBytes: 0, room: () => 64 * MB });
    assert.equal(arena.reserve(2 * MB), null);
    const big = new BodyArena({ maxBodyBytes: 2 * MB, room: () => 64 * MB });
    assert.ok(big.reserve(2 * MB));
  });
});
