import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, rm, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { frameHeader } from '../../../src/fleet/coordinator/fleet-api.js';
import { pullSnapshot } from '../../../src/fleet/host/pull.js';
import { writeDirectoryIndexSync } from '../../../src/store/content-index.js';
import { readCopyIndex } from '../../../src/store/recent-records.js';
import { META_DIR_NAME, TEMP_DIR_NAME } from '../../../src/store/store-layout.js';
import type { ManifestEntry } from '../../../src/tree/manifest.js';
import { tempDirs } from '../../../testkit/store.js';
import { stubCoordinator } from '../../../testkit/stub-coordinator.js';

const temp = tempDirs();

describe('a whole pull after one cut short', () => {
  it('keeps no root index record of a file the pull cut short removed (a later file may take its inode number)', async () => {
    const into = await temp.make('mirrorswap-fleet-gone-');
    const time = 1_700_000_000_000;
    const content = Buffer.from('A');
    await writeFile(join(into, 'a.txt'), content);
    await utimes(join(into, 'a.txt'), time / 1000, time / 1000);
    await mkdir(join(into, META_DIR_NAME), { recursive: true });
    await mkdir(join(into, TEMP_DIR_NAME), { recursive: true });
    // the record of gone.bin, which the pull cut short removed before it indexed what it changed
    writeDirectoryIndexSync(into, '', {
      'gone.bin': { ino: 12345, size: 2_000_000, mtimeMs: time, sha256: 'x'.repeat(43) },
    });
    const manifest: ManifestEntry[] = [
      {
        path: 'a.txt',
        type: 'file',
        mode: 0o644,
        size: 1,
        mtimeMs: time,
        hash: createHash('sha256').update(content).digest('hex'),
      },
    ];
    const c = await stubCoordinator(
      (_req, res) => {
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ base: null, changed: manifest, removed: [] }));
      },
      (_req, res) =>
        res.end(Buffer.concat([frameHeader('a.txt', 1), content, createHash('sha256').update(content).digest()])),
    );
    try {
      await pullSnapshot({
        from: c.url,
        token: c.token,
        snapshot: 's',
        base: null,
        into,
        durable: false,
        timeoutMs: 5000,
      });
      assert.equal((await readCopyIndex(into, ''))?.files['gone.bin'], undefined);
    } finally {
      await c.close();
      await rm(into, { recursive: true, force: true });
    }
  });
});
