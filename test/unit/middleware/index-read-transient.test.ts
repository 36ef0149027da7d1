import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { type TempStore, tempStore } from '../../../testkit/store.js';
import { compressibleText, writeVariantsFor } from '../../../testkit/variants.js';
import { within } from '../../../testkit/wait.js';

const JS = Buffer.from(compressibleText('app', 8192));

/**
 * A server (mirrorStatic) in a child whose descriptors are few (`ulimit -n`):
 * `/__hold` opens descriptors until none is left, then closes one, so the
 * next lookup opens its file and fails on the read after; `/__release`
 * closes them. No timer of the middleware opens a file meanwhile (its poll
 * and heartbeat are minutes apart).
 */
const CHILD = `
import { closeSync, openSync } from 'node:fs';
import { createServer } from 'node:http';
const { mirrorStatic } = await import(process.env.MIRROR_STATIC);
const mw = mirrorStatic({ store: process.env.STORE, watch: 'poll', pollInterval: 600000, heartbeatInterval: 600000 });
await mw.ready;
const held = [];
const server = createServer((req, res) => {
  if (req.url === '/__hold') {
    try { for (;;) held.push(openSync('/dev/null', 'r')); } catch {}
    closeSync(held.pop());
    res.end(String(held.length));
    return;
  }
  if (req.url === '/__release') {
    while (held.length > 0) closeSync(held.pop());
    res.end('released');
    return;
  }
  mw(req, res, (err) => {
    res.statusCode = err ? 500 : 404;
    res.end(err ? String(err.code ?? err.message) : '');
  });
});
server.listen(0, '127.0.0.1', () => process.stdout.write(server.address().port + '\\n'));
`;

interface Answer {
  status: number;
  etag: string | undefined;
  body: string;
}

describe('a content index read that fails for a passing reason (out of descriptors)', () => {
  const stores: TempStore[] = [];
  const children: ChildProcess[] = [];
  after(async () => {
    for (const c of children) c.kill('SIGKILL');
    await Promise.all(stores.map((s) => s.dispose()));
  });

  /** A store whose slot a holds the same file in three directories, indexed, and a server of it in a child with few descriptors. */
  async function serverWithFewDescriptors(): Promise<(path: string) => Promise<Answer>> {
    const store = await tempStore();
    stores.push(store);
    await store.fill('a', { 'd/app.js': JS, 'e/app.js': JS, 'f/app.js': JS });
    writeVariantsFor(store.slots.a, ['d/app.js', 'e/app.js', 'f/app.js']);
    await store.publish(1, 'a');
    const script = join(store.root, 'child.mjs');
    await writeFile(script, CHILD);
    const child = spawn('bash', ['-c', 'ulimit -n 256 && exec "$0" "$@"', process.execPath, script], {
      env: {
        ...process.env,
        STORE: store.root,
        MIRROR_STATIC: new URL('../../../middleware/static/mirror-static.js', import.meta.url).href,
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(child);
    const port = await within(
      new Promise<number>((resolve, reject) => {
        child.stdout?.once('data', (line: Buffer) => resolve(Number(line.toString().trim())));
        child.once('exit', (code) => reject(new Error(`the server exited with ${code}`)));
      }),
      10_000,
      'the server in the child',
    );
    // one connection, made before the descriptors run out, for every request
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    return (path) =>
      new Promise((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port, path, agent }, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => {
            body += c.length > 64 ? `${c.length} bytes` : c;
          });
          res.on('end', () => resolve({ status: res.statusCode ?? 0, etag: res.headers.etag, body }));
          res.on('error', reject);
        });
        req.on('error', reject);
        req.end();
      });
  }

  /** The first answer a path gets once descriptors ran out, and its answer once they are back. */
  async function outOfDescriptors(get: (path: string) => Promise<Answer>, path: string): Promise<Answer> {
    const held = await get('/__hold');
    assert.ok(Number(held.body) > 100, `descriptors held: ${held.body}`);
    const starved = await get(path);
    assert.notEqual(starved.status, 404, 'the lookup was kept as a miss');
    assert.equal((await get('/__release')).body, 'released');
    return get(path);
  }

  it('the copy recent records: not taken as torn for the epoch (every strong ETag lost)', async () => {
    const get = await serverWithFewDescriptors();
    assert.equal((await get('/missing.txt')).status, 404); // the connection, and nothing read yet
    const after = await outOfDescriptors(get, '/d/app.js');
    assert.equal(after.status, 200);
    const fresh = await get('/e/app.js');
    assert.ok(fresh.etag && !fresh.etag.startsWith('W/'), `e/app.js has no strong ETag: ${fresh.etag}`);
    assert.equal(after.etag, fresh.etag, 'd/app.js lost its content ETag for the epoch');
  });

  it("a directory's index: not taken as missing for the epoch", async () => {
    const get = await serverWithFewDescriptors();
    const first = await get('/e/app.js'); // the recent records read, kept
    assert.ok(first.etag && !first.etag.startsWith('W/'), `e/app.js has no strong ETag: ${first.etag}`);
    const after = await outOfDescriptors(get, '/f/app.js');
    assert.equal(after.status, 200);
    assert.equal(after.etag, first.etag, 'f/app.js lost its content ETag for the epoch');
  });
});
