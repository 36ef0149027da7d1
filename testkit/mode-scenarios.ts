/**
 * Scenarios about the modes of a tree, run by test/tree/tree-modes.test.ts
 * in a child process as an unprivileged user (runUnprivileged): the kernel
 * checks permissions only for such a user. Each scenario throws (and the
 * process exits non-zero) on the first thing that is not as it must be.
 *
 * Run as: node mode-scenarios.js SCENARIO DIR
 */
import { randomBytes } from 'node:crypto';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { chmod, lstat, mkdir, readFile, readdir, rename, rm, unlink, utimes, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import express from 'express';
import type { SwapRecord } from '../src/agent/agent.js';
import { compareTreesSync } from '../src/tree/compare-trees.js';
import { walkPool } from '../src/tree/walk-pool.js';
import { readEpochFile } from '../src/store/epoch-file.js';
import { fleetRouter } from '../src/fleet/coordinator/fleet-api.js';
import { readManifest } from '../src/tree/manifest.js';
import { pullSnapshot } from '../src/fleet/host/pull.js';
import { Snapshots } from '../src/fleet/coordinator/snapshots.js';
import { isReservedRootName, storeLayout } from '../src/store/store-layout.js';
import { startTestAgent } from './agent.js';
import { memoryLogger } from './app.js';
import type { TempStore } from './store.js';

const RO = 0o555;

/** Leave in `slot`'s temp directory what a clone cut short by a crash leaves: read-only directories. */
async function crashLeftovers(slot: string): Promise<void> {
  await fill(join(slot, '.mirrorswap-tmp'), { 'cut.0/ro/f.txt': 'f' });
  await chmod(join(slot, '.mirrorswap-tmp/cut.0/ro'), RO);
  await chmod(join(slot, '.mirrorswap-tmp/cut.0'), RO);
}

/** Write `files` under `root`, making parents as needed (all writable while being filled). */
async function fill(root: string, files: Record<string, string>): Promise<void> {
  for (const [path, content] of Object.entries(files)) {
    await mkdir(dirname(join(root, path)), { recursive: true });
    await writeFile(join(root, path), content);
  }
}

/** Run `work` with the directories `dirs` (under `root`) writable, then give them `mode` again. */
async function underReadOnly(root: string, dirs: string[], work: () => Promise<void>, mode = RO): Promise<void> {
  for (const d of dirs) await chmod(join(root, d), 0o755);
  await work();
  for (const d of [...dirs].reverse()) await chmod(join(root, d), mode).catch(() => {});
}

const modeOf = async (path: string) => (await lstat(path)).mode & 0o7777;

/** Every entry below `root` (its reserved entries and `except` left out) with its type and mode, walked here. */
async function modesOf(root: string, except: string[], rel = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(join(root, rel), { withFileTypes: true })) {
    const path = rel === '' ? e.name : `${rel}/${e.name}`;
    if (isReservedRootName(path) || except.includes(path)) continue;
    const st = await lstat(join(root, path));
    out.push(`${path} ${st.isDirectory() ? 'dir' : 'file'} ${(st.mode & 0o7777).toString(8)}`);
    if (st.isDirectory()) out.push(...(await modesOf(root, except, path)));
  }
  return out.sort();
}

/** A master with read-only directories at several depths through init, journal and full syncs. */
async function agentScenario(dir: string): Promise<void> {
  const layout = storeLayout(join(dir, 'store'));
  for (const d of [layout.master, layout.slots.a, layout.slots.b, layout.serversDir])
    await mkdir(d, { recursive: true });
  const m = layout.master;
  await fill(m, {
    'index.html': 'home',
    'ro/a.txt': 'a1',
    'ro/deep/ro2/b.txt': 'b1',
    'ro/deep/ro2/ro3/c.txt': 'c1',
    'open/x/d.txt': 'd1',
    'gone/ro/e.txt': 'e1',
  });
  await mkdir(join(m, 'empty-ro'));
  for (const d of ['ro/deep/ro2/ro3', 'ro/deep/ro2', 'ro', 'empty-ro', 'gone/ro', 'gone']) await chmod(join(m, d), RO);

  // init copies master into both slots: it failed with EACCES on the first read-only directory
  let agent = await startTestAgent({ ...layout } as TempStore, { auto: false });
  const mounted = async () => {
    const epoch = await readEpochFile(layout.epochFile);
    assert.ok(epoch);
    return layout.slots[epoch.mounted];
  };
  const equal = async (why: string, except: string[] = []) => {
    const diffs = compareTreesSync(m, await mounted()).filter(
      (d) => !except.some((p) => d.path === p || d.path.startsWith(`${p}/`)),
    );
    assert.deepEqual(diffs, [], `${why}: the mounted copy is master`);
    assert.deepEqual(await modesOf(await mounted(), except), await modesOf(m, except), `${why}: modes`);
  };
  const sync = async (why: string, full = false): Promise<SwapRecord> => {
    const res = await agent.call('POST', `/v1/sync?wait=1${full ? '&full=1' : ''}`);
    const record = (await res.json()) as SwapRecord;
    assert.equal(record.result, 'ok', `${why}: ${JSON.stringify(record.error ?? record)}`);
    return record;
  };
  /** Two syncs: one into each slot, so both have been written under the read-only directories. */
  const syncBoth = async (why: string, full = false, except: string[] = []) => {
    const records = [await sync(`${why} (1)`, full), await sync(`${why} (2)`, full)];
    await equal(why, except);
    return records;
  };
  try {
    await equal('after init');
    assert.equal(await modeOf(join(layout.slots.a, 'ro/deep/ro2/ro3')), RO);
    assert.equal(await modeOf(join(layout.slots.b, 'empty-ro')), RO);

    // a restart over what a crash mid-clone left in both slots' temp directories
    await agent.close();
    await crashLeftovers(layout.slots.a);
    await crashLeftovers(layout.slots.b);
    agent = await startTestAgent({ ...layout } as TempStore, { auto: false });

    // a file changed under read-only directories, one added: journal syncs
    await underReadOnly(m, ['ro', 'ro/deep/ro2', 'ro/deep/ro2/ro3'], async () => {
      await writeFile(join(m, 'ro/a.txt'), 'a2');
      await writeFile(join(m, 'ro/deep/ro2/ro3/c.txt'), 'c2');
      await writeFile(join(m, 'ro/deep/ro2/new.txt'), 'new');
      await fill(m, { 'ro/deep/ro2/newdir/x.txt': 'x' });
      await chmod(join(m, 'ro/deep/ro2/newdir'), RO);
    });
    const journal = await syncBoth('a journal sync under read-only directories');
    assert.equal(journal[1]?.mode, 'incremental');
    assert.equal(await readFile(join(await mounted(), 'ro/deep/ro2/ro3/c.txt'), 'utf8'), 'c2');

    // the same by full compare
    await underReadOnly(m, ['ro'], async () => {
      await writeFile(join(m, 'ro/a.txt'), 'a3');
      // a new tree under a read-only directory: cloned whole, and renamed into it
      await fill(m, { 'ro/newtree/in/f.txt': 'f', 'ro/newtree/g.txt': 'g' });
      await chmod(join(m, 'ro/newtree/in'), RO);
      await chmod(join(m, 'ro/newtree'), RO);
    });
    const full = await syncBoth('a full sync under read-only directories', true);
    assert.equal(full[1]?.mode, 'full');
    assert.equal(await modeOf(join(await mounted(), 'ro/newtree/in')), RO);

    // writes through the agent's API under read-only directories of master: a batch left unfinished
    // by a mode would stop every later write and sync
    for (const [method, path, body] of [
      ['PUT', 'ro/api.txt', 'by the API'],
      ['PUT', 'ro/deep/ro2/ro3/c.txt', 'c by the API'],
      ['PUT', 'ro/deep/ro2/made/by/api.txt', 'new directories under a read-only one'],
      ['DELETE', 'ro/deep/ro2/new.txt', undefined],
      ['DELETE', 'ro/newtree', undefined],
    ] as const) {
      const res = await agent.call(method, `/v1/files/${path}`, body === undefined ? {} : { body });
      assert.ok(res.status < 300, `${method} ${path}: ${res.status} ${await res.text()}`);
    }
    assert.equal(await modeOf(join(m, 'ro')), RO, 'master keeps its modes');
    assert.equal(await modeOf(join(m, 'ro/deep/ro2/ro3')), RO);
    await syncBoth('writes by the API under read-only directories');
    assert.equal(
      await readFile(join(await mounted(), 'ro/deep/ro2/made/by/api.txt'), 'utf8'),
      'new directories under a read-only one',
    );

    // modes that change between syncs: a writable directory made read-only, and the reverse
    await chmod(join(m, 'open/x'), RO);
    await chmod(join(m, 'ro'), 0o755);
    await syncBoth('directory modes changed');
    await underReadOnly(m, ['open/x'], async () => {
      await writeFile(join(m, 'open/x/d.txt'), 'd2');
      await writeFile(join(m, 'ro/a.txt'), 'a4');
    });
    await syncBoth('a file changed under a directory made read-only since');
    await chmod(join(m, 'ro'), RO);

    // new read-only trees: by the journal (a directory path), then by a full sync (a whole clone)
    await fill(m, { 'new1/in/f.txt': 'f', 'new1/g.txt': 'g' });
    await chmod(join(m, 'new1/in'), RO);
    await chmod(join(m, 'new1'), RO);
    await syncBoth('a new read-only tree, journal');
    await fill(m, { 'new2/in/f.txt': 'f', 'new2/g.txt': 'g' });
    await chmod(join(m, 'new2/in'), RO);
    await chmod(join(m, 'new2'), RO);
    await syncBoth('a new read-only tree, full', true);
    await chmod(join(m, 'new2/in'), 0o750);
    await chmod(join(m, 'new2'), 0o751);
    await chmod(join(m, 'open/x'), 0o755);
    await syncBoth('directory modes changed, full', true);

    // a read-only tree deleted, a read-only directory replaced by a file, a file under one removed
    await underReadOnly(m, ['gone', 'gone/ro'], async () => {
      await unlink(join(m, 'gone/ro/e.txt'));
    });
    await syncBoth('a file removed under read-only directories');
    await chmod(join(m, 'gone'), 0o755);
    await chmod(join(m, 'gone/ro'), 0o755);
    await rm(join(m, 'gone'), { recursive: true });
    await chmod(join(m, 'empty-ro'), 0o755);
    await rm(join(m, 'empty-ro'), { recursive: true });
    await writeFile(join(m, 'empty-ro'), 'now a file');
    await syncBoth('read-only trees deleted and replaced');

    // what the agent cannot read: reported by path and counted, never a wedge
    await fill(m, { 'secret.txt': 'no', 'locked/inside.txt': 'no' });
    await chmod(join(m, 'secret.txt'), 0);
    await chmod(join(m, 'locked'), 0);
    const unreadable = ['locked', 'secret.txt'];
    for (const record of await syncBoth('unreadable entries in master', false, unreadable)) {
      assert.equal(record.copied.unreadable, 2, JSON.stringify(record.unreadable));
      assert.deepEqual([...(record.unreadable ?? [])].sort(), unreadable);
    }
    for (const record of await syncBoth('unreadable entries, full sync', true, unreadable))
      assert.equal(record.copied.unreadable, 2, JSON.stringify(record.unreadable));
    const status = (await (await agent.call('GET', '/v1/status')).json()) as { lastSwaps: SwapRecord[] };
    const latest = status.lastSwaps.reduce((x, y) => (y.epoch > x.epoch ? y : x));
    assert.equal(latest.copied.unreadable, 2, 'status shows it');
    const metrics = await (await agent.call('GET', '/metrics')).text();
    assert.match(metrics, /mirrorswap_agent_unreadable_entries 2/);
    assert.ok(
      agent.logs.lines.some(
        (l) => l.level === 'error' && /cannot read/.test(l.msg) && JSON.stringify(l.obj).includes('secret.txt'),
      ),
      'logged by path',
    );
    await writeFile(join(m, 'index.html'), 'home 2');
    // nothing in a directory the agent may not read can be copied: not watching it is no gap in what
    // the journal knows (its parent's watch sees its mode change), so syncs need not compare whole trees
    const gaps = async () =>
      /mirrorswap_agent_journal_gaps_total (\d+)/.exec(await (await agent.call('GET', '/metrics')).text())?.[1];
    const gapsBefore = await gaps();
    assert.match(gapsBefore ?? '', /^\d+$/);
    // one made unreadable before it came under this name: never watched as it (the others were,
    // before their chmod); a directory is moved within its parent without write on itself
    await fill(m, { 'locked-soon/inside.txt': 'no' });
    await chmod(join(m, 'locked-soon'), 0);
    await rename(join(m, 'locked-soon'), join(m, 'locked2'));
    unreadable.push('locked2');
    await syncBoth('a later change syncs', false, unreadable);
    // syncs that touch none of them still count and list every one still unreadable (a sync from the
    // journal looks only at what it names)
    await writeFile(join(m, 'index.html'), 'home 3');
    const [, later] = await syncBoth('a change elsewhere syncs', false, unreadable);
    assert.deepEqual([...(later?.unreadable ?? [])].sort(), [...unreadable].sort(), 'still listed');
    assert.match(await (await agent.call('GET', '/metrics')).text(), /mirrorswap_agent_unreadable_entries 3/);
    assert.equal(await gaps(), gapsBefore, 'no gap logged for a directory the agent may not read');
    // the comparison a restart makes finds them different, but they are no change the journal missed
    await agent.close();
    agent = await startTestAgent({ ...layout } as TempStore, { auto: false });
    const reconciled = async () => {
      const status = (await (await agent.call('GET', '/v1/status')).json()) as {
        changeTracking: { lastReconcile: { found: number } | null };
      };
      return status.changeTracking.lastReconcile;
    };
    for (let i = 0; i < 200 && (await reconciled()) === null; i++) await new Promise((r) => setTimeout(r, 50));
    assert.equal((await reconciled())?.found, 0, 'no unreadable entry is taken for a change the journal missed');
    await chmod(join(m, 'secret.txt'), 0o644);
    await chmod(join(m, 'locked'), 0o755);
    await chmod(join(m, 'locked2'), 0o755);
    const readable = await syncBoth('readable again');
    assert.equal(readable[1]?.copied.unreadable, 0);
    assert.equal(await readFile(join(await mounted(), 'locked/inside.txt'), 'utf8'), 'no');
    assert.equal(await readFile(join(await mounted(), 'locked2/inside.txt'), 'utf8'), 'no', 'seen once readable');
  } finally {
    await agent.close();
  }
}

/** A host slot holding read-only directories, pulled into again. */
async function pullScenario(dir: string): Promise<void> {
  const token = `fleet-token-${randomBytes(16).toString('hex')}`;
  const slots = { a: join(dir, 'coord/a'), b: join(dir, 'coord/b') };
  const into = join(dir, 'host/slot');
  for (const d of [slots.a, slots.b, into]) await mkdir(d, { recursive: true });
  const snapshots = new Snapshots(slots, join(dir, 'coord/manifests'));
  const app = express();
  app.use('/v1/fleet', fleetRouter(snapshots, token, memoryLogger()));
  const server = createServer(app);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const from = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const time = new Date('2026-01-02T03:04:05Z');
  const version = async (root: string, files: Record<string, string>, readOnly: string[]) => {
    await chmod(root, 0o755);
    for (const d of ['ro', 'ro/sub', 'other']) await chmod(join(root, d), 0o755).catch(() => {});
    await rm(root, { recursive: true, force: true });
    await mkdir(root);
    await fill(root, files);
    for (const p of Object.keys(files)) await utimes(join(root, p), time, time);
    for (const d of readOnly) await chmod(join(root, d), RO);
  };
  const treeOf = async (root: string) =>
    (await readManifest(root)).map(
      (e) => `${e.type} ${e.path} ${e.mode.toString(8)} ${e.size} ${e.type === 'dir' ? '' : e.mtimeMs}`,
    );
  const pull = (snapshot: string, base: string | null) =>
    pullSnapshot({ from, token, snapshot, base, into, durable: false, timeoutMs: 10_000 });
  try {
    await version(slots.a, { 'ro/f.txt': 'f1', 'ro/sub/g.txt': 'g1', 'other/h.txt': 'h' }, ['ro/sub', 'ro']);
    const first = await snapshots.take('a');
    await pull(first, null);
    assert.deepEqual(await treeOf(into), await treeOf(slots.a), 'first pull');
    assert.equal(await modeOf(join(into, 'ro/sub')), RO);

    // a later pull changes files under the read-only directories (it failed with EACCES)
    await version(slots.b, { 'ro/f.txt': 'f2', 'ro/sub/g.txt': 'g2', 'ro/sub/new.txt': 'n', 'other/h.txt': 'h' }, [
      'ro/sub',
      'ro',
    ]);
    const second = await snapshots.take('b');
    const delta = await pull(second, first);
    assert.equal(delta.full, false);
    assert.deepEqual(await treeOf(into), await treeOf(slots.b), 'a delta under read-only directories');

    // a read-only tree replaced by a file, modes swapped: ro writable, other read-only
    await version(slots.a, { 'ro/f.txt': 'f3', 'ro/sub': 'a file now', 'other/h.txt': 'h2' }, ['other']);
    const third = await snapshots.take('a');
    await pull(third, second);
    assert.deepEqual(await treeOf(into), await treeOf(slots.a), 'a read-only tree replaced by a file');

    // a whole compare over a slot with read-only directories and strays under them
    await chmod(join(into, 'other'), 0o755);
    await writeFile(join(into, 'other/stray.txt'), 'stray');
    await mkdir(join(into, 'other/stray-ro'));
    await writeFile(join(into, 'other/stray-ro/x'), 'x');
    await chmod(join(into, 'other/stray-ro'), RO);
    await chmod(join(into, 'other'), RO);
    await version(slots.b, { 'ro/f.txt': 'f4', 'ro/sub/g.txt': 'g4', 'other/h.txt': 'h3' }, ['ro/sub', 'ro', 'other']);
    const fourth = await snapshots.take('b');
    await pull(fourth, null);
    assert.deepEqual(await treeOf(into), await treeOf(slots.b), 'a whole compare repairs the slot');
  } finally {
    await new Promise((r) => server.close(r));
  }
}

/**
 * Slots whose modes drifted (an operator's chmod): a directory of mode 0000,
 * a file of mode 0000, a slot root of 0555, read-only directories in a host
 * slot's temp directory. A full sync and a whole pull repair them; a pull
 * under a read-only root is not stopped by it.
 */
async function driftScenario(dir: string): Promise<void> {
  const layout = storeLayout(join(dir, 'store'));
  for (const d of [layout.master, layout.slots.a, layout.slots.b, layout.serversDir])
    await mkdir(d, { recursive: true });
  const m = layout.master;
  await fill(m, { 'd/e/f.txt': 'f', 'g.txt': 'g' });
  const agent = await startTestAgent({ ...layout } as TempStore, { auto: false });
  try {
    const epoch = await readEpochFile(layout.epochFile);
    assert.ok(epoch);
    const standby = layout.slots[epoch.mounted === 'a' ? 'b' : 'a'];
    await chmod(join(standby, 'd/e'), 0o000);
    await chmod(join(standby, 'g.txt'), 0o000);
    const record = (await (await agent.call('POST', '/v1/sync?wait=1&full=1')).json()) as SwapRecord;
    assert.equal(record.result, 'ok', `a full sync over a 0000 directory: ${JSON.stringify(record.error ?? record)}`);
    assert.deepEqual(compareTreesSync(m, standby), [], 'the full sync repaired the slot');
    // a slot root whose mode denies its owner write: journal and full syncs into it
    const other = layout.slots[epoch.mounted];
    await chmod(other, RO);
    await writeFile(join(m, 'new.txt'), 'n');
    for (const full of [false, true]) {
      const r = (await (await agent.call('POST', `/v1/sync?wait=1${full ? '&full=1' : ''}`)).json()) as SwapRecord;
      assert.equal(r.result, 'ok', `a sync into a 0555 slot root: ${JSON.stringify(r.error ?? r)}`);
    }
    assert.deepEqual(compareTreesSync(m, other), [], 'synced into a 0555 slot root');
  } finally {
    await agent.close();
  }

  // a host: a whole pull over a 0000 directory and file, then pulls under a read-only root
  const token = `fleet-token-${randomBytes(16).toString('hex')}`;
  const slots = { a: join(dir, 'coord/a'), b: join(dir, 'coord/b') };
  const into = join(dir, 'host/slot');
  for (const d of [slots.a, slots.b, into]) await mkdir(d, { recursive: true });
  await fill(slots.a, { 'd/e/f.txt': 'f', 'g.txt': 'g' });
  await fill(slots.b, { 'd/e/f.txt': 'f2', 'g.txt': 'g', 'h.txt': 'h' });
  await fill(into, { 'd/e/f.txt': 'f', 'g.txt': 'g' });
  await chmod(join(into, 'd/e'), 0o000);
  await chmod(join(into, 'g.txt'), 0o000);
  // and read-only directories in its temp directory (a store an agent left after a crash, say)
  await crashLeftovers(into);
  const snapshots = new Snapshots(slots, join(dir, 'coord/manifests'));
  const app = express();
  app.use('/v1/fleet', fleetRouter(snapshots, token, memoryLogger()));
  const server = createServer(app);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const from = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const pull = (snapshot: string, base: string | null) =>
    pullSnapshot({ from, token, snapshot, base, into, durable: false, timeoutMs: 10_000 });
  try {
    const first = await snapshots.take('a');
    await pull(first, null);
    assert.deepEqual(compareTreesSync(slots.a, into), [], 'a whole pull repaired the slot');
    await chmod(into, RO);
    const second = await snapshots.take('b');
    await pull(second, first);
    assert.deepEqual(compareTreesSync(slots.b, into), [], 'a delta under a read-only slot root');
    assert.equal(await modeOf(into), RO, 'the root given its mode back');
    await pull(second, null);
    assert.deepEqual(compareTreesSync(slots.b, into), [], 'a whole pull under a read-only slot root');
  } finally {
    await new Promise((r) => server.close(r));
  }
}

const scenarios: Record<string, (dir: string) => Promise<void>> = {
  agent: agentScenario,
  pull: pullScenario,
  drift: driftScenario,
};

const [name, dir] = process.argv.slice(2);
const run = name ? scenarios[name] : undefined;
if (run && dir) {
  try {
    await run(dir);
    await walkPool.close();
    process.exit(0);
  } catch (err) {
    console.error(err);
    process.exit(1);
  }
}
