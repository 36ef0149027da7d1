import assert from 'node:assert/strict';
import { mkdir, open, readFile, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { brotliCompressSync, brotliDecompressSync, gunzipSync, gzipSync } from 'node:zlib';
import type { SwapRecord } from '../../src/agent/agent-types.js';
import {
  type FileRecord,
  VARIANT_SUFFIX,
  type VariantEncoding,
  type VariantRecord,
  contentHash,
  readDirectoryIndexSync,
  strongEtag,
} from '../../src/store/content-index.js';
import { type EpochRecord, readEpochFile } from '../../src/store/epoch-file.js';
import { loadRecentRecordsSync, recentRecordsPath, writeRecentRecordsSync } from '../../src/store/recent-records.js';
import { compressionOptions } from '../../src/tree/compressible.js';
import { TEMP_DIR_NAME } from '../../src/store/store-layout.js';
import { msInside } from '../../src/tree/copy-times.js';
import { TREE_DEFAULTS } from '../../src/tree/tree-defaults.js';
import { type TestAgent, startTestAgent } from '../../testkit/agent.js';
import { type TestApp, startApp } from '../../testkit/app.js';
import { rawGet } from '../../testkit/server.js';
import { type TempStore, tempStore } from '../../testkit/store.js';
import { compressibleText } from '../../testkit/variants.js';
import { waitFor } from '../../testkit/wait.js';

const settings = TREE_DEFAULTS.variantSettings;
const ENCODINGS: VariantEncoding[] = ['br', 'gzip'];
const compress = (encoding: VariantEncoding, bytes: Buffer) =>
  encoding === 'br'
    ? brotliCompressSync(bytes, compressionOptions('br', bytes.length, settings))
    : gzipSync(bytes, compressionOptions('gzip', bytes.length, settings));

/** Overwrite the file at `path` with `bytes` (of its size) in place, keeping its inode and its times. */
async function sameInodeOtherBytes(path: string, bytes: Buffer): Promise<void> {
  const before = await stat(path);
  assert.equal(bytes.length, before.size);
  const handle = await open(path, 'r+');
  try {
    await handle.write(bytes, 0, bytes.length, 0);
  } finally {
    await handle.close();
  }
  await utimes(path, msInside(before.atimeMs), msInside(before.mtimeMs));
  assert.equal((await stat(path)).mtimeMs, before.mtimeMs);
}

/**
 * Bytes of `original`'s length, other than it, whose variants (as the agent
 * makes them) are of `sizes`: one character changed, at the first place that
 * gives them.
 */
function otherBytesOfSizes(original: Buffer, sizes: Record<VariantEncoding, number>): Buffer {
  for (let at = 100; at < original.length; at++) {
    const bytes = Buffer.from(original);
    bytes[at] = bytes[at] === 0x37 ? 0x38 : 0x37;
    if (bytes.equals(original)) continue;
    if (ENCODINGS.every((e) => compress(e, bytes).length === sizes[e])) return bytes;
  }
  throw new Error('no bytes of those variant sizes found');
}

/**
 * Skew protection keeps several copies; a sync into a copy that lacks a
 * directory (every directory, for the first sync into slot c of a store
 * keeping three) copies it whole and derives it as it copies, reusing the
 * mounted copy's variants of the same content. The mounted copy's records
 * are its indexes read through its recent records (docs/CONTRACT.md,
 * "Recent records"): an index record a recent one replaced may name an
 * inode number a newer file took, of the same size and time (ext4 hands
 * freed numbers out again; builds stamp fixed times), and torn recent
 * records void every index. Here the mounted copy is left as that leaves
 * it: its index says `d/x.js` and its variants are release 1's bytes at
 * their inode numbers, which hold other bytes now.
 */
describe('a copy made whole reuses the mounted copy variants only as its recent records say', () => {
  let store: TempStore;
  let agent: TestAgent;
  let web: TestApp;
  const v1 = Buffer.from(compressibleText('release one', 16384));

  async function sync(release: string): Promise<SwapRecord> {
    const res = await agent.call('POST', `/v1/sync?wait=1&release=${release}`);
    const record = (await res.json()) as SwapRecord;
    assert.equal(record.result, 'ok', JSON.stringify(record.error));
    await waitFor('the web server to switch', () => web.mw.state().epoch >= record.epoch);
    return record;
  }

  beforeEach(async () => {
    store = await tempStore();
    await store.fill('master', { 'd/x.js': v1, 'index.html': 'r1' });
    // a build of fixed times: every release of the file has this mtime
    await utimes(join(store.master, 'd/x.js'), new Date('2026-01-01Z'), new Date('2026-01-01Z'));
    agent = await startTestAgent(store, { keep: 3, skewMaxAgeMs: 3600_000 });
    web = await startApp({ store: store.root, serverId: 'web-reuse', heartbeatInterval: 100 });
  });
  afterEach(async () => {
    await web.close();
    await agent.close();
    await store.dispose();
  });

  /**
   * Sync release 1, then leave the copy it mounts as later releases that
   * reused inode numbers would: `d/x.js` and its variants, at the inode
   * numbers, sizes and times its index records for release 1's bytes, hold
   * other bytes. `recent` writes the copy's recent records (through its temp
   * directory, as the agent does), given those of the new bytes.
   */
  async function mountedWithStaleIndex(recent: (m: string, record: FileRecord) => Promise<void>): Promise<string> {
    await sync('r1');
    const mounted = ((await readEpochFile(store.epochFile)) as EpochRecord).mounted;
    const m = store.slots[mounted];
    const x = join(m, 'd/x.js');
    const indexed = readDirectoryIndexSync(m, 'd')?.files['x.js'] as FileRecord;
    assert.equal(indexed.sha256, contentHash(v1), "the mounted copy's index records release 1's d/x.js");
    const sizes = { br: 0, gzip: 0 } as Record<VariantEncoding, number>;
    for (const e of ENCODINGS) sizes[e] = (await stat(x + VARIANT_SUFFIX[e])).size;
    const v3 = otherBytesOfSizes(v1, sizes);
    await sameInodeOtherBytes(x, v3);
    const variants: Partial<Record<VariantEncoding, VariantRecord>> = {};
    for (const e of ENCODINGS) {
      const encoded = compress(e, v3);
      await sameInodeOtherBytes(x + VARIANT_SUFFIX[e], encoded);
      const vst = await stat(x + VARIANT_SUFFIX[e]);
      variants[e] = { ino: vst.ino, size: vst.size, sha256: contentHash(encoded), made: true };
    }
    const st = await stat(x);
    await mkdir(join(m, TEMP_DIR_NAME), { recursive: true });
    await recent(m, { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs, sha256: contentHash(v3), variants });
    return mounted;
  }

  /** Master holds release 1's bytes of `d/x.js`; the next sync goes into slot c, new: compared and copied whole. */
  async function syncIntoNewCopy(mounted: string): Promise<void> {
    await writeFile(join(store.master, 'index.html'), 'r3');
    const record = await sync('r3');
    assert.equal(record.to, 'c');
    assert.notEqual(record.to, mounted);
    assert.equal(record.mode, 'full');
    assert.ok((await readFile(join(store.slots.c, 'd/x.js'))).equals(v1));
    for (const e of ENCODINGS) {
      const res = await rawGet(web.port, '/d/x.js', { 'accept-encoding': e });
      assert.equal(res.status, 200);
      const coding = res.headers['content-encoding'];
      const body =
        coding === 'br' ? brotliDecompressSync(res.body) : coding === 'gzip' ? gunzipSync(res.body) : res.body;
      assert.ok(
        body.equals(v1),
        `${e}: the answer decodes to the d/x.js slot c holds (sent as ${coding ?? 'identity'})`,
      );
      assert.equal(res.headers.etag, strongEtag(contentHash(res.body)), `${e}: under the tag of the bytes sent`);
    }
  }

  it("a recent record replaces the mounted copy's index record there: its variants are not taken by the stale one", async () => {
    const mounted = await mountedWithStaleIndex(async (m, record) => {
      const recent = loadRecentRecordsSync(m);
      assert.notEqual(recent, 'torn');
      writeRecentRecordsSync(m, { ...(recent as Record<string, FileRecord | null>), 'd/x.js': record });
    });
    await syncIntoNewCopy(mounted);
  });

  it('torn recent records leave no record of the mounted copy: nothing is taken from it', async () => {
    const mounted = await mountedWithStaleIndex(async (m) => {
      await writeFile(recentRecordsPath(m), '{"v":1,"files":{"d/x.js":');
    });
    await syncIntoNewCopy(mounted);
  });
});
