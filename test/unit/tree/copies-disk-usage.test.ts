import assert from 'node:assert/strict';
import { link, mkdir, mkdtemp, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { copiesDiskUsage } from '../../../src/tree/copies-disk-usage.js';

describe("copies' disk usage", () => {
  let root: string;
  after(() => rm(root, { recursive: true, force: true }));

  it('splits each copy into what it shares with the others and what it owns, each inode counted once in all', async () => {
    root = await mkdtemp(join(tmpdir(), 'mirrorswap-du-'));
    const [a, b] = [join(root, 'a'), join(root, 'b')];
    await mkdir(join(a, 'd'), { recursive: true });
    await mkdir(join(b, 'd'), { recursive: true });
    await writeFile(join(a, 'd', 'shared.bin'), Buffer.alloc(256 * 1024, 1));
    await link(join(a, 'd', 'shared.bin'), join(b, 'd', 'shared.bin'));
    await writeFile(join(a, 'own.bin'), Buffer.alloc(64 * 1024, 2));
    await writeFile(join(b, 'own.bin'), Buffer.alloc(128 * 1024, 3));
    // a link is counted as itself, never followed out of the copy
    await symlink('/etc', join(b, 'out'));
    const blocks = async (p: string) => (await stat(p)).blocks * 512;
    const shared = await blocks(join(a, 'd', 'shared.bin'));
    const du = await copiesDiskUsage([
      { name: 'a', root: a },
      { name: 'b', root: b },
      { name: 'gone', root: join(root, 'gone') },
    ]);
    const [ua, ub, gone] = du.copies;
    assert.equal(ua?.shared, shared);
    assert.equal(ub?.shared, shared);
    assert.ok((ua?.owned ?? 0) >= (await blocks(join(a, 'own.bin'))));
    assert.ok((ub?.owned ?? 0) >= (await blocks(join(b, 'own.bin'))));
    assert.equal(ua?.bytes, (ua?.shared ?? 0) + (ua?.owned ?? 0));
    assert.equal(du.total, (ua?.owned ?? 0) + (ub?.owned ?? 0) + shared, 'the shared file once in the total');
    assert.deepEqual(gone, { name: 'gone', bytes: 0, shared: 0, owned: 0 });
  });
});
