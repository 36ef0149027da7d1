import { constants } from 'node:fs';
import { type FileHandle, link, lstat, open, readlink, realpath, rename, unlink } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { type DirectoryIndex, readDirectoryIndex, stampMatches } from '../../store/content-index.js';
import { recentForReaders, throughRecent } from '../../store/recent-records.js';
import type { ManifestEntry } from '../../tree/manifest.js';
import { descriptorPath } from '../../tree/source-tree.js';

/** Files looked at side by side (each a few system calls; the thread pool has four threads). */
const CONCURRENCY = 16;

/**
 * A host keeping releases (`mirrorswap host --keep`): before a pull fetches
 * the files of a snapshot, each one another copy of this host (the mounted
 * one) holds with the same content, mode and time is hard-linked from there
 * instead, so copies share what did not change, as on a single host
 * (`share-files.ts`), and those bytes cross no network.
 *
 * The content is known from that copy's content index: the SHA-256 it
 * recorded when it placed the file, trusted only while the file has the
 * inode, size and mtime it was recorded with (a copy's file is never changed
 * in place; one replaced gets a new inode). It must equal the manifest's
 * SHA-256. The file is opened without following a link anywhere on its path,
 * and the name linked is checked to be the file looked at. Anything else
 * (no index, another hash, a link, another file system): fetched as before.
 * Nothing in the other copy is ever written.
 *
 * Returns the paths linked into place; `writable` readies a path's parents.
 */
export async function linkFromCopy(
  share: string,
  into: string,
  tmp: string,
  files: readonly ManifestEntry[],
  writable: (path: string) => Promise<void>,
): Promise<Set<string>> {
  const linked = new Set<string>();
  const candidates = files.filter((f) => f.type === 'file' && f.hash !== undefined);
  if (candidates.length === 0) return linked;
  let realShare: string;
  try {
    realShare = await realpath(share);
  } catch {
    return linked; // no such copy (yet): everything is fetched
  }
  const indexes = new Map<string, Promise<DirectoryIndex | null>>();
  // the copy's records, as its servers read them: each index through the recent records
  const recent = recentForReaders(share);
  const indexOf = (dir: string) => {
    let index = indexes.get(dir);
    if (index === undefined) {
      index = Promise.all([readDirectoryIndex(share, dir).catch(() => null), recent]).then(([found, byDir]) =>
        throughRecent(found, dir, byDir),
      );
      indexes.set(dir, index);
    }
    return index;
  };
  let next = 0;
  const worker = async () => {
    while (next < candidates.length) {
      const f = candidates[next++] as ManifestEntry;
      const cut = f.path.lastIndexOf('/');
      const record = (await indexOf(cut > 0 ? f.path.slice(0, cut) : ''))?.files[f.path.slice(cut + 1)];
      if (record === undefined || record.sha256 !== Buffer.from(f.hash as string, 'hex').toString('base64url'))
        continue;
      if (await linkOne(share, realShare, into, tmp, f, record, writable)) linked.add(f.path);
    }
  };
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, candidates.length) }, worker));
  return linked;
}

async function linkOne(
  share: string,
  realShare: string,
  into: string,
  tmp: string,
  f: ManifestEntry,
  record: { ino: number; size: number; mtimeMs: number },
  writable: (path: string) => Promise<void>,
): Promise<boolean> {
  let other: FileHandle;
  try {
    other = await open(join(share, f.path), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return false;
  }
  try {
    // opened where the kernel says, no parent of it a link
    if ((await readlink(descriptorPath(other))) !== join(realShare, f.path)) return false;
    const st = await other.stat();
    if (!st.isFile() || !stampMatches(record, st) || st.size !== f.size) return false;
    // what a fetched file would be given: the manifest's mode and time
    if ((st.mode & 0o7777) !== f.mode || Math.floor(st.mtimeMs) !== Math.floor(f.mtimeMs)) return false;
    await writable(f.path);
    const temp = join(tmp, `${randomBytes(8).toString('hex')}.linked`);
    try {
      await link(join(share, f.path), temp);
    } catch {
      return false; // another file system, the link limit: fetched
    }
    const placed = await lstat(temp);
    if (placed.ino !== st.ino || placed.dev !== st.dev) {
      await unlink(temp); // something else stood at that name by the time of the link
      return false;
    }
    await rename(temp, join(into, f.path));
    return true;
  } catch {
    return false;
  } finally {
    await other.close();
  }
}
