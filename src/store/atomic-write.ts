import { randomBytes } from 'node:crypto';
import { open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

export interface AtomicWriteOptions {
  /**
   * fsync the file before the rename and the directory after it, so the new
   * content survives a power loss. Heartbeats skip it: a crashed server's
   * heartbeat is worthless anyway, and they are written every second.
   */
  durable?: boolean;
  mode?: number;
}

/** A temp name in the same directory, hidden (leading dot), unique per writer. */
function tempNameFor(file: string): string {
  return join(dirname(file), `.${basename(file)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
}

/**
 * Replace `file` atomically: readers see the old content or the new one, never
 * a mix, and a reader holding the old file open keeps reading the old inode.
 */
export async function writeFileAtomic(
  file: string,
  data: string | Uint8Array,
  options: AtomicWriteOptions = {},
): Promise<void> {
  const durable = options.durable ?? true;
  const tmp = tempNameFor(file);
  const handle = await open(tmp, 'wx', options.mode ?? 0o644);
  try {
    await handle.writeFile(data);
    if (durable) await handle.sync();
    await handle.close();
    await rename(tmp, file);
  } catch (err) {
    await handle.close().catch(() => {});
    await unlink(tmp).catch(() => {});
    throw err;
  }
  if (durable) await fsyncDir(dirname(file));
}

/** Make a rename or unlink in `dir` durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
