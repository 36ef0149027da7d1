import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmod, lstat, mkdir, readFile, readdir, readlink, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { Session } from 'node:inspector';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { type Difference, compareTrees, compareTreesSync } from '../../../src/tree/compare-trees.js';
import { TreeCopier } from '../../../src/tree/tree-copy.js';
import { WalkPool } from '../../../src/tree/walk-pool.js';
import { planUnits } from '../../../src/tree/walk-units.js';
import { tempDirs } from '../../../testkit/store.js';

const temp = tempDirs();
const dirs = {
  make: async () => {
    const dir = await temp.make('mirrorswap-walk-');
    made.push(dir);
    return dir;
  },
};
after(async () => {
  await execChmod();
  await temp.removeAll();
});

/** Every entry of a tree: type, mode, mtime (ms), size, link target and content. */
async function snapshot(root: string, rel = ''): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const name of (await readdir(join(root, rel))).sort()) {
    if (rel === '' && name === '.mirrorswap-tmp') continue;
    const path = rel === '' ? name : `${rel}/${name}`;
    const st = await lstat(join(root, path));
    const mode = (st.mode & 0o7777).toString(8);
    if (st.isDirectory()) {
      out[path] = `dir ${mode}`;
      Object.assign(out, await snapshot(root, path));
    } else if (st.isSymbolicLink()) out[path] = `link ${await readlink(join(root, path))}`;
    else out[path] = `file ${mode} ${Math.floor(st.mtimeMs)} ${(await readFile(join(root, path))).toString('hex')}`;
  }
  return out;
}

/**
 * A tree whose whole content sits under one top directory, deep and wide
 * enough to be cut into units, with read-only directories (a child must be
 * written before its parent's mode is set), odd modes, old mtimes and links.
 */
async function oneTopTree(root: string): Promise<void> {
  for (let a = 0; a < 6; a++)
    for (let b = 0; b < 5; b++) {
      const dir = join(root, 'site', `a${a}`, `b${b}`);
      await mkdir(dir, { recursive: true });
      for (let f = 0; f < 4; f++) {
        const file = join(dir, `f${f}.txt`);
        await writeFile(file, `${a}/${b}/${f}`);
        await chmod(file, f === 0 ? 0o600 : 0o644);
        await utimes(file, 1_000_000 + f, 1_000_000 + a * 100 + b * 10 + f);
      }
    }
  await writeFile(join(root, 'site', 'index.html'), 'top');
  await symlink('a0/b0/f1.txt', join(root, 'site', 'alias'));
  await writeFile(join(root, 'root.txt'), 'root');
  // read-only directories, set last: every unit below must still land in them
  for (let a = 0; a < 6; a++) await chmod(join(root, 'site', `a${a}`, 'b1'), 0o555);
  await chmod(join(root, 'site', 'a2'), 0o555);
  await chmod(join(root, 'site'), 0o755);
}

const key = (d: Difference) => `${d.kind} ${d.path}`;

describe('tree walks cut into units', () => {
  it('cuts a tree under a single top directory into many units, every directory in exactly one', async () => {
    const root = await dirs.make();
    await oneTopTree(root);
    const units = planUnits(root, [''], 2);
    assert.ok(units.length >= 20, `${units.length} units`);
    // every directory of the tree is walked by exactly one unit: a deep unit covers its subtree
    const covered = new Map<string, number>();
    const all = execFileSync('find', ['.', '-type', 'd'], { cwd: root, encoding: 'utf8' })
      .trim()
      .split('\n')
      .map((p) => (p === '.' ? '' : p.slice(2)));
    for (const dir of all) {
      let n = 0;
      for (const u of units) {
        if (u.rel === dir) n++;
        else if (u.deep && (u.rel === '' || dir.startsWith(`${u.rel}/`))) n++;
      }
      covered.set(dir, n);
    }
    assert.deepEqual(
      [...covered].filter(([, n]) => n !== 1),
      [],
    );
  });

  it('copies a tree under one top directory whole: contents, modes, mtimes, links, read-only directories', async () => {
    const source = await dirs.make();
    const target = await dirs.make();
    await oneTopTree(source);
    const copier = new TreeCopier(source, target, { durable: false });
    await copier.mirrorAll();
    assert.deepEqual(await snapshot(target), await snapshot(source));
    assert.equal(copier.stats.files, 6 * 5 * 4 + 3);
    assert.deepEqual(await readdir(join(target, '.mirrorswap-tmp')).catch(() => []), []);
    // and a comparison across units finds nothing left
    assert.deepEqual(await compareTrees(source, target), []);
    await chmodTree(source);
    await chmodTree(target);
  });

  it('finds the same differences cut into units as in one walk, wherever they are', async () => {
    const source = await dirs.make();
    const target = await dirs.make();
    await oneTopTree(source);
    await new TreeCopier(source, target, { durable: false }).mirrorAll();
    await chmodTree(source);
    await chmodTree(target);
    // differences at every depth, in directories that are units of their own and in their parents
    await writeFile(join(source, 'site/a3/b2/f1.txt'), 'changed, longer');
    await rm(join(target, 'site/a4/b0/f2.txt'));
    await writeFile(join(target, 'site/a5/extra.txt'), 'extra');
    await rm(join(source, 'site/a1/b3'), { recursive: true });
    await mkdir(join(source, 'site/a0/new/deeper'), { recursive: true });
    await writeFile(join(source, 'site/a0/new/deeper/n.txt'), 'n');
    await rm(join(target, 'site/a2/b4'), { recursive: true });
    await writeFile(join(target, 'site/a2/b4'), 'a file where a directory goes');
    await chmod(join(source, 'site/a0/b0/f3.txt'), 0o640);
    await writeFile(join(source, 'site/index.html'), 'top, changed');
    const one = compareTreesSync(source, target).map(key).sort();
    const cut = (await compareTrees(source, target)).map(key).sort();
    assert.deepEqual(cut, one);
    for (const expected of [
      'content site/a3/b2/f1.txt',
      'missing site/a4/b0/f2.txt',
      'extra site/a5/extra.txt',
      'extra site/a1/b3',
      'missing site/a0/new',
      'missing site/a0/new/deeper/n.txt',
      'type site/a2/b4',
      'mode site/a0/b0/f3.txt',
      'content site/index.html',
    ])
      assert.ok(cut.includes(expected), `${expected} in ${cut.join(', ')}`);
    // a directory missing from the target is one difference when asked so
    const whole = (await compareTrees(source, target, { missingDirsWhole: true })).map(key);
    assert.ok(whole.includes('missing site/a0/new'));
    assert.ok(!whole.some((k) => k.startsWith('missing site/a0/new/')), whole.join(', '));
    // and a full sync makes them equal
    await new TreeCopier(source, target, { durable: false }).mirrorAll();
    assert.deepEqual(await snapshot(target), await snapshot(source));
  });

  it('never follows a unit directory swapped for a link out of the source', async () => {
    const source = await dirs.make();
    const target = await dirs.make();
    const outside = await dirs.make();
    await writeFile(join(outside, 'secret.txt'), 'secret');
    await oneTopTree(source);
    await chmodTree(source);
    // a directory that is a unit of its own is a link by the time its unit runs
    await rm(join(source, 'site/a3'), { recursive: true });
    await symlink(outside, join(source, 'site/a3'));
    await new TreeCopier(source, target, { durable: false }).mirrorAll();
    assert.equal((await lstat(join(target, 'site/a3'))).isSymbolicLink(), true);
    assert.equal(await readlink(join(target, 'site/a3')), outside);
    const found = execFileSync('find', [target, '-name', 'secret.txt'], { encoding: 'utf8' }).trim();
    assert.equal(found, '');
  });
});

describe('WalkPool', () => {
  it('fails a job whose unit throws, after its other chunks are back, and keeps serving others', async () => {
    const pool = new WalkPool(2);
    try {
      const root = await dirs.make();
      await mkdir(join(root, 'd'));
      // a clone into a destination that exists already throws EEXIST in the thread
      await assert.rejects(
        pool.run('clone', { source: root }, [{ rel: 'd', deep: true, dest: root }], () => true),
        (err: NodeJS.ErrnoException) => err.code === 'EEXIST',
      );
      // the pool still works, for several jobs at once
      await writeFile(join(root, 'd', 'x'), 'x');
      const results = await Promise.all(
        [0, 1, 2].map(async (i) => {
          const got: unknown[] = [];
          await pool.run('clone', { source: root }, [{ rel: 'd', deep: true, dest: join(root, `copy${i}`) }], (r) => {
            got.push(...r);
            return true;
          });
          return got;
        }),
      );
      assert.equal(results.length, 3);
      for (let i = 0; i < 3; i++) assert.equal(await readFile(join(root, `copy${i}`, 'x'), 'utf8'), 'x');
    } finally {
      await pool.close();
    }
  });

  it('runs a job capped by maxThreads in that many threads at once, leaving the others to other jobs', async () => {
    const pool = new WalkPool(2);
    try {
      const root = await dirs.make();
      for (let i = 0; i < 8; i++) {
        await mkdir(join(root, `d${i}`));
        await writeFile(join(root, `d${i}`, 'x'), `${i}`);
      }
      const units = (n: number) =>
        Array.from({ length: 8 }, (_, i) => ({ rel: `d${i}`, deep: true, dest: join(root, `c${n}-${i}`) }));
      const capped = pool.run('clone', { source: root }, units(0), () => true, undefined, { maxThreads: 1 });
      // chunks are handed out as the job starts: one thread has one, the other waits
      assert.equal(pool.busyThreads, 1);
      const other = pool.run('clone', { source: root }, units(1), () => true);
      assert.equal(pool.busyThreads, 2, 'the idle thread takes the uncapped job meanwhile');
      await Promise.all([capped, other]);
      const free = pool.run('clone', { source: root }, units(2), () => true);
      assert.equal(pool.busyThreads, 2, 'uncapped, a job takes both');
      await free;
      for (const n of [0, 1, 2]) assert.equal(await readFile(join(root, `c${n}-7`, 'x'), 'utf8'), '7');
    } finally {
      await pool.close();
    }
  });

  it('runs each chunk with its own job context, jobs interleaved on the threads (a context is sent once per thread and job)', async () => {
    const pool = new WalkPool(2);
    try {
      // two roots, the same names, other bytes: a chunk run with the other job's context hashes the wrong file
      const roots = [await dirs.make(), await dirs.make()];
      const names = Array.from({ length: 24 }, (_, i) => `f${i}`);
      for (const [r, root] of roots.entries()) {
        for (const name of names) await writeFile(join(root, name), `${r}:${name}`);
      }
      const run = (r: number) => {
        const got = new Map<number, unknown>();
        const units = names.map((path, i) => ({ i, path }));
        const done = pool.run<{ i: number; path: string }, { i: number; hash: unknown }>(
          'hash',
          { root: roots[r] },
          units,
          (results) => {
            for (const { i, hash } of results) got.set(i, hash);
            return true;
          },
          undefined,
          { maxChunk: 1 },
        );
        return done.then(() => got);
      };
      for (let round = 0; round < 3; round++) {
        const [a, b] = await Promise.all([run(0), run(1)]);
        // and each alone, after: the threads hold another job's context by then
        const alone = await run(round % 2);
        for (const [i] of names.entries()) {
          assert.notDeepEqual(a.get(i), b.get(i), `f${i}: the two roots' hashes differ`);
          assert.deepEqual(
            alone.get(i),
            (round % 2 === 0 ? a : b).get(i),
            `f${i} hashed alone as beside the other job`,
          );
        }
        assert.equal(a.size, names.length);
        assert.equal(b.size, names.length);
      }
    } finally {
      await pool.close();
    }
  });

  it("keeps no job's context in its threads once the job is done (an idle thread holds a heap of its own for long)", async () => {
    const pool = new WalkPool(1);
    const session = new Session();
    session.connect();
    try {
      const root = await dirs.make();
      // a context as a derive's: what the threads hold of it is found in the thread's heap by this string
      const marker = `walk-context-${'m'.repeat(32)}-${process.pid}`;
      await pool.run('list', { skip: [marker] }, [root], () => true);
      // a snapshot taken while the thread still handles its last messages finds them on its stack: it is
      // taken again until the thread is idle, and a context the thread keeps is in every one
      let held = true;
      for (let tries = 0; tries < 10 && held; tries++) {
        if (tries > 0) await new Promise((r) => setTimeout(r, 100));
        const snapshot = await threadHeapSnapshot(session);
        assert.ok(snapshot.length > 0);
        held = snapshot.includes(marker);
      }
      assert.ok(!held, 'the idle thread still holds the context of the job done');
    } finally {
      session.disconnect();
      await pool.close();
    }
  });

  it('does not keep a process alive once its walks are done', async () => {
    const script = `
      import { compareTrees } from ${JSON.stringify(new URL('../../../src/tree/compare-trees.js', import.meta.url).href)};
      const d = await compareTrees(process.argv[2], process.argv[3]);
      console.log(d.length);`;
    const root = await dirs.make();
    await oneTopTree(root);
    await writeFile(join(root, 'walk.mjs'), script);
    const out = execFileSync(process.execPath, [join(root, 'walk.mjs'), root, join(root, 'none')], {
      encoding: 'utf8',
      timeout: 20_000,
    });
    assert.ok(Number(out.trim()) > 0);
  });
});

const made: string[] = [];
/** Make every tree's directories writable again, so they can be removed. */
async function execChmod(): Promise<void> {
  for (const dir of made) execFileSync('chmod', ['-R', 'u+w', dir]);
}

/** Make a tree's directories writable again, so it can be changed and removed. */
async function chmodTree(root: string): Promise<void> {
  execFileSync('chmod', ['-R', 'u+w', root]);
}

/** A heap snapshot (taken after a full collection: what is still reachable) of the one worker thread running. */
async function threadHeapSnapshot(session: Session): Promise<string> {
  const post = (method: string, params: object = {}) =>
    new Promise<unknown>((resolve, reject) =>
      session.post(method, params, (err, res) => (err ? reject(err) : resolve(res))),
    );
  // the thread is unref'd, and attaching to it is an event: the test holds the process open meanwhile
  const open = setInterval(() => {}, 1000);
  try {
    const attached = new Promise<string>((resolve) =>
      session.once('NodeWorker.attachedToWorker', (m) => resolve((m.params as { sessionId: string }).sessionId)),
    );
    await post('NodeWorker.enable', { waitForDebuggerOnStart: false });
    const sessionId = await attached;
    let snapshot = '';
    let done = () => {};
    const taken = new Promise<void>((resolve) => {
      done = resolve;
    });
    const heard = (m: { params: unknown }) => {
      const msg = JSON.parse((m.params as { message: string }).message);
      if (msg.method === 'HeapProfiler.addHeapSnapshotChunk') snapshot += msg.params.chunk;
      if (msg.id === 1) done();
    };
    session.on('NodeWorker.receivedMessageFromWorker', heard);
    const message = JSON.stringify({ id: 1, method: 'HeapProfiler.takeHeapSnapshot', params: {} });
    await post('NodeWorker.sendMessageToWorker', { sessionId, message });
    await taken;
    session.off('NodeWorker.receivedMessageFromWorker', heard);
    await post('NodeWorker.disable');
    return snapshot;
  } finally {
    clearInterval(open);
  }
}
