import assert from 'node:assert/strict';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type TestAgent, startTestAgent } from '../../testkit/agent.js';
import { type TestApp, startApp } from '../../testkit/app.js';
import { rawGet } from '../../testkit/server.js';
import { type TempStore, tempStore } from '../../testkit/store.js';

const SECRET = 'SECRET-OUTSIDE-THE-COPY';

/** Ways to write "..", a separator, and what to reach, combined into traversal attempts. */
const DOTDOT = [
  '..',
  '%2e%2e',
  '%2E%2E',
  '.%2e',
  '%2e.',
  '%252e%252e',
  '%c0%ae%c0%ae',
  '%e0%80%ae%e0%80%ae',
  '%ef%bc%8e%ef%bc%8e',
  '..%00',
  '%2e%2e%00',
  '...',
];
const SEP = ['/', '%2f', '%2F', '\\', '%5c', '%5C', '%252f', '%c0%af', '%e0%80%af', '//', '/./'];
const TARGET = ['secret.txt', 'a2/secret.txt', 'b/other.txt'];

function corpus(): string[] {
  const out = new Set<string>();
  for (const d of DOTDOT) {
    for (const s of SEP) {
      for (const depth of [1, 3]) {
        out.add(`/${`${d}${s}`.repeat(depth)}${TARGET[depth % TARGET.length]}`);
        out.add(`/sub/${`${d}${s}`.repeat(depth + 1)}${TARGET[(depth + 1) % TARGET.length]}`);
      }
    }
  }
  for (const extra of [
    '/%00',
    '/ok.txt%00',
    '/ok.txt%00.html',
    '/%',
    '/%zz',
    '/%%32%65%%32%65/secret.txt',
    `/${'%2e'.repeat(2000)}`,
    `/${'a'.repeat(5000)}`,
    `/${'sub/'.repeat(1200)}ok.txt`,
    '/.mirrorswap-tmp/x',
    '/.MIRRORSWAP-TMP/../secret.txt',
    '/escape',
    '/escape/secret.txt',
    '/to-sibling',
    '/%2e',
    '/.',
    '/..',
    '/sub/..',
    '/sub/%2e%2e',
  ]) {
    out.add(extra);
  }
  return [...out];
}

describe('a corpus of hostile paths', () => {
  let store: TempStore;
  let loose: TestApp;
  let strict: TestApp;
  let agent: TestAgent;
  const paths = corpus();

  before(async () => {
    store = await tempStore();
    await writeFile(join(store.root, 'secret.txt'), SECRET);
    await mkdir(`${store.slots.a}2`, { recursive: true });
    await writeFile(join(`${store.slots.a}2`, 'secret.txt'), SECRET);
    await store.fill('b', { 'other.txt': SECRET });
    await store.fill('a', { 'ok.txt': 'fine', 'sub/ok.txt': 'fine' });
    await store.link('a', 'escape', store.root);
    await store.link('a', 'to-sibling', join(`${store.slots.a}2`, 'secret.txt'));
    await store.publish(1, 'a');
    loose = await startApp({ store: store.root });
    strict = await startApp({ store: store.root, fallthrough: false, dotfiles: 'deny' });
  });
  after(async () => {
    await agent?.close();
    await loose.close();
    await strict.close();
    await store.dispose();
  });

  it(`has at least 200 distinct attempts (${paths.length})`, () => {
    assert.ok(paths.length >= 200);
  });

  it('never gets a byte from outside the mounted copy through the middleware: 400, 403 or 404 (or the root redirect)', async () => {
    for (const server of [loose, strict]) {
      for (const path of paths) {
        const res = await rawGet(server.port, path);
        // "/%2e" and "/." name the root itself: the directory redirect to its trailing-slash form is no escape
        if (res.status === 301) assert.equal(res.headers.location, `${path}/`);
        else assert.ok([400, 403, 404].includes(res.status), `${res.status} for ${path.slice(0, 80)}`);
        assert.ok(!res.body.toString().includes(SECRET), `leak for ${path.slice(0, 80)}`);
      }
    }
  });

  it('never lets the write API write outside master, and refuses every traversal with 400', async () => {
    // master is created by the agent's init; starting it here keeps the middleware tests independent
    agent = await startTestAgent(store, { watchMaster: false });
    const before = (await readdir(store.root)).sort();
    for (const path of paths) {
      const res = await rawGet(
        Number(new URL(agent.url).port),
        `/v1/files${path}`,
        { authorization: `Bearer ${agent.token}` },
        'PUT',
        'hostile',
      );
      const decodedHasDotDot = (() => {
        try {
          return decodeURIComponent(path).split(/[/\\]/).includes('..');
        } catch {
          return true;
        }
      })();
      if (decodedHasDotDot) assert.equal(res.status, 400, `${res.status} for ${path.slice(0, 80)}`);
      else assert.ok([201, 400, 409].includes(res.status), `${res.status} for ${path.slice(0, 80)}`);
    }
    assert.deepEqual((await readdir(store.root)).sort(), before, 'something appeared beside master');
    assert.equal(await readFile(join(store.root, 'secret.txt'), 'utf8'), SECRET);
    assert.equal(await readFile(join(`${store.slots.a}2`, 'secret.txt'), 'utf8'), SECRET);
    assert.deepEqual(await readdir(`${store.slots.a}2`), ['secret.txt']);
  });
});
