import type { FileHandle } from 'node:fs/promises';

/**
 * Write every byte of `chunks`, in order, at the handle's position. A write
 * can be short: when the disk fills in mid-write, the system call returns the
 * bytes it managed and libuv reports that count, not the error. Writing the
 * rest again turns that into the error it is, instead of a silently short file.
 */
export async function writeAll(handle: FileHandle, chunks: Uint8Array[]): Promise<void> {
  let left = chunks.filter((c) => c.length > 0);
  while (left.length > 0) {
    const { bytesWritten } = await handle.writev(left);
    if (bytesWritten === 0) throw new Error('a write made no progress');
    let skip = bytesWritten;
    while (left.length > 0 && skip >= (left[0] as Uint8Array).length) {
      skip -= (left[0] as Uint8Array).length;
      left = left.slice(1);
    }
    if (skip > 0) left = [(left[0] as Uint8Array).subarray(skip), ...left.slice(1)];
  }
}
