import { type Stats, closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { MirrorswapError } from '../core/errors.js';

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
    handle = await open(file, READ_FLAGS);
  } catch (err) {
    return openFailed(err, file);
  }
  try {
    const st = await handle.stat();
    checkStat(st, file, maxBytes);
    // sized by the stat, one byte more: a file that grew since is read on, up to the limit, never cut
    const chunks: Buffer[] = [];
    let length = 0;
    for (let size = st.size + 1; ; size = 64 * 1024) {
      const buffer = Buffer.allocUnsafe(Math.min(size, maxBytes + 1 - length));
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, length);
      if (bytesRead === 0) break;
      chunks.push(buffer.subarray(0, bytesRead));
      length += bytesRead;
      checkLength(length, file, maxBytes);
    }
    return chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, length);
  } finally {
    await handle.close();
  }
}

/**
 * `readSmallFile` in the calling thread, with the same guards: for a file on
 * a local disk read where a trip through libuv's pool per call would cost
 * more than the read (a web server's epoch file, read at every switch on a
 * machine whose every process wakes at once). Never for a network file system.
 */
export function readSmallFileSync(file: string, maxBytes: number): Buffer | null {
  let fd: number;
  try {
    fd = openSync(file, READ_FLAGS);
  } catch (err) {
    return openFailed(err, file);
  }
  try {
    const st = fstatSync(fd);
    checkStat(st, file, maxBytes);
    const chunks: Buffer[] = [];
    let length = 0;
    for (let size = st.size + 1; ; size = 64 * 1024) {
      const buffer = Buffer.allocUnsafe(Math.min(size, maxBytes + 1 - length));
      const bytesRead = readSync(fd, buffer, 0, buffer.length, length);
      if (bytesRead === 0) break;
      chunks.push(buffer.subarray(0, bytesRead));
      length += bytesRead;
      checkLength(length, file, maxBytes);
    }
    return chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, length);
  } finally {
    closeSync(fd);
  }
}

/** Without following a link, and without waiting on a FIFO or a device. */
const READ_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;

function openFailed(err: unknown, file: string): null {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return null;
  if (code === 'ELOOP') throw new MirrorswapError('NOT_REGULAR', `${file} is a symbolic link, not a regular file`);
  throw err;
}

function checkStat(st: Stats, file: string, maxBytes: number): void {
  if (!st.isFile()) throw new MirrorswapError('NOT_REGULAR', `${file} is not a regular file`);
  if (st.size > maxBytes) {
    throw new MirrorswapError('TOO_LARGE', `${file} is ${st.size} bytes, more than the ${maxBytes} it may have`);
  }
}

function checkLength(length: number, file: string, maxBytes: number): void {
  if (length > maxBytes) throw new MirrorswapError('TOO_LARGE', `${file} grew past ${maxBytes} bytes`);
}
