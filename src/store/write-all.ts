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

/** A stream is written once this many bytes, or chunks (a client may send a byte at a time), are gathered. */
const GATHER_BYTES = 1024 * 1024;
const GATHER_CHUNKS = 64;

/**
 * Write a stream of chunks whole, gathering them into one writev of up to a
 * megabyte: fewer round trips to the thread pool than one write per chunk.
 * Returns the bytes written.
 */
export async function writeStream(handle: FileHandle, body: AsyncIterable<Uint8Array>): Promise<number> {
  let size = 0;
  let gathered: Uint8Array[] = [];
  let gatheredBytes = 0;
  for await (const chunk of body) {
    gathered.push(chunk);
    gatheredBytes += chunk.length;
    if (gatheredBytes >= GATHER_BYTES || gathered.length >= GATHER_CHUNKS) {
      await writeAll(handle, gathered);
      size += gatheredBytes;
      gathered = [];
      gatheredBytes = 0;
    }
  }
  await writeAll(handle, gathered);
  return size + gatheredBytes;
}
