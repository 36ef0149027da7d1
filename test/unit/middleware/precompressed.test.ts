import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFile, rename, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { brotliCompressSync, brotliDecompressSync, gunzipSync, gzipSync } from 'node:zlib';
import express from 'express';
import type { StaticOptions } from '../../../middleware/options.js';
import { mirrorStatic } from '../../../middleware/static/mirror-static.js';
import { contentHash, directoryIndexPath, strongEtag } from '../../../src/store/content-index.js';
import { memoryLogger } from '../../../testkit/logger.js';
import { type RawResponse, type Running, listen, rawGet } from '../../../testkit/server.js';
import { type TempStore, tempStore } from '../../../testkit/store.js';
import { writeVariantsFor } from '../../../testkit/variants.js';

/** 20 KB of script, compressible as real code is. */
const JS = Buffer.from(
  Array.from({ length: 400 }, (_, i) => `export function f${i}(a, b) { return a * ${i} + b; }\n`)
    .join('')
    .slice(0, 20_000),
);
const CSS = Buffer.from(Array.from({ length: 300 }, (_, i) => `.c${i} { margin: ${i}px; }\n`).join(''));
const BIG = Buffer.from('big file line of text\n'.repeat(20_000)); // 440 KB: streamed, its variants too
/** Text whose br and gzip variants (Node's default levels) have the same size: 33 bytes each. */
const SAME_SIZE = Buffer.from('85f40e4b3abcabcabcabcabcabcabcabcabcabc');

interface Server extends Running {
  mw: ReturnType<typeof mirrorStatic>;
}

/** A bare node:http server (as `mirrorswap serve` runs it), with an optional step before mirrorStatic. */
async function serve(
  store: TempStore,
  opts: Partial<StaticOptions> = {},
  before?: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<Server> {
  const mw = mirrorStatic({ store: store.root, logger: memoryLogger(), ...opts });
  await mw.ready;
  const running = await listen((req, res) => {
    before?.(req, res);
    mw(req, res, (err?: unknown) => {
      res.statusCode = err ? 500 : 404;
      res.end(err ? 'error' : 'fallthrough');
    });
  });
  return {
    ...running,
    mw,
    async close() {
      await running.close();
      await mw.close();
    },
  };
}

/** The body as the client decodes it by its Content-Encoding: it must be the original, exactly. */
function decoded(res: RawResponse): Buffer {
  const coding = res.headers['content-encoding'];
  if (coding === 'br') return brotliDecompressSync(res.body);
  if (coding === 'gzip') return gunzipSync(res.body);
  assert.equal(coding, undefined, `unknown coding ${String(coding)}`);
  return res.body;
}

describe('mirrorStatic: precompressed variants and content ETags', () => {
  let store: TempStore;
  const servers: Server[] = [];
  const start = async (opts: Partial<StaticOptions> = {}, pre?: Parameters<typeof serve>[2]) => {
    const s = await serve(store, opts, pre);
    servers.push(s);
    return s;
  };
  const files = {
    'app.js': JS,
    'css/site.css': CSS,
    'big.js': BIG,
    'plain.txt': 'no index for me\n',
    'noindex/app.js': JS,
    'gone/app.js': JS,
    'stale/app.js': JS,
    'stalevariant/app.js': JS,
    'torn/app.js': JS,
    'otherdir/app.js': JS,
    'link/app.js': JS,
    'fifo/app.js': JS,
    'hashonly/app.js': JS,
    'samesize/tiny.txt': SAME_SIZE,
    'resumed/app.js': JS,
  };

  before(async () => {
    store = await tempStore();
    for (const slot of ['a', 'b'] as const) {
      await store.fill(slot, files);
      writeVariantsFor(store.slots[slot], [
        'app.js',
        'css/site.css',
        'big.js',
        'gone/app.js',
        'stale/app.js',
        'stalevariant/app.js',
        'torn/app.js',
        'otherdir/app.js',
        'link/app.js',
        'fifo/app.js',
        'samesize/tiny.txt',
      ]);
      writeVariantsFor(store.slots[slot], ['hashonly/app.js'], []);
      // a file that changed between the two copies' syncs: each copy has its own variants
      await store.fill(slot, { 'changes.js': Buffer.concat([JS, Buffer.from(`// release ${slot}\n`)]) });
      writeVariantsFor(store.slots[slot], ['changes.js']);
    }
    // resumed: one file, one mtime, in both copies; master's own app.js.gz of the first made again
    // (another level) for the second: other bytes that decode to the same file
    const when = new Date('2026-01-02T03:04:05Z');
    for (const slot of ['a', 'b'] as const) {
      await utimes(join(store.slots[slot], 'resumed/app.js'), when, when);
      writeVariantsFor(store.slots[slot], ['resumed/app.js'], ['gzip']);
    }
    const regzipped = gzipSync(JS, { level: 1 });
    await rm(join(store.slots.b, 'resumed/app.js.gz'));
    await writeFile(join(store.slots.b, 'resumed/app.js.gz'), regzipped);
    const vst = await stat(join(store.slots.b, 'resumed/app.js.gz'));
    const bIndex = directoryIndexPath(store.slots.b, 'resumed');
    const parsed = JSON.parse(await readFile(bIndex, 'utf8')) as {
      files: Record<string, Record<string, unknown>>;
    };
    (parsed.files['app.js'] as { variants: Record<string, unknown> }).variants.gzip = {
      ino: vst.ino,
      size: vst.size,
      sha256: contentHash(regzipped),
      made: false,
    };
    // master's own file, so a file of the copy with its own record, as the agent writes it
    parsed.files['app.js.gz'] = { ino: vst.ino, size: vst.size, mtimeMs: vst.mtimeMs, sha256: contentHash(regzipped) };
    await writeFile(bIndex, JSON.stringify(parsed));
    const a = store.slots.a;
    // gone: both variants deleted after the index was written
    await rm(join(a, 'gone/app.js.br'));
    await rm(join(a, 'gone/app.js.gz'));
    // stale: the file replaced (a new inode) after its index was written
    await writeFile(join(a, 'stale/app.js.new'), JS);
    await rename(join(a, 'stale/app.js.new'), join(a, 'stale/app.js'));
    // stalevariant: the br variant replaced by other bytes of another size
    await writeFile(join(a, 'stalevariant/app.js.br'), 'not brotli at all');
    // torn: the index cut short
    const tornIndex = directoryIndexPath(a, 'torn');
    const text = await readFile(tornIndex, 'utf8');
    await writeFile(tornIndex, text.slice(0, text.length / 2));
    // otherdir: an index that says it is another directory's (its records otherwise right)
    const own = JSON.parse(await readFile(directoryIndexPath(a, 'otherdir'), 'utf8')) as { dir: string };
    await writeFile(directoryIndexPath(a, 'otherdir'), JSON.stringify({ ...own, dir: 'link' }));
    // link: the br variant is a symlink to a variant with the same inode and size
    await rename(join(a, 'link/app.js.br'), join(a, 'link/real.br'));
    await symlink('real.br', join(a, 'link/app.js.br'));
    // fifo: the gz variant is a FIFO, the br one a directory
    await rm(join(a, 'fifo/app.js.gz'));
    execFileSync('mkfifo', [join(a, 'fifo/app.js.gz')]);
    await rm(join(a, 'fifo/app.js.br'));
    execFileSync('mkdir', [join(a, 'fifo/app.js.br')]);
    await store.publish(1, 'a');
  });
  after(async () => {
    await Promise.all(servers.map((s) => s.close()));
    await store.dispose();
  });

  const jsTag = strongEtag(contentHash(JS));

  it('serves br, gzip or identity by Accept-Encoding, each decoding to the original, with its own strong ETag', async () => {
    const s = await start();
    const br = await rawGet(s.port, '/app.js', { 'accept-encoding': 'gzip, deflate, br, zstd' });
    const gz = await rawGet(s.port, '/app.js', { 'accept-encoding': 'gzip, deflate' });
    const id = await rawGet(s.port, '/app.js');
    for (const [res, coding] of [
      [br, 'br'],
      [gz, 'gzip'],
      [id, undefined],
    ] as const) {
      assert.equal(res.status, 200);
      assert.equal(res.headers['content-encoding'], coding);
      assert.equal(res.headers['content-type'], 'text/javascript; charset=utf-8');
      assert.equal(res.headers['content-length'], String(res.body.length));
      assert.equal(res.headers.vary, 'Accept-Encoding');
      assert.match(String(res.headers.etag), /^"[A-Za-z0-9_-]{22}"$/);
      assert.deepEqual(decoded(res), JS);
    }
    assert.ok(br.body.length < JS.length / 3, `br ${br.body.length} bytes`);
    assert.equal(id.headers.etag, jsTag);
    assert.equal(br.headers.etag, strongEtag(contentHash(br.body)));
    assert.equal(gz.headers.etag, strongEtag(contentHash(gz.body)));
    assert.equal(new Set([br.headers.etag, gz.headers.etag, id.headers.etag]).size, 3);
    // and again, from the cache
    const again = await rawGet(s.port, '/app.js', { 'accept-encoding': 'br' });
    assert.deepEqual(again.body, br.body);
    assert.deepEqual(again.headers, { ...br.headers, date: again.headers.date });
  });

  it('HEAD of a variant: its headers, no body', async () => {
    const s = await start();
    const get = await rawGet(s.port, '/css/site.css', { 'accept-encoding': 'br' });
    const head = await rawGet(s.port, '/css/site.css', { 'accept-encoding': 'br' }, 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.body.length, 0);
    assert.equal(head.headers['content-encoding'], 'br');
    assert.equal(head.headers['content-length'], String(get.body.length));
    assert.equal(head.headers.etag, get.headers.etag);
    assert.deepEqual(decoded(get), CSS);
  });

  it("304 with the variant's ETag; another coding accepted gets its body", async () => {
    const s = await start();
    const br = await rawGet(s.port, '/app.js', { 'accept-encoding': 'br' });
    const tag = String(br.headers.etag);
    const hit = await rawGet(s.port, '/app.js', { 'accept-encoding': 'br', 'if-none-match': tag });
    assert.equal(hit.status, 304);
    assert.equal(hit.headers.etag, tag);
    assert.equal(hit.headers.vary, 'Accept-Encoding');
    assert.equal(hit.headers['content-encoding'], undefined);
    assert.equal(hit.body.length, 0);
    const weak = await rawGet(s.port, '/app.js', { 'accept-encoding': 'br', 'if-none-match': `W/${tag}` });
    assert.equal(weak.status, 304, 'If-None-Match compares weakly');
    const other = await rawGet(s.port, '/app.js', { 'accept-encoding': 'gzip', 'if-none-match': tag });
    assert.equal(other.status, 200);
    assert.equal(other.headers['content-encoding'], 'gzip');
    assert.deepEqual(decoded(other), JS);
  });

  it('412 and If-Match: strong comparison for strong tags', async () => {
    const s = await start();
    const br = await rawGet(s.port, '/app.js', { 'accept-encoding': 'br' });
    const tag = String(br.headers.etag);
    const ok = await rawGet(s.port, '/app.js', { 'accept-encoding': 'br', 'if-match': `"x", ${tag}` });
    assert.equal(ok.status, 200);
    assert.deepEqual(decoded(ok), JS);
    for (const ifMatch of [`W/${tag}`, '"nope"', jsTag]) {
      const failed = await rawGet(s.port, '/app.js', { 'accept-encoding': 'br', 'if-match': ifMatch });
      assert.equal(failed.status, 412, ifMatch);
      assert.equal(failed.headers['content-encoding'], undefined);
      assert.equal(failed.body.toString(), 'Precondition Failed\n');
    }
    const identity = await rawGet(s.port, '/app.js', { 'if-match': jsTag });
    assert.equal(identity.status, 200);
  });

  it('Range applies to the encoded bytes; If-Range needs the strong tag of that variant', async () => {
    const s = await start();
    const br = await rawGet(s.port, '/app.js', { 'accept-encoding': 'br' });
    const tag = String(br.headers.etag);
    const part = await rawGet(s.port, '/app.js', { 'accept-encoding': 'br', range: 'bytes=10-99' });
    assert.equal(part.status, 206);
    assert.equal(part.headers['content-encoding'], 'br');
    assert.equal(part.headers['content-range'], `bytes 10-99/${br.body.length}`);
    assert.deepEqual(part.body, br.body.subarray(10, 100));
    const ranged = await rawGet(s.port, '/app.js', { 'accept-encoding': 'br', range: 'bytes=0-9', 'if-range': tag });
    assert.equal(ranged.status, 206);
    for (const ifRange of [jsTag, `W/${tag}`]) {
      const whole = await rawGet(s.port, '/app.js', {
        'accept-encoding': 'br',
        range: 'bytes=0-9',
        'if-range': ifRange,
      });
      assert.equal(whole.status, 200, ifRange);
      assert.deepEqual(decoded(whole), JS);
    }
    const unsatisfiable = await rawGet(s.port, '/app.js', { 'accept-encoding': 'br', range: 'bytes=999999-' });
    assert.equal(unsatisfiable.status, 416);
    assert.equal(unsatisfiable.headers['content-range'], `bytes */${br.body.length}`);
    assert.equal(unsatisfiable.headers['content-encoding'], undefined);
  });

  it('a large file and its variants are streamed from disk the same way', async () => {
    const s = await start({ cacheMaxFileSize: 100 });
    for (const ae of ['br', 'gzip', 'identity']) {
      const res = await rawGet(s.port, '/big.js', { 'accept-encoding': ae });
      assert.equal(res.status, 200);
      assert.equal(res.headers['content-encoding'], ae === 'identity' ? undefined : ae);
      assert.deepEqual(decoded(res), BIG);
      const part = await rawGet(s.port, '/big.js', { 'accept-encoding': ae, range: 'bytes=5-14' });
      assert.equal(part.status, 206);
      assert.deepEqual(part.body, res.body.subarray(5, 15));
    }
  });

  it("etag: 'weak': each variant has a tag of its own, even when br and gzip have one size (and one mtime)", async (t) => {
    const [brSize, gzSize] = [brotliCompressSync(SAME_SIZE).length, gzipSync(SAME_SIZE).length];
    if (brSize !== gzSize) return t.skip(`this zlib makes ${brSize} and ${gzSize} bytes: no collision to test`);
    const s = await start({ etag: 'weak' });
    const get = (ae: string, extra: Record<string, string> = {}) =>
      rawGet(s.port, '/samesize/tiny.txt', { 'accept-encoding': ae, ...extra });
    const [br, gz, id] = [await get('br'), await get('gzip'), await get('identity')];
    assert.equal(br.headers['content-encoding'], 'br');
    assert.equal(gz.headers['content-encoding'], 'gzip');
    for (const res of [br, gz, id]) assert.match(String(res.headers.etag), /^W\/"/);
    // one tag for two representations: a cache holding both (Vary) that revalidates one could be
    // told by the 304 to serve the other, brotli bytes to a client that accepts only gzip
    assert.equal(new Set([br.headers.etag, gz.headers.etag, id.headers.etag]).size, 3, 'one tag per representation');
    const other = await get('gzip', { 'if-none-match': String(br.headers.etag) });
    assert.equal(other.status, 200, "br's tag does not validate the gzip variant");
    assert.equal(other.headers['content-encoding'], 'gzip');
    assert.deepEqual(decoded(other), SAME_SIZE);
    assert.equal((await get('gzip', { 'if-none-match': String(gz.headers.etag) })).status, 304);
  });

  it('Vary merges with one an earlier handler set; the fast path does not overwrite it', async () => {
    const s = await start({}, (_req, res) => res.setHeader('Vary', 'Origin'));
    const br = await rawGet(s.port, '/app.js', { 'accept-encoding': 'br' });
    assert.equal(br.headers.vary, 'Origin, Accept-Encoding');
    assert.deepEqual(decoded(br), JS);
    const s2 = await start({}, (_req, res) => res.setHeader('Vary', 'accept-encoding'));
    assert.equal((await rawGet(s2.port, '/app.js', { 'accept-encoding': 'br' })).headers.vary, 'accept-encoding');
    const s3 = await start({}, (_req, res) => res.setHeader('Vary', '*'));
    assert.equal((await rawGet(s3.port, '/app.js')).headers.vary, '*');
  });

  it('Express: the same answers behind express(), with setHeaders', async () => {
    const mw = mirrorStatic({
      store: store.root,
      logger: memoryLogger(),
      setHeaders: (res) => res.setHeader('X-Set', 'yes'),
    });
    await mw.ready;
    const app = express();
    app.use(mw);
    const running = await listen(app);
    try {
      const br = await rawGet(running.port, '/app.js', { 'accept-encoding': 'br' });
      assert.equal(br.headers['content-encoding'], 'br');
      assert.equal(br.headers['x-set'], 'yes');
      assert.deepEqual(decoded(br), JS);
    } finally {
      await running.close();
      await mw.close();
    }
  });

  it('what the index does not vouch for is sent as it is, never wrong bytes', async () => {
    const s = await start();
    const ae = { 'accept-encoding': 'br, gzip' };
    const weak = /^W\/"/;
    // no index at all: as serve-static, no Vary
    const noindex = await rawGet(s.port, '/noindex/app.js', ae);
    assert.equal(noindex.headers['content-encoding'], undefined);
    assert.equal(noindex.headers.vary, undefined);
    assert.match(String(noindex.headers.etag), weak);
    // variants gone: identity, but the hash still stands
    const gone = await rawGet(s.port, '/gone/app.js', ae);
    assert.equal(gone.headers['content-encoding'], undefined);
    assert.equal(gone.headers.vary, undefined);
    assert.equal(gone.headers.etag, jsTag);
    // the file replaced since the index was written: nothing known
    const stale = await rawGet(s.port, '/stale/app.js', ae);
    assert.equal(stale.headers['content-encoding'], undefined);
    assert.match(String(stale.headers.etag), weak);
    // the br variant replaced: gzip only
    const stalevariant = await rawGet(s.port, '/stalevariant/app.js', ae);
    assert.equal(stalevariant.headers['content-encoding'], 'gzip');
    assert.equal(stalevariant.headers.vary, 'Accept-Encoding');
    // torn index, another directory's index: nothing known
    for (const dir of ['torn', 'otherdir']) {
      const res = await rawGet(s.port, `/${dir}/app.js`, ae);
      assert.equal(res.headers['content-encoding'], undefined, dir);
      assert.match(String(res.headers.etag), weak, dir);
    }
    // a symlinked br variant is not followed: gzip
    const link = await rawGet(s.port, '/link/app.js', ae);
    assert.equal(link.headers['content-encoding'], 'gzip');
    // a FIFO and a directory for variants: ignored, without hanging
    const fifo = await rawGet(s.port, '/fifo/app.js', ae);
    assert.equal(fifo.status, 200);
    assert.equal(fifo.headers['content-encoding'], undefined);
    assert.equal(fifo.headers.etag, jsTag);
    // hashes without variants: a strong tag, no Vary
    const hashonly = await rawGet(s.port, '/hashonly/app.js', ae);
    assert.equal(hashonly.headers.etag, jsTag);
    assert.equal(hashonly.headers.vary, undefined);
    for (const res of [noindex, gone, stale, stalevariant, link, fifo, hashonly]) assert.deepEqual(decoded(res), JS);
  });

  it('the content index is never served, whatever dotfiles says', async () => {
    const s = await start({ dotfiles: 'allow' });
    const index = directoryIndexPath('/', '').slice(1);
    for (const path of [
      '/.mirrorswap-meta/',
      '/.mirrorswap-meta/index',
      `/${index}`,
      `/%2E${index.slice(1)}`,
      `/x/../${index}`,
    ]) {
      const res = await rawGet(s.port, path);
      assert.equal(res.status, 404, path);
      assert.equal(res.body.toString(), 'fallthrough', path);
    }
    assert.equal((await rawGet(s.port, '/app.js')).status, 200);
  });

  it('the same bytes have the same strong ETag in both copies; a changed file, its own variants', async () => {
    const s = await start();
    const changedA = await rawGet(s.port, '/changes.js', { 'accept-encoding': 'br' });
    assert.deepEqual(decoded(changedA), Buffer.concat([JS, Buffer.from('// release a\n')]));
    const tagsA = await Promise.all(
      ['br', 'gzip', 'identity'].map(
        async (ae) => (await rawGet(s.port, '/css/site.css', { 'accept-encoding': ae })).headers.etag,
      ),
    );
    await store.publish(2, 'b');
    await s.mw.refresh();
    const deadline = Date.now() + 5000;
    while (s.mw.state().slot !== 'b' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal(s.mw.state().slot, 'b');
    const tagsB = await Promise.all(
      ['br', 'gzip', 'identity'].map(
        async (ae) => (await rawGet(s.port, '/css/site.css', { 'accept-encoding': ae })).headers.etag,
      ),
    );
    assert.deepEqual(tagsB, tagsA);
    // a file that changed: the variant follows its copy, and its tag changes with its bytes
    const changedB = await rawGet(s.port, '/changes.js', { 'accept-encoding': 'br' });
    assert.deepEqual(decoded(changedB), Buffer.concat([JS, Buffer.from('// release b\n')]));
    assert.notEqual(changedB.headers.etag, changedA.headers.etag);
    await store.publish(3, 'a');
    while (s.mw.state().slot !== 'a' && Date.now() < deadline + 5000) await new Promise((r) => setTimeout(r, 20));
  });

  it("precompressed: false and etag: 'weak' / false", async () => {
    const off = await start({ precompressed: false });
    const res = await rawGet(off.port, '/app.js', { 'accept-encoding': 'br' });
    assert.equal(res.headers['content-encoding'], undefined);
    assert.equal(res.headers.vary, undefined);
    assert.equal(res.headers.etag, jsTag);
    const weak = await start({ etag: 'weak' });
    const w = await rawGet(weak.port, '/app.js', { 'accept-encoding': 'br' });
    assert.equal(w.headers['content-encoding'], 'br');
    assert.match(String(w.headers.etag), /^W\/"/);
    const wi = await rawGet(weak.port, '/app.js');
    assert.match(String(wi.headers.etag), /^W\/"/);
    assert.notEqual(w.headers.etag, wi.headers.etag);
    const none = await start({ etag: false });
    const n = await rawGet(none.port, '/app.js', { 'accept-encoding': 'br' });
    assert.equal(n.headers.etag, undefined);
    assert.equal(n.headers['content-encoding'], 'br');
    assert.throws(() => mirrorStatic({ store: store.root, etag: 'strong' as never }), /etag option/);
    assert.throws(() => mirrorStatic({ store: store.root, precompressed: 'yes' as never }), /precompressed option/);
  });

  it("If-Range by date never joins two variants' bytes: a date is no strong validator of a variant", async () => {
    const s = await start();
    const mount = async (epoch: number, slot: 'a' | 'b') => {
      await store.publish(epoch, slot);
      await s.mw.refresh();
      const deadline = Date.now() + 5000;
      while (s.mw.state().slot !== slot && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.equal(s.mw.state().slot, slot);
    };
    const ae = { 'accept-encoding': 'gzip' };
    const first = await rawGet(s.port, '/resumed/app.js', { ...ae, range: 'bytes=0-99' });
    assert.equal(first.status, 206);
    const lastModified = String(first.headers['last-modified']);
    // the other copy: the same file with the same date, but a gzip variant of other bytes
    await mount(20, 'b');
    try {
      const whole = await rawGet(s.port, '/resumed/app.js');
      assert.equal(whole.headers['last-modified'], lastModified, 'the same file, the same date');
      const rest = await rawGet(s.port, '/resumed/app.js', { ...ae, range: 'bytes=100-', 'if-range': lastModified });
      assert.equal(rest.headers['content-encoding'], 'gzip');
      // a 206 here would be spliced onto bytes of another gzip stream: garbage once joined
      assert.equal(rest.status, 200, 'the date of the file is not the identity of its variant: the whole variant');
      assert.deepEqual(decoded(rest), JS);
      // If-Range by the variant's own strong tag still resumes
      const tag = String(rest.headers.etag);
      const resumed = await rawGet(s.port, '/resumed/app.js', { ...ae, range: 'bytes=100-', 'if-range': tag });
      assert.equal(resumed.status, 206);
      assert.deepEqual(resumed.body, rest.body.subarray(100));
      // the file as it is: a date still resumes it, as serve-static does
      const plain = await rawGet(s.port, '/resumed/app.js', { range: 'bytes=100-', 'if-range': lastModified });
      assert.equal(plain.status, 206);
    } finally {
      await mount(21, 'a');
    }
  });

  it("If-Range with a weak tag never resumes a variant: only a strong tag says its bytes are the same (etag: 'weak')", async () => {
    const s = await start({ etag: 'weak' });
    const ae = { 'accept-encoding': 'gzip' };
    const whole = await rawGet(s.port, '/app.js', ae);
    assert.equal(whole.headers['content-encoding'], 'gzip');
    const tag = String(whole.headers.etag);
    assert.match(tag, /^W\//);
    const rest = await rawGet(s.port, '/app.js', { ...ae, range: 'bytes=10-', 'if-range': tag });
    assert.equal(rest.headers['content-encoding'], 'gzip');
    assert.equal(
      rest.status,
      200,
      'a weak tag is compared strongly for a variant (RFC 9110 13.1.5): the whole variant',
    );
    assert.deepEqual(decoded(rest), JS);
    // the file as it is keeps serve-static's weak comparison
    const plainTag = String((await rawGet(s.port, '/app.js')).headers.etag);
    const plain = await rawGet(s.port, '/app.js', { range: 'bytes=10-', 'if-range': plainTag });
    assert.equal(plain.status, 206);
  });

  it('hostile Accept-Encoding: answered, and quickly', async () => {
    const s = await start();
    const t0 = performance.now();
    for (const ae of [
      `${'x'.repeat(14 * 1024)}, br`,
      `${'gzip;q=0.5, '.repeat(1000)}br`,
      'br;q=NaN, gzip;q=1e5',
      ';;;,,,===',
      'br;q=0.5;q=;q=x',
    ]) {
      const res = await rawGet(s.port, '/app.js', { 'accept-encoding': ae });
      assert.equal(res.status, 200, ae.slice(0, 40));
      assert.deepEqual(decoded(res), JS);
    }
    assert.ok(performance.now() - t0 < 2000);
  });

  it('cache rules set Cache-Control, first match wins, resolved once per cache entry', async () => {
    let tests = 0;
    const counting = /\.js$/;
    const test = counting.test.bind(counting);
    counting.test = (s: string) => {
      tests++;
      return test(s);
    };
    const s = await start({
      cacheRules: [
        { match: counting, cacheControl: 'public, max-age=31536000, immutable' },
        { match: '*.css', cacheControl: 'no-cache' },
        { match: '**', cacheControl: 'public, max-age=5' },
      ],
    });
    for (let i = 0; i < 5; i++) {
      const br = await rawGet(s.port, '/app.js', { 'accept-encoding': i % 2 ? 'br' : 'gzip' });
      assert.equal(br.headers['cache-control'], 'public, max-age=31536000, immutable');
    }
    assert.equal(tests, 1);
    assert.equal((await rawGet(s.port, '/css/site.css')).headers['cache-control'], 'no-cache');
    assert.equal((await rawGet(s.port, '/plain.txt')).headers['cache-control'], 'public, max-age=5');
    const none = await start({ cacheRules: [{ match: '*.css', cacheControl: 'no-cache' }] });
    assert.equal((await rawGet(none.port, '/plain.txt')).headers['cache-control'], 'public, max-age=0');
  });
});
