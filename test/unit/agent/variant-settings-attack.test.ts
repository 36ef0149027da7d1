import assert from 'node:assert/strict';
import { lstat, mkdir, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import type { AgentOptions } from '../../../src/agent/agent.js';
import { lstatOrNull } from '../../../src/core/lstat-or-null.js';
import { readCopyIndex } from '../../../src/store/recent-records.js';
import { readEpochFile } from '../../../src/store/epoch-file.js';
import { META_DIR_NAME, isReservedRootName } from '../../../src/store/store-layout.js';
import { startTestAgent, syncOk } from '../../../testkit/agent.js';
import { type TempStore, tempStore } from '../../../testkit/store.js';
import { checkCopyIndex, compressibleText } from '../../../testkit/variants.js';

const files: Record<string, string> = {
  'js/app.js': compressibleText('app', 20_000),
  'js/old.js': compressibleText('old', 20_000),
  'js/lib.js': compressibleText('lib', 20_000),
  'css/site.css': compressibleText('site', 8_000),
  'page.html': compressibleText('page', 8_000),
  becomes: compressibleText('becomes', 8_000),
};

/** Every file of both copies named `X.gz` or `X.br` beside an `X`, that master does not hold. */
async function madeOnDisk(store: TempStore, slot: 'a' | 'b' | 'c', dir = ''): Promise<string[]> {
  const out: string[] = [];
  const root = store.slots[slot];
  const names = await readdir(join(root, dir), { withFileTypes: true });
  const all = new Set(names.map((e) => e.name));
  for (const e of names) {
    if (dir === '' && isReservedRootName(e.name)) continue;
    const rel = dir === '' ? e.name : `${dir}/${e.name}`;
    if (e.isDirectory()) out.push(...(await madeOnDisk(store, slot, rel)));
    else if (/\.(br|gz)$/.test(e.name) && all.has(e.name.slice(0, -3)) && !(await lstatOrNull(join(store.master, rel))))
      out.push(rel);
  }
  return out.sort();
}

async function syncs(store: TempStore, options: Partial<AgentOptions>, n: number, query = ''): Promise<void> {
  const agent = await startTestAgent(store, { watchMaster: false, ...options });
  try {
    for (let i = 0; i < n; i++) await syncOk(agent, query);
  } finally {
    await agent.close();
  }
}

/** Master changed while no agent ran: a file edited, one deleted, one made a directory, one added. */
async function changeMaster(store: TempStore): Promise<void> {
  await writeFile(join(store.master, 'js/app.js'), compressibleText('app2', 20_000));
  await rm(join(store.master, 'js/old.js'));
  await rm(join(store.master, 'becomes'));
  await mkdir(join(store.master, 'becomes'));
  await writeFile(join(store.master, 'becomes/inner.js'), compressibleText('inner', 8_000));
  await writeFile(join(store.master, 'js/new.js'), compressibleText('new', 20_000));
}

for (const [name, query, keep] of [
  ['a journal sync', '', 2],
  ['a full sync', '&full=1', 2],
  ['a journal sync, --keep 3', '', 3],
] as const) {
  describe(`variant settings changed with master changes, then ${name}`, () => {
    it('leaves in each copy only the variants the new settings select, each decoding to its original', async () => {
      const store = await tempStore();
      try {
        await store.fill('master', files);
        // master's own gz sibling: never removed, whatever the settings
        await writeFile(join(store.master, 'js/lib.js.gz'), gzipSync(files['js/lib.js'] as string));
        const slots = keep === 3 ? (['a', 'b', 'c'] as const) : (['a', 'b'] as const);
        await syncs(store, { keep }, slots.length);
        await changeMaster(store);
        await syncs(store, { keep, variantEncodings: ['br'], variantTypes: ['js', 'css'] }, slots.length, query);
        for (const slot of slots) {
          assert.deepEqual(
            await madeOnDisk(store, slot),
            ['becomes/inner.js.br', 'css/site.css.br', 'js/app.js.br', 'js/lib.js.br', 'js/new.js.br'],
            slot,
          );
          assert.equal(await checkCopyIndex(store.slots[slot]), 6, slot); // and js/lib.js.gz, master's
          assert.equal((await readCopyIndex(store.slots[slot], ''))?.files['page.html']?.variants, undefined, slot);
        }
        // back: gzip and html again
        await syncs(store, { keep }, slots.length, query);
        for (const slot of slots) assert.equal(await checkCopyIndex(store.slots[slot]), 12, slot);
      } finally {
        await store.dispose();
      }
    });
  });
}

describe("a copy whose meta directory is a link to the other copy's (a hand's drift)", () => {
  it('is not taken to follow the selection recorded there: its next sync brings it to the settings', async () => {
    const store = await tempStore();
    try {
      await store.fill('master', { 'js/app.js': files['js/app.js'] as string });
      await syncs(store, {}, 2);
      // gzip turned off: one sync, into the standby, which is mounted
      await syncs(store, { variantEncodings: ['br'] }, 1);
      const mounted = (await readEpochFile(store.epochFile))?.mounted as 'a' | 'b';
      const standby = mounted === 'a' ? 'b' : 'a';
      assert.ok(await lstatOrNull(join(store.slots[standby], 'js/app.js.gz')));
      // the standby's meta directory made a link to the mounted copy's, which records brotli alone
      await rm(join(store.slots[standby], META_DIR_NAME), { recursive: true });
      await symlink(join(store.slots[mounted], META_DIR_NAME), join(store.slots[standby], META_DIR_NAME));
      await syncs(store, { variantEncodings: ['br'] }, 1);
      assert.equal(await lstatOrNull(join(store.slots[standby], 'js/app.js.gz')), null, 'a gz variant left');
      assert.ok((await lstat(join(store.slots[standby], META_DIR_NAME))).isDirectory());
      assert.equal(await checkCopyIndex(store.slots[standby]), 1);
    } finally {
      await store.dispose();
    }
  });
});
