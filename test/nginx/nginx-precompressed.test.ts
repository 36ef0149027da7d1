import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { brotliDecompressSync, gunzipSync } from 'node:zlib';
import { renderInclude } from '../../src/nginx/include-file.js';
import { directoryIndexPath } from '../../src/store/content-index.js';
import { type TestNginx, startNginx } from '../../testkit/nginx.js';
import { rawGet } from '../../testkit/server.js';
import { writeVariantsFor } from '../../testkit/variants.js';

/** Debian's brotli_static module (libnginx-mod-http-brotli-static; scripts/test-deps.sh installs it). */
const BROTLI_MODULE = '/usr/lib/nginx/modules/ngx_http_brotli_static_module.so';

const JS = Buffer.from(
  Array.from({ length: 400 }, (_, i) => `export function f${i}(a, b) { return a * ${i} + b; }\n`).join(''),
);

describe("mirrorswap nginx's include: gzip_static (and brotli_static) over the agent's variants", () => {
  let root: string;
  let nginx: TestNginx;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'mirrorswap-nginx-variants-'));
    await mkdir(join(root, 'js'), { recursive: true });
    await writeFile(join(root, 'js/app.js'), JS);
    await writeFile(join(root, 'plain.js'), JS);
    writeVariantsFor(root, ['js/app.js']);
    const brotli = existsSync(BROTLI_MODULE);
    nginx = await startNginx(brotli ? { main: `load_module ${BROTLI_MODULE};`, server: 'brotli_static on;' } : {});
    await writeFile(nginx.includeFile, renderInclude(1, 'a', root));
    await nginx.start();
  });
  after(async () => {
    await nginx?.dispose();
    await rm(root, { recursive: true, force: true });
  });

  it('the include turns gzip_static on and refuses the content index', () => {
    const text = renderInclude(1, 'a', '/srv/x');
    assert.match(text, /^gzip_static on;$/m);
    assert.match(text, /^gzip_vary on;$/m);
    assert.match(text, /^location \^~ \/\.mirrorswap-meta\/ \{ return 404; \}$/m);
  });

  it('a gzip request gets the .gz sibling, which decodes to the file; others get the file', async () => {
    const gz = await rawGet(nginx.port, '/js/app.js', { 'accept-encoding': 'gzip' });
    assert.equal(gz.status, 200);
    assert.equal(gz.headers['content-encoding'], 'gzip');
    assert.equal(gz.headers.vary, 'Accept-Encoding');
    assert.deepEqual(gz.body, await readFile(join(root, 'js/app.js.gz')));
    assert.deepEqual(gunzipSync(gz.body), JS);
    const id = await rawGet(nginx.port, '/js/app.js');
    assert.equal(id.headers['content-encoding'], undefined);
    assert.deepEqual(id.body, JS);
    // a file without a sibling is sent as it is
    const plain = await rawGet(nginx.port, '/plain.js', { 'accept-encoding': 'gzip' });
    assert.equal(plain.headers['content-encoding'], undefined);
    assert.deepEqual(plain.body, JS);
  });

  it("with Debian's brotli_static module loaded, a br request gets the .br sibling", {
    skip: !existsSync(BROTLI_MODULE),
  }, async () => {
    const br = await rawGet(nginx.port, '/js/app.js', { 'accept-encoding': 'gzip, deflate, br' });
    assert.equal(br.status, 200);
    assert.equal(br.headers['content-encoding'], 'br');
    assert.deepEqual(brotliDecompressSync(br.body), JS);
  });

  it('never serves .mirrorswap-meta', async () => {
    const index = directoryIndexPath(root, 'js');
    assert.ok(existsSync(index));
    const res = await rawGet(nginx.port, `/${index.slice(root.length + 1)}`);
    assert.equal(res.status, 404);
  });
});
