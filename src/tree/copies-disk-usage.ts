import type { Dirent } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Limiter } from '../core/limiter.js';

/** What one copy takes on disk, among copies that may share files by hard link. */
export interface CopyDiskUsage {
  /** The copy's label (its slot). */
  name: string;
  /** Bytes on disk of everything in it (files, links, directories), each inode once. */
  bytes: number;
  /** Of `bytes`, those of inodes another of the copies holds too. */
  shared: number;
  /** Of `bytes`, those of inodes no other of the copies holds: what removing this copy alone frees. */
  owned: number;
}

/**
 * Each copy's disk bytes, split into what it shares with the others (a file
 * linked into two copies) and what it owns, and the bytes of all of them
 * together, each inode counted once (as `du -s` of all of them in one call).
 * Blocks allocated (`st_blocks`), not apparent sizes. One lstat per entry,
 * never through a link: on demand, not on a swap's way.
 */
export async function copiesDiskUsage(copies: { name: string; root: string }[]): Promise<{
  copies: CopyDiskUsage[];
  total: number;
}> {
  const limiter = new Limiter(16);
  /** Each inode (dev:ino) seen: its bytes, and the copies holding it. */
  const inodes = new Map<string, { bytes: number; holders: Set<string> }>();
  const walk = async (name: string, dir: string): Promise<void> => {
    let entries: Dirent[];
    try {
      entries = await limiter.run(() => readdir(dir, { withFileTypes: true }));
    } catch {
      return; // gone, or not readable: counted as nothing
    }
    await Promise.all(
      entries.map(async (e) => {
        const path = join(dir, e.name);
        const st = await limiter.run(() => lstat(path)).catch(() => null);
        if (!st) return;
        const key = `${st.dev}:${st.ino}`;
        let seen = inodes.get(key);
        if (!seen) {
          seen = { bytes: st.blocks * 512, holders: new Set() };
          inodes.set(key, seen);
        }
        seen.holders.add(name);
        if (st.isDirectory()) await walk(name, path);
      }),
    );
  };
  await Promise.all(copies.map((c) => walk(c.name, c.root)));
  const usage = new Map(copies.map((c) => [c.name, { name: c.name, bytes: 0, shared: 0, owned: 0 }]));
  let total = 0;
  for (const { bytes, holders } of inodes.values()) {
    total += bytes;
    for (const holder of holders) {
      const u = usage.get(holder) as CopyDiskUsage;
      u.bytes += bytes;
      if (holders.size > 1) u.shared += bytes;
      else u.owned += bytes;
    }
  }
  return { copies: [...usage.values()], total };
}
