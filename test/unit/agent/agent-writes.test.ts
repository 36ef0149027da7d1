import assert from 'node:assert/strict';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type TestAgent, startTestAgent } from '../../../testkit/agent.js';
import { rawGet } from '../../../testkit/server.js';
import { type TempStore, tempFilesIn, tempStore } from '../../../testkit/store.js';
import { type TarEntry, tarOf } from '../../../testkit/tar.js';
import { execFileSync } from 'node:child_process';

/** POST a body in chunks, with no Content-Length: the agent can only count what arrives. */
function postChunked(
  url: string,
  token: string,
  type: string,
  chunks: Buffer[],
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': type, 'transfer-encoding': 'chunked' },
      },
      (res) => {
        let body = '';
        res.on('data', (c: Buffer) => {
          body += c.toString();
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
    for (const c of chunks) req.write(c);
    req.end();
  });
}

describe('agent write API', () => {
  let store: TempStore;
  let agent: TestAgent;

  before(async () => {
    store = await tempStore();
    await store.fill('master', { 'existing.txt': 'old', 'dir/inside.txt': 'x' });
    agent = await startTestAgent(store, { watchMaster: false }, 4096);
  });
  after(async () => {
    await agent.close();
    await store.dispose();
  });

  describe('authentication', () => {
    it('refuses a request without a token with 401 and a Bearer challenge', async () => {
      const res = await agent.call('PUT', '/v1/files/a.txt', { body: 'x', auth: false });
      assert.equal(res.status, 401);
      assert.match(res.headers.get('www-authenticate') ?? '', /^Bearer/);
    });
    it('refuses a wrong token, a token of another length, and another scheme', async () => {
      for (const auth of ['wrong', `${agent.token}x`, agent.token.slice(0, -1)]) {
        assert.equal((await agent.call('PUT', '/v1/files/a.txt', { body: 'x', auth })).status, 401);
      }
      const basic = await agent.call('GET', '/v1/status', {
        auth: false,
        headers: { authorization: `Basic ${agent.token}` },
      });
      assert.equal(basic.status, 401);
      await assert.rejects(stat(join(store.master, 'a.txt')), { code: 'ENOENT' });
    });
    it('never writes the token to the log', () => {
      assert.ok(!JSON.stringify(agent.logs.lines).includes(agent.token));
    });
    it('leaves /healthz, /readyz and /metrics open', async () => {
      for (const path of ['/healthz', '/readyz', '/metrics']) {
        assert.equal((await agent.call('GET', path, { auth: false })).status, 200, path);
      }
    });
  });

  describe('PUT and DELETE', () => {
    it('writes a file into master before answering 201', async () => {
      const res = await agent.call('PUT', '/v1/files/new/deep/file.txt', { body: 'fresh content' });
      assert.equal(res.status, 201);
      const body = (await res.json()) as { path: string; size: number; seq: number };
      assert.equal(body.path, 'new/deep/file.txt');
      assert.equal(body.size, 13);
      assert.equal(await readFile(join(store.master, 'new/deep/file.txt'), 'utf8'), 'fresh content');
    });
    it('replaces an existing file by rename (a reader of the old inode is unaffected)', async () => {
      const before = (await stat(join(store.master, 'existing.txt'))).ino;
      assert.equal((await agent.call('PUT', '/v1/files/existing.txt', { body: 'new' })).status, 201);
      assert.notEqual((await stat(join(store.master, 'existing.txt'))).ino, before);
    });
    it('deletes a file, and answers 404 for one that does not exist', async () => {
      await agent.call('PUT', '/v1/files/doomed.txt', { body: 'x' });
      assert.equal((await agent.call('DELETE', '/v1/files/doomed.txt')).status, 200);
      await assert.rejects(stat(join(store.master, 'doomed.txt')), { code: 'ENOENT' });
      assert.equal((await agent.call('DELETE', '/v1/files/doomed.txt')).status, 404);
    });
  });

  describe('bad input', () => {
    const badPaths = [
      '..%2Fescape.txt',
      '%2e%2e/escape.txt',
      'a/../../escape.txt',
      './x.txt',
      'a/./x.txt',
      '%2Fetc%2Fpasswd',
      '/etc/passwd',
      'x%00.txt',
      'a%5C..%5Cx',
      'a//b',
      'dir/',
      '.mirrorswap-tmp/x',
      'bad%ZZ',
      'ctl%0Achar',
      `${'x'.repeat(256)}`,
    ];
    for (const p of badPaths) {
      it(`answers 400 for ${p.length > 40 ? `${p.slice(0, 40)}…` : p} and writes nothing`, async () => {
        const res = await rawGet(
          Number(new URL(agent.url).port),
          `/v1/files/${p}`,
          { authorization: `Bearer ${agent.token}` },
          'PUT',
          'payload',
        );
        assert.equal(res.status, 400, `${p}: ${res.body.toString()}`);
        assert.equal((JSON.parse(res.body.toString()) as { error: string }).error, 'BAD_PATH');
        assert.deepEqual(await tempFilesIn(store.master), []);
        await assert.rejects(stat(join(store.root, 'escape.txt')), { code: 'ENOENT' });
      });
    }

    it('answers 413 for a declared body over the limit', async () => {
      const res = await agent.call('PUT', '/v1/files/big.bin', { body: Buffer.alloc(5000) });
      assert.equal(res.status, 413);
      await assert.rejects(stat(join(store.master, 'big.bin')), { code: 'ENOENT' });
    });
    it('answers 413 for a chunked body that grows over the limit, leaving no temp file', async () => {
      const stream = new ReadableStream({
        start(c) {
          for (let i = 0; i < 10; i++) c.enqueue(new Uint8Array(1000));
          c.close();
        },
      });
      const res = await fetch(`${agent.url}/v1/files/big2.bin`, {
        method: 'PUT',
        body: stream,
        headers: { authorization: `Bearer ${agent.token}` },
        duplex: 'half',
      } as RequestInit);
      assert.equal(res.status, 413);
      await assert.rejects(stat(join(store.master, 'big2.bin')), { code: 'ENOENT' });
      assert.deepEqual(await tempFilesIn(store.master), []);
    });
    it('answers 409 for a path under an existing file, and for a PUT onto a directory', async () => {
      assert.equal((await agent.call('PUT', '/v1/files/existing.txt/child', { body: 'x' })).status, 409);
      assert.equal((await agent.call('PUT', '/v1/files/dir', { body: 'x' })).status, 409);
      assert.equal(await readFile(join(store.master, 'dir/inside.txt'), 'utf8'), 'x');
      assert.deepEqual(await tempFilesIn(store.master), []);
    });
  });

  describe('batch', () => {
    it('applies every operation', async () => {
      const res = await agent.call('POST', '/v1/batch', {
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          ops: [
            { op: 'put', path: 'batch/one.txt', content: 'one' },
            { op: 'put', path: 'batch/two.bin', content: Buffer.from('two').toString('base64'), encoding: 'base64' },
            { op: 'delete', path: 'dir/inside.txt' },
          ],
        }),
      });
      assert.equal(res.status, 200);
      assert.equal(await readFile(join(store.master, 'batch/one.txt'), 'utf8'), 'one');
      assert.equal(await readFile(join(store.master, 'batch/two.bin'), 'utf8'), 'two');
      await assert.rejects(stat(join(store.master, 'dir/inside.txt')), { code: 'ENOENT' });
    });
    it('applies nothing when one operation is refused', async () => {
      const res = await agent.call('POST', '/v1/batch', {
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          ops: [
            { op: 'put', path: 'batch2/ok.txt', content: 'ok' },
            { op: 'put', path: 'existing.txt/under', content: 'conflict' },
          ],
        }),
      });
      assert.equal(res.status, 409);
      await assert.rejects(stat(join(store.master, 'batch2/ok.txt')), { code: 'ENOENT' });
      assert.deepEqual(await tempFilesIn(store.master), []);
    });
    it('refuses malformed batches with 400', async () => {
      for (const body of [
        '{',
        '{"ops":[]}',
        '{"ops":[{"op":"chmod","path":"x"}]}',
        '{"ops":[{"op":"put","path":"../x","content":"x"}]}',
        '{"ops":[{"op":"put","path":"x"}]}',
      ]) {
        const res = await agent.call('POST', '/v1/batch', { headers: { 'content-type': 'application/json' }, body });
        assert.equal(res.status, 400, body);
      }
    });
    it('applies every file of a tar archive made by tar(1), directories implied', async () => {
      const src = join(store.root, 'tar-src');
      await mkdir(join(src, 'site/deep'), { recursive: true });
      await writeFile(join(src, 'site/index.html'), '<h1>tar</h1>');
      await writeFile(join(src, 'site/deep/data.bin'), Buffer.from([0, 1, 2, 255]));
      // 512-byte records (-b 1), not 10 KiB ones: the test agent takes 4 KiB bodies
      const archive = execFileSync('tar', ['-C', src, '-b', '1', '-cf', '-', './site/deep', './site/index.html']);
      const res = await agent.call('POST', '/v1/batch', {
        headers: { 'content-type': 'application/x-tar' },
        body: archive,
      });
      assert.equal(res.status, 200, await res.clone().text());
      assert.equal(((await res.json()) as { applied: number }).applied, 2);
      assert.equal(await readFile(join(store.master, 'site/index.html'), 'utf8'), '<h1>tar</h1>');
      assert.deepEqual([...(await readFile(join(store.master, 'site/deep/data.bin')))], [0, 1, 2, 255]);
      assert.deepEqual(await tempFilesIn(store.master), []);
    });
    it('refuses a tar archive with a link, a device, a hostile path or nothing in it, and applies none of it', async () => {
      const cases: [string, TarEntry[]][] = [
        [
          'symlink',
          [[{ name: 'tar1/ok.txt' }, 'ok'], [{ name: 'tar1/out', type: 'symlink', linkname: '/etc/passwd' }]],
        ],
        [
          'hard link',
          [[{ name: 'tar1/ok.txt' }, 'ok'], [{ name: 'tar1/hard', type: 'link', linkname: 'existing.txt' }]],
        ],
        ['device', [[{ name: 'tar1/ok.txt' }, 'ok'], [{ name: 'tar1/dev', type: 'character-device' }]]],
        ['fifo', [[{ name: 'tar1/fifo', type: 'fifo' }]]],
        [
          'dot dot',
          [
            [{ name: 'tar1/ok.txt' }, 'ok'],
            [{ name: '../escape.txt' }, 'x'],
          ],
        ],
        ['inner dot dot', [[{ name: 'tar1/../../escape.txt' }, 'x']]],
        ['temp dir', [[{ name: '.mirrorswap-tmp/planted' }, 'x']]],
        ['backslash', [[{ name: 'tar1\\..\\escape.txt' }, 'x']]],
        ['empty', []],
        ['only a directory', [[{ name: 'tar1/', type: 'directory' }]]],
      ];
      for (const [what, entries] of cases) {
        const res = await agent.call('POST', '/v1/batch', {
          headers: { 'content-type': 'application/x-tar' },
          body: await tarOf(entries),
        });
        assert.equal(res.status, 400, `${what}: ${await res.text()}`);
      }
      await assert.rejects(stat(join(store.master, 'tar1')), { code: 'ENOENT' });
      await assert.rejects(stat(join(store.root, 'escape.txt')), { code: 'ENOENT' });
      assert.deepEqual(await tempFilesIn(store.master), []);
    });
    it('refuses a cut-short or garbage tar body with 400 and leaves no temp file', async () => {
      const whole = await tarOf([
        [{ name: 'tar2/a.txt' }, 'a'.repeat(1500)],
        [{ name: 'tar2/b.txt' }, 'b'],
      ]);
      for (const body of [whole.subarray(0, 1024), Buffer.from('not a tar archive at all'), Buffer.alloc(700, 7)]) {
        const res = await agent.call('POST', '/v1/batch', { headers: { 'content-type': 'application/x-tar' }, body });
        assert.equal(res.status, 400, await res.text());
      }
      await assert.rejects(stat(join(store.master, 'tar2')), { code: 'ENOENT' });
      assert.deepEqual(await tempFilesIn(store.master), []);
    });
    it('refuses a tar body over the limit with 413, declared or not', async () => {
      const big = await tarOf([[{ name: 'tar3/big.txt' }, 'x'.repeat(6000)]]);
      const declared = await agent.call('POST', '/v1/batch', {
        headers: { 'content-type': 'application/x-tar' },
        body: big,
      });
      assert.equal(declared.status, 413);
      const chunks = Array.from({ length: Math.ceil(big.length / 1000) }, (_, i) =>
        big.subarray(i * 1000, (i + 1) * 1000),
      );
      const streamed = await postChunked(`${agent.url}/v1/batch`, agent.token, 'application/x-tar', chunks);
      assert.equal(streamed.status, 413, streamed.body);
      assert.equal((JSON.parse(streamed.body) as { error: string }).error, 'BODY_TOO_LARGE');
      await assert.rejects(stat(join(store.master, 'tar3')), { code: 'ENOENT' });
      assert.deepEqual(await tempFilesIn(store.master), []);
    });
    it('refuses a batch body that is neither JSON nor tar with 400', async () => {
      const res = await agent.call('POST', '/v1/batch', {
        headers: { 'content-type': 'text/plain' },
        body: '{"ops":[]}',
      });
      assert.equal(res.status, 400);
      assert.match(await res.text(), /application\/x-tar/);
    });
    it('refuses a batch body over the limit with 413', async () => {
      const res = await agent.call('POST', '/v1/batch', {
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ ops: [{ op: 'put', path: 'x', content: 'x'.repeat(5000) }] }),
      });
      assert.equal(res.status, 413);
    });
  });
});
