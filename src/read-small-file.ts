import { constants } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { MirrorswapError } from './errors.js';

/**
 * Read a small file of shared state (the epoch file, a heartbeat, the slot
 * positions) without ever blocking on what someone put in its place: it is
 * opened without following a link and without waiting (a FIFO or a device
 * must not hold the read, nor a thread of the pool), and read only if it is a
 * regular file of at most `maxBytes`. Null when there is no such file;
 * `NOT_REGULAR` or `TOO_LARGE` when something else stands there.
 */
export async function readSmallFile(file: string, maxBytes: number): Promise<Buffer | null> {
  let handle: FileHandle;
  try {
    handle = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    if (code === 'ELOOP') throw new MirrorswapError('NOT_REGULAR', `${file} is a symbolic link, not a regular file`);
    throw err;
  }
  try {
    const st = await handle.stat();
    if (!st.isFile()) throw new MirrorswapError('NOT_REGULAR', `${file} is not a regular file`);
    if (st.size > maxBytes) {
      throw new MirrorswapError('TOO_LARGE', `${file} is ${st.size} bytes, more than the ${maxBytes} it may have`);
    }
    // one byte more than allowed: a file that grew since the stat is caught, not cut
    const buffer = Buffer.alloc(maxBytes + 1);
    let length = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buffer, length, buffer.length - length, length);
      if (bytesRead === 0) break;
      length += bytesRead;
      if (length > maxBytes) throw new MirrorswapError('TOO_LARGE', `${file} grew past ${maxBytes} bytes`);
    }
    return buffer.subarray(0, length);
  } finally {
    await handle.close();
  }
}
