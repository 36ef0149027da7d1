import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type TestApp, startApp } from '../../../testkit/app.js';
import { rawGet } from '../../../testkit/server.js';
import { type TempStore, tempStore } from '../../../testkit/store.js';

/**
 * Hostile request paths: none may ever return a file from outside the mounted
 * slot. Each is sent byte for byte as written (no client normalisation).
 */
describe('mirrorStatic against hostile paths', () => {
  let store: TempStore;
  let app: TestApp;
  let strict: TestApp;
  const SECRET = 'TOP-SECRET-OUTSIDE';

  before(async () => {
    store = await tempStore();
    await store.fill('a', { 'ok.txt': 'inside', 'sub/deep.txt': 'deep' });
    // a sibling directory whose name starts with the slot's: /store/a vs /store/a2
    await store.fill('b', { 'x.txt': SECRET });
    await writeFile(join(store.root, 'secret.txt'), SECRET);
    const sibling = `${store.slots.a}2`;
    await store.fill('a', {});
    await import('node:fs/promises').then((fs) => fs.mkdir(sibling, { recursive: true }));
    await writeFile(join(sibling, 'secret.txt'), SECRET);
    // symlinks escaping the root, into the sibling slot and to the store's own secret
    await store.link('a', 'escape-file', join(store.root, 'secret.txt'));
    await store.link('a', 'escape-dir', store.root);
    await store.link('a', 'to-other-slot', join(store.slots.b, 'x.txt'));
    await store.link('a', 'to-sibling', join(sibling, 'secret.txt'));
    await store.link('a', 'relative-escape', '../secret.txt');
    await store.link('a', 'inside-link', 'ok.txt');
    await store.publish(1, 'a');
    app = await startApp({ store: store.root });
    strict = await startApp({ store: store.root, fallthrough: false });
  });
  after(async () => {
    await app.close();
    await strict.close();
    await store.dispose();
  });

  const traversals = [
    '/../secret.txt',
    '/%2e%2e/secret.txt',
    '/%2E%2E/secret.txt',
    '/%2e%2e%2fsecret.txt',
    '/sub/../../secret.txt',
    '/sub/%2e%2e/%2e%2e/secret.txt',
    '/%252e%252e/secret.txt',
    '/..%2fsecret.txt',
    '/..%5csecret.txt',
    '/..\\secret.txt',
    '/%5c..%5csecret.txt',
    '/ok.txt%00.html',
    '/%00',
    '/%c0%ae%c0%ae/secret.txt',
    '/%e0%80%ae%e0%80%ae/secret.txt',
    '/..%c0%afsecret.txt',
    '/%',
    '/%zz',
    '/../a2/secret.txt',
    '/%2e%2e/a2/secret.txt',
    `/${'a/'.repeat(3000)}x`,
    `/${'x'.repeat(300)}`,
    '/escape-file',
    '/escape-dir/secret.txt',
    '/escape-dir/',
    '/to-other-slot',
    '/to-sibling',
    '/relative-escape',
    '/.mirrorswap-tmp/../secret.txt',
  ];

  for (const path of traversals) {
    it(`${path.length > 60 ? `${path.slice(0, 60)}…` : path} never leaks (fallthrough and strict)`, async () => {
      for (const server of [app, strict]) {
        const res = await rawGet(server.port, path);
        assert.ok([400, 403, 404].includes(res.status), `status ${res.status} for ${path}`);
        assert.ok(!res.body.toString().includes(SECRET), `leaked for ${path}`);
      }
    });
  }

  it('answers each class with its documented status when strict', async () => {
    assert.equal((await rawGet(strict.port, '/../secret.txt')).status, 403);
    assert.equal((await rawGet(strict.port, '/%2e%2e/secret.txt')).status, 403);
    assert.equal((await rawGet(strict.port, '/ok.txt%00')).status, 400);
    assert.equal((await rawGet(strict.port, '/%zz')).status, 400);
    assert.equal((await rawGet(strict.port, '/a\\b')).status, 400);
    assert.equal((await rawGet(strict.port, '/escape-file')).status, 404);
  });

  it('still serves a symlink that stays inside the root', async () => {
    const res = await rawGet(app.port, '/inside-link');
    assert.equal(res.status, 200);
    assert.equal(res.body.toString(), 'inside');
  });

  it('survives an absolute-form and an asterisk request target', async () => {
    assert.ok([400, 404].includes((await rawGet(app.port, '*')).status));
    const res = await rawGet(app.port, `http://127.0.0.1:${app.port}/ok.txt`);
    assert.ok([400, 404].includes(res.status));
  });
});
