import assert from 'node:assert/strict';
import { mkdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { MasterWatcher, entrySignature } from '../../../src/agent/master/master-watcher.js';
import { type TempStore, tempStore } from '../../../testkit/store.js';
import { waitFor } from '../../../testkit/wait.js';

describe('master watcher', () => {
  let store: TempStore;
  let watcher: MasterWatcher;
  const own = new Map<string, string>();
  const seen = new Set<string>();
  const incomplete: string[] = [];

  before(async () => {
    store = await tempStore();
    await store.fill('master', { 'old/dir/file.txt': 'x', 'top.txt': 'y' });
    watcher = new MasterWatcher({
      root: store.master,
      own,
      fenceDir: join(store.root, 'fence'),
      onChanges: (paths) => {
        for (const p of paths) seen.add(p);
      },
      onIncomplete: (reason) => incomplete.push(reason),
    });
    await watcher.start();
  });
  after(async () => {
    await watcher.close();
    await store.dispose();
  });

  it('watches one inotify watch per directory, not per file', () => {
    assert.equal(watcher.directories, 3); // master, old, old/dir
  });

  it('reports a file written into an existing directory', async () => {
    await writeFile(join(store.master, 'old/dir/new.txt'), 'new');
    await waitFor('the report', () => seen.has('old/dir/new.txt'));
  });

  it('reports the files of a directory tree that appears at once, and watches it', async () => {
    const staging = join(store.root, 'staging');
    await mkdir(join(staging, 'a/b'), { recursive: true });
    await writeFile(join(staging, 'a/b/deep.txt'), 'deep');
    await rename(staging, join(store.master, 'fresh'));
    await waitFor('the deep file', () => seen.has('fresh/a/b/deep.txt'));
    await writeFile(join(store.master, 'fresh/a/b/later.txt'), 'later');
    await waitFor('a file in the new tree', () => seen.has('fresh/a/b/later.txt'));
  });

  it('reports a removed directory', async () => {
    await rm(join(store.master, 'old'), { recursive: true });
    await waitFor('the removal', () => seen.has('old'));
  });

  it('does not report a change the write API announced, nor the temp directory', async () => {
    const tmp = join(store.master, '.mirrorswap-tmp');
    await mkdir(tmp, { recursive: true });
    await writeFile(join(tmp, 'staged'), 'x');
    await writeFile(join(tmp, 'mine'), 'mine');
    own.set('api.txt', entrySignature(await stat(join(tmp, 'mine'))));
    await rename(join(tmp, 'mine'), join(store.master, 'api.txt'));
    await writeFile(join(store.master, 'marker.txt'), 'm');
    await waitFor('the marker', () => seen.has('marker.txt'));
    assert.ok(!seen.has('api.txt'), 'an API write was reported as a direct one');
    assert.ok(![...seen].some((p) => p.startsWith('.mirrorswap-tmp')), 'the temp directory was reported');
  });
});
