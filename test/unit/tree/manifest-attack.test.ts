import { randomBytes } from 'node:crypto';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync, readlinkSync } from 'node:fs';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { createServer, request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { after, describe, it } from 'node:test';
import express from 'express';
import { fleetRouter } from '../../../src/fleet/coordinator/fleet-api.js';
import { Snapshots } from '../../../src/fleet/coordinator/snapshots.js';
import { memoryLogger } from '../../../testkit/logger.js';
import { listenUrl } from '../../../testkit/server.js';
import { tempDirs } from '../../../testkit/store.js';

const temp = tempDirs();
after(() => temp.removeAll());
const TOKEN = `fleet-token-${randomBytes(16).toString('hex')}`;
const AUTH = { authorization: `Bearer ${TOKEN}` };

async function coordinator() {
  const root = await temp.make('mirrorswap-attack-');
  const slots = { a: join(root, 'a'), b: join(root, 'b') };
  await mkdir(slots.a);
  await mkdir(slots.b);
  const dir = join(root, 'manifests');
  const snapshots = new Snapshots(slots, dir);
  const app = express();
  app.use('/v1/fleet', fleetRouter(snapshots, TOKEN, memoryLogger()));
  const server = createServer(app);
  const url = await listenUrl(server);
  return { root, dir, slots, snapshots, url, close: () => new Promise((r) => server.close(r)) };
}

/** Descriptors this process holds open on files under `dir`. */
function openUnder(dir: string): string[] {
  const out: string[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      if (target.startsWith(dir)) out.push(target);
    } catch {}
  }
  return out;
}

describe('manifests on disk, attacked', () => {
  it('the mounted snapshot is still answered after the standby was taken four times (commits that failed)', async () => {
    const c = await coordinator();
    try {
      await writeFile(join(c.slots.a, 'x'), 'mounted');
      const mounted = await c.snapshots.take('a');
      // a sync copies into the standby and takes it; its fleet commit fails; the next sync does it again
      for (let i = 0; i < 4; i++) {
        await c.snapshots.release('b', 1000);
        await writeFile(join(c.slots.b, `f${i}`), String(i));
        await c.snapshots.take('b');
      }
      assert.equal(c.snapshots.idOf('a'), mounted, 'slot a still holds the committed snapshot');
      const res = await fetch(`${c.url}/v1/fleet/manifest?snapshot=${mounted}`, { headers: AUTH });
      const body = await res.text();
      assert.equal(res.status, 200, `a host pulling the committed snapshot: ${res.status} ${body}`);
      assert.equal(JSON.parse(body).changed.length, 1);
    } finally {
      await c.close();
    }
  });

  it('a host that hangs up before its answer is made leaves no descriptor open and no pull counted', async () => {
    const c = await coordinator();
    try {
      await writeFile(join(c.slots.a, 'x'), 'one');
      const id = await c.snapshots.take('a');
      // the answer takes a while to make (a large manifest, a busy walk pool)
      const answer = c.snapshots.answer.bind(c.snapshots);
      let made: Promise<unknown> | undefined;
      let asked!: () => void;
      const answerAsked = new Promise<void>((resolve) => (asked = resolve));
      c.snapshots.answer = (s, since) => {
        made = delay(300).then(() => answer(s, since));
        asked();
        return made as ReturnType<typeof answer>;
      };
      const { port } = new URL(c.url);
      const req = httpRequest({ host: '127.0.0.1', port, path: `/v1/fleet/manifest?snapshot=${id}`, headers: AUTH });
      req.on('error', () => {});
      req.end();
      // the host hangs up once the coordinator has begun its answer, however slow the machine
      await answerAsked;
      req.destroy();
      await made;
      // then the handler has its turn with the answer made for a host gone
      await delay(200);
      assert.deepEqual(c.snapshots.pulls(), { a: 0, b: 0 });
      assert.deepEqual(openUnder(c.dir), [], 'the answer file is still held open by a request long gone');
    } finally {
      await c.close();
    }
  });

  it('a full manifests disk fails the take with an error that says so, leaving no file behind', async (t) => {
    const c = await coordinator();
    try {
      await mkdir(c.dir, { recursive: true });
      try {
        execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', c.dir]);
      } catch {
        t.skip('cannot mount a tmpfs here');
        return;
      }
      try {
        for (let i = 0; i < 1500; i++) await writeFile(join(c.slots.a, `file-with-a-longish-name-${i}`), '');
        const err = await c.snapshots.take('a').then(
          () => null,
          (e: Error) => e,
        );
        assert.ok(err, 'the take fails');
        assert.match(err.message, /ENOSPC/);
        assert.deepEqual(await readdir(c.dir), [], 'nothing left in the manifests dir');
        // and the error says where space ran out, not that the slot cannot be read
        assert.doesNotMatch(err.message, new RegExp(`cannot read ${c.slots.a}`), err.message);
      } finally {
        execFileSync('umount', [c.dir]);
      }
    } finally {
      await c.close();
    }
  });

  it('hostile query params: unknown, evicted, climbing, unicode, huge ids are refused or answered whole, never a 500', async () => {
    const c = await coordinator();
    try {
      await writeFile(join(c.slots.a, 'x'), 'one');
      const id = await c.snapshots.take('a');
      const huge = 'x'.repeat(6000);
      const asks = [
        ['../../etc/passwd', null],
        ['%F0%9F%98%80', null],
        [huge, null],
        [`${id}%20`, null],
        [id, '../x'],
        [id, huge],
        [id, '%C3%A9'],
        [id, id],
        [id, '%00'],
      ];
      for (const [snapshot, since] of asks) {
        const q = `snapshot=${snapshot}${since === null ? '' : `&since=${since}`}`;
        const res = await fetch(`${c.url}/v1/fleet/manifest?${q}`, { headers: AUTH });
        const body = await res.text();
        assert.ok(res.status === 200 || res.status === 410, `${q.slice(0, 80)}: ${res.status} ${body.slice(0, 200)}`);
      }
      const head = await fetch(`${c.url}/v1/fleet/manifest?snapshot=${id}`, { method: 'HEAD', headers: AUTH });
      assert.equal(head.status, 200);
      assert.equal(await head.text(), '');
      await delay(50);
      assert.deepEqual(c.snapshots.pulls(), { a: 0, b: 0 });
    } finally {
      await c.close();
    }
  });

  it('a files request for a dir, a link, another normalization or a path through a link is refused', async () => {
    const c = await coordinator();
    try {
      await mkdir(join(c.slots.a, 'd'));
      await writeFile(join(c.slots.a, 'd', 'f'), 'x');
      await writeFile(join(c.slots.a, 'caf\u0065\u0301'), 'nfd');
      const { symlink } = await import('node:fs/promises');
      await symlink('d', join(c.slots.a, 'l'));
      await symlink('d/f', join(c.slots.a, 'lf'));
      const id = await c.snapshots.take('a');
      for (const path of ['d', 'l', 'lf', 'l/f', 'caf\u00e9', 'd/./f', 'd//f', 'D/f', 'd/f/']) {
        const res = await fetch(`${c.url}/v1/fleet/files?snapshot=${id}`, {
          method: 'POST',
          headers: { ...AUTH, 'content-type': 'application/json' },
          body: JSON.stringify({ paths: [path] }),
        });
        await res.arrayBuffer();
        assert.ok(res.status >= 400 && res.status < 500, `${JSON.stringify(path)}: ${res.status}`);
      }
      const ok = await fetch(`${c.url}/v1/fleet/files?snapshot=${id}`, {
        method: 'POST',
        headers: { ...AUTH, 'content-type': 'application/json' },
        body: JSON.stringify({ paths: ['d/f', 'caf\u0065\u0301'] }),
      });
      await ok.arrayBuffer();
      assert.equal(ok.status, 200);
    } finally {
      await c.close();
    }
  });

  it('a host that hangs up mid-stream leaves no descriptor open', async () => {
    const c = await coordinator();
    try {
      for (let d = 0; d < 20; d++) {
        await mkdir(join(c.slots.a, `d${d}`));
        for (let i = 0; i < 500; i++) await writeFile(join(c.slots.a, `d${d}`, `a-rather-long-file-name-${i}`), '');
      }
      const id = await c.snapshots.take('a');
      const { port } = new URL(c.url);
      await new Promise<void>((resolve) => {
        const req = httpRequest({ host: '127.0.0.1', port, path: `/v1/fleet/manifest?snapshot=${id}`, headers: AUTH });
        req.on('response', (res) => {
          res.once('data', () => {
            req.destroy();
            resolve();
          });
        });
        req.on('error', () => resolve());
        req.end();
      });
      await delay(500);
      assert.deepEqual(openUnder(c.dir), []);
      assert.deepEqual(c.snapshots.pulls(), { a: 0, b: 0 });
    } finally {
      await c.close();
    }
  });

  it('concurrent answers while snapshots are taken and evicted: all whole and right, files cleaned up', async () => {
    const c = await coordinator();
    try {
      const ids: string[] = [];
      for (let i = 0; i < 4; i++) {
        const slot = i % 2 === 0 ? 'a' : 'b';
        await c.snapshots.release(slot, 1000);
        for (let k = 0; k < 300; k++) await writeFile(join(c.slots[slot], `f${k}`), `${i}-${k}`);
        ids.push(await c.snapshots.take(slot));
      }
      const latest = ids[3] as string;
      const gets = [];
      for (let n = 0; n < 12; n++) {
        const since = ids[n % 3] as string;
        gets.push(
          fetch(`${c.url}/v1/fleet/manifest?snapshot=${latest}&since=${since}`, { headers: AUTH }).then(async (r) => ({
            status: r.status,
            body: await r.text(),
          })),
        );
      }
      // meanwhile the other slot is taken twice: the oldest bases go
      await c.snapshots.release('a', 1000);
      await writeFile(join(c.slots.a, 'new'), 'n');
      await c.snapshots.take('a');
      await c.snapshots.release('a', 1000);
      await c.snapshots.take('a');
      for (const r of await Promise.all(gets)) {
        assert.equal(r.status, 200, r.body.slice(0, 200));
        const a = JSON.parse(r.body);
        assert.equal(a.snapshot, latest);
        for (const e of a.changed) if (e.type === 'file') assert.match(e.hash, /^[0-9a-f]{64}$/);
      }
      await delay(300);
      const left = await readdir(c.dir);
      const manifests = left.filter((f) => f.endsWith('.manifest'));
      assert.ok(manifests.length <= 4, `manifests left: ${left.join(' ')}`);
      assert.ok(!left.some((f) => f.endsWith('.tmp') || f.endsWith('.runs') || f.endsWith('.removed')), left.join(' '));
      assert.deepEqual(openUnder(c.dir), []);
    } finally {
      await c.close();
    }
  });
});
