import { mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { type EpochRecord, writeEpochFile } from '../src/store/epoch-file.js';
import { type SlotName, type StoreLayout, TEMP_DIR_NAME, storeLayout } from '../src/store/store-layout.js';

/** A store in a fresh temp dir, removed by `dispose()`. */
export interface TempStore extends StoreLayout {
  /** Write `files` (path → content) into a slot (or master). */
  fill(target: SlotName | 'master', files: Record<string, string | Buffer>): Promise<void>;
  link(target: SlotName | 'master', path: string, to: string): Promise<void>;
  /** Publish an epoch by hand, as the agent would. */
  publish(epoch: number, mounted: SlotName, publishedAt?: Date): Promise<EpochRecord>;
  dispose(): Promise<void>;
}

export async function tempStore(prefix = 'mirrorswap-test-'): Promise<TempStore> {
  const root = await mkdtemp(join(tmpdir(), prefix));
  const layout = storeLayout(root);
  for (const dir of [layout.master, layout.slots.a, layout.slots.b, layout.serversDir]) {
    await mkdir(dir, { recursive: true });
  }
  const base = (target: SlotName | 'master') => (target === 'master' ? layout.master : layout.slots[target]);
  return {
    ...layout,
    async fill(target, files) {
      for (const [rel, content] of Object.entries(files)) {
        const file = join(base(target), rel);
        await mkdir(dirname(file), { recursive: true });
        await writeFile(file, content);
      }
    },
    async link(target, path, to) {
      const file = join(base(target), path);
      await mkdir(dirname(file), { recursive: true });
      await symlink(to, file);
    },
    async publish(epoch, mounted, publishedAt = new Date()) {
      const record: EpochRecord = {
        format: 1,
        epoch,
        mounted,
        roots: { a: layout.slots.a, b: layout.slots.b },
        publishedAt: publishedAt.toISOString(),
      };
      await writeEpochFile(layout.epochFile, record);
      return record;
    },
    async dispose() {
      await rm(root, { recursive: true, force: true });
    },
  };
}

/** The temp files left in a slot's or master's temp directory (none when it is absent). */
export function tempFilesIn(dir: string): Promise<string[]> {
  return readdir(join(dir, TEMP_DIR_NAME)).catch(() => []);
}

/** Temp dirs made by a test file, removed together by `removeAll` (its `after` hook). */
export function tempDirs(): { make(prefix: string): Promise<string>; removeAll(): Promise<void> } {
  const made: string[] = [];
  return {
    async make(prefix) {
      const dir = await mkdtemp(join(tmpdir(), prefix));
      made.push(dir);
      return dir;
    },
    async removeAll() {
      await Promise.all(made.map((d) => rm(d, { recursive: true, force: true })));
    },
  };
}
