import assert from 'node:assert/strict';
import { lstat, mkdir, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { SwapRecord } from '../../src/agent/agent.js';
import { compareTreesSync } from '../../src/tree/compare-trees.js';
import { readEpochFile, slotRoot } from '../../src/store/epoch-file.js';
import { type AgentProc, startAgentProc, writeTokenFile } from '../../testkit/cluster.js';
import { seeded } from '../../testkit/seeded.js';
import { type TempStore, tempStore } from '../../testkit/store.js';

const STEPS = Number(process.env.MIRRORSWAP_RANDOM_STEPS ?? 80);
const DIRS = ['d0', 'd1', 'd1/sub', 'd2'];
const NAMES = ['a.txt', 'b.html', 'c.css', 'sub', 'd.js'];

/**
 * Every path a change can take to master, in a random order: API writes and
 * deletes, direct writes, deletes and directory renames (the deploy pattern
 * among them), agent restarts (clean and kill -9), ordinary and full syncs.
 * After every sync the mounted copy must equal master, file for file.
 */
// once as by default, once keeping four releases: a copy reused releases behind takes what master
// kept since the mounted copy was made by links from it, unread (copy-into-slot.ts, settledPaths)
for (const keep of [[], ['--keep', '4']])
  describe(`randomized: the mounted copy equals master after every sync${keep.length > 0 ? ` (${keep.join(' ')})` : ''}`, () => {
    let store: TempStore;
    let tokenFile: string;
    let token: string;
    let agent: AgentProc;
    const rng = seeded();
    const log: string[] = [];

    before(async () => {
      store = await tempStore();
      ({ file: tokenFile, token } = await writeTokenFile(store));
      agent = await startAgentProc(store, tokenFile, token, keep);
    });
    after(async () => {
      await agent.proc.kill();
      await store.dispose();
    });

    const randomPath = () => `${rng.pick(DIRS)}/${rng.pick(NAMES)}`;
    const content = () => `v${rng.int(1_000_000)}`.repeat(1 + rng.int(20));
    const api = (method: string, path: string, body?: string) =>
      fetch(`${agent.url}/v1/files/${path}`, {
        method,
        headers: { authorization: `Bearer ${token}` },
        ...(body !== undefined ? { body } : {}),
      }).then(async (r) => `${r.status}${r.ok ? '' : ` ${await r.text()}`}`);
    const existing = async (): Promise<string[]> => {
      const out: string[] = [];
      const walk = async (rel: string) => {
        for (const e of await readdir(join(store.master, rel), { withFileTypes: true }).catch(() => [])) {
          const child = rel ? `${rel}/${e.name}` : e.name;
          if (child === '.mirrorswap-tmp') continue;
          out.push(child);
          if (e.isDirectory()) await walk(child);
        }
      };
      await walk('');
      return out;
    };
    /** Write a file directly, making what is in the way of its parents a directory. */
    const writeDirect = async (rel: string, text: string) => {
      const parts = rel.split('/');
      for (let i = 1; i < parts.length; i++) {
        const dir = join(store.master, ...parts.slice(0, i));
        const st = await lstat(dir).catch(() => null);
        if (st && !st.isDirectory()) await rm(dir);
      }
      await mkdir(join(store.master, ...parts.slice(0, -1)), { recursive: true });
      const st = await lstat(join(store.master, rel)).catch(() => null);
      if (st?.isDirectory()) await rm(join(store.master, rel), { recursive: true });
      await writeFile(join(store.master, rel), text);
    };

    const steps: Record<string, () => Promise<string>> = {
      async apiPut() {
        const p = randomPath();
        return `PUT ${p}: ${await api('PUT', p, content())}`;
      },
      async apiDelete() {
        const all = await existing();
        if (all.length === 0) return 'api delete: nothing';
        const p = rng.pick(all);
        return `DELETE ${p}: ${await api('DELETE', p)}`;
      },
      async directWrite() {
        const p = randomPath();
        await writeDirect(p, content());
        return `direct write ${p}`;
      },
      async directDelete() {
        const all = await existing();
        if (all.length === 0) return 'direct delete: nothing';
        const p = rng.pick(all);
        await rm(join(store.master, p), { recursive: true, force: true });
        return `direct rm -r ${p}`;
      },
      async deploy() {
        // build aside, move the live directory away, rename the build in, remove the old
        const dir = rng.pick(['d0', 'd2', 'site']);
        const build = join(store.root, `build-${rng.int(1e9)}`);
        const n = 1 + rng.int(5);
        await mkdir(join(build, 'nested'), { recursive: true });
        for (let i = 0; i < n; i++)
          await writeFile(join(build, rng.next() < 0.5 ? `f${i}` : `nested/f${i}`), content());
        const live = join(store.master, dir);
        const old = `${live}.old-${rng.int(1e9)}`;
        const had = await lstat(live).catch(() => null);
        if (had) await rename(live, old);
        await rename(build, live);
        if (had) await rm(old, { recursive: true, force: true });
        return `deploy into ${dir} (${n} files)`;
      },
      async renameDir() {
        const all = (await existing()).filter((p) => !p.includes('/'));
        if (all.length === 0) return 'rename: nothing';
        const from = rng.pick(all);
        const to = `r${rng.int(4)}`;
        await rm(join(store.master, to), { recursive: true, force: true });
        await rename(join(store.master, from), join(store.master, to)).catch(() => {});
        return `rename ${from} -> ${to}`;
      },
      async restart() {
        const hard = rng.next() < 0.5;
        await agent.proc.kill(hard ? 'SIGKILL' : 'SIGTERM');
        if (rng.next() < 0.7) await writeDirect(randomPath(), `while down ${content()}`);
        agent = await startAgentProc(store, tokenFile, token, keep);
        return `restart (${hard ? 'kill -9' : 'SIGTERM'})`;
      },
    };
    const kinds = Object.keys(steps);

    it(`holds over ${STEPS} random steps`, async () => {
      for (let i = 0; i < STEPS; i++) {
        const kind = rng.pick(kinds) as keyof typeof steps;
        log.push(`${i}: ${await (steps[kind] as () => Promise<string>)()}`);
        if (rng.next() < 0.35 || i === STEPS - 1) {
          const full = rng.next() < 0.15;
          const res = await fetch(`${agent.url}/v1/sync?wait=1${full ? '&full=1' : ''}`, {
            method: 'POST',
            headers: { authorization: `Bearer ${token}` },
          });
          const record = (await res.json()) as SwapRecord;
          log.push(`${i}: sync${full ? ' --full' : ''} -> ${record.result} ${record.mode} epoch ${record.epoch}`);
          const context = () => `${rng.describe()}\n${log.slice(-25).join('\n')}`;
          assert.equal(record.result, 'ok', `${JSON.stringify(record.error)}\n${context()}`);
          const epoch = await readEpochFile(store.epochFile);
          assert.ok(epoch);
          const diffs = compareTreesSync(store.master, slotRoot(epoch, store.epochFile));
          assert.deepEqual(diffs, [], `the mounted copy differs from master after step ${i}\n${context()}`);
        }
      }
    });
  });
