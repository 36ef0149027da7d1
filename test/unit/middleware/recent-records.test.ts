import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { after, describe, it } from 'node:test';
import { mirrorStatic } from '../../../middleware/static/mirror-static.js';
import {
  type FileRecord,
  contentHash,
  directoryIndexPath,
  readDirectoryIndex,
  strongEtag,
} from '../../../src/store/content-index.js';
import { parseRecentRecords, recentRecordsPath } from '../../../src/store/recent-records.js';
import { memoryLogger } from '../../../testkit/logger.js';
import { type Running, listen, rawGet } from '../../../testkit/server.js';
import { type TempStore, tempStore } from '../../../testkit/store.js';
import { writeVariantsFor } from '../../../testkit/variants.js';
import { within } from '../../../testkit/wait.js';

const JS = Buffer.from(
  Array.from({ length: 400 }, (_, i) => `export function f${i}(a, b) { return a * ${i} + b; }\n`).join(''),
);
const tag = strongEtag(contentHash(JS));

async function serve(store: TempStore): Promise<Running> {
  const mw = mirrorStatic({ store: store.root, logger: memoryLogger() });
  await mw.ready;
  const running = await listen((req, res) =>
    mw(req, res, () => {
      res.statusCode = 404;
      res.end();
    }),
  );
  return {
    ...running,
    async close() {
      await running.close();
      await mw.close();
    },
  };
}

/** The record of `rel` the index of its directory holds in the copy `slot`. */
async function indexRecord(slot: string, dir: string, name: string): Promise<FileRecord> {
  const record = (await readDirectoryIndex(slot, dir))?.files[name];
  assert.ok(record);
  return record;
}

describe('the recent records, as a server reads them', () => {
  const stores: TempStore[] = [];
  const servers: Running[] = [];
  after(async () => {
    await Promise.all(servers.map((s) => s.close()));
    await Promise.all(stores.map((s) => s.dispose()));
  });
  /** A store whose mounted copy holds `dirs`, each with app.js, its variants and its index's record. */
  const mounted = async (dirs: string[], recent: (slot: string) => Promise<unknown>) => {
    const store = await tempStore();
    stores.push(store);
    const a = store.slots.a;
    await store.fill('a', Object.fromEntries(dirs.map((d) => [`${d}/app.js`, JS])));
    writeVariantsFor(
      a,
      dirs.map((d) => `${d}/app.js`),
    );
    const content = await recent(a);
    if (content !== undefined) await writeFile(recentRecordsPath(a), JSON.stringify(content));
    await store.publish(1, 'a');
    const s = await serve(store);
    servers.push(s);
    return s;
  };

  it('a tombstone hides the index record it names; a record replaces it; a malformed entry hides the index record as a tombstone; hostile paths are left out one by one', async () => {
    const s = await mounted(['plain', 'tomb', 'replaced', 'hostile'], async (a) => {
      const good = await indexRecord(a, 'replaced', 'app.js');
      // the index of `replaced` says other bytes (a record whose stamp a new file took): the recent one is right
      const index = JSON.parse(await readFile(directoryIndexPath(a, 'replaced'), 'utf8'));
      index.files['app.js'].sha256 = contentHash(Buffer.from('other bytes'));
      await writeFile(directoryIndexPath(a, 'replaced'), JSON.stringify(index));
      return {
        v: 1,
        files: {
          'tomb/app.js': null,
          'replaced/app.js': good,
          // none of these may take a record away or give one
          'hostile/../plain/app.js': null,
          '/plain/app.js': null,
          './plain/app.js': null,
          'plain//app.js': null,
          '.mirrorswap-tmp/app.js': null,
          'hostile/app.js': { ...good, sha256: 42 },
          'plain/app.js.': 'null',
        },
      };
    });
    const get = (path: string) => rawGet(s.port, path, { 'accept-encoding': 'br' });
    const plain = await get('/plain/app.js');
    assert.equal(plain.headers['content-encoding'], 'br');
    const tomb = await get('/tomb/app.js');
    assert.equal(tomb.status, 200);
    assert.equal(tomb.headers['content-encoding'], undefined, 'a variant no record names');
    assert.notEqual(tomb.headers.etag, tag);
    assert.deepEqual(tomb.body, JS);
    const replaced = await get('/replaced/app.js');
    assert.equal(replaced.headers['content-encoding'], 'br');
    const identity = await rawGet(s.port, '/replaced/app.js');
    assert.equal(identity.headers.etag, tag, "the recent record's hash, not the index's");
    const hostile = await rawGet(s.port, '/hostile/app.js');
    // a malformed entry of a path still names the path: the index's record it was written over may be one
    // whose stamp a new file took, so the path has none (never the index's)
    assert.notEqual(hostile.headers.etag, tag, "a malformed entry leaves no record, never the index's");
    assert.equal((await get('/hostile/app.js')).headers['content-encoding'], undefined);
    assert.equal((await rawGet(s.port, '/plain/app.js')).headers.etag, tag);
  });

  it('torn: no strong ETag and no variant from any index', async () => {
    const s = await mounted(['d'], async () => '{"v":1,"files":{"d/ap');
    const res = await rawGet(s.port, '/d/app.js', { 'accept-encoding': 'br' });
    assert.equal(res.status, 200);
    assert.equal(res.headers['content-encoding'], undefined);
    assert.notEqual(res.headers.etag, tag);
    assert.deepEqual(res.body, JS);
  });

  it('a FIFO at recent.json holds no request: no record is known', async () => {
    const s = await mounted(['d'], async (a) => {
      execFileSync('mkfifo', [recentRecordsPath(a)]);
      return undefined;
    });
    const res = await within(rawGet(s.port, '/d/app.js', { 'accept-encoding': 'br' }), 5000, 'the request');
    assert.equal(res.status, 200);
    assert.equal(res.headers['content-encoding'], undefined);
    assert.deepEqual(res.body, JS);
  });

  it('parse: another version, or no files, is no file at all; a name like __proto__ is a name', () => {
    assert.equal(parseRecentRecords('{"v":2,"files":{}}'), null);
    assert.equal(parseRecentRecords('{"v":1}'), null);
    assert.equal(parseRecentRecords('[1]'), null);
    const parsed = parseRecentRecords('{"v":1,"files":{"__proto__":null,"d/__proto__":null,"constructor":null}}');
    assert.ok(parsed);
    assert.deepEqual(Object.keys(parsed).sort(), ['__proto__', 'constructor', 'd/__proto__']);
    assert.equal(Object.getPrototypeOf(parsed), null);
  });
});
