import { constants } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { writeFileAtomic } from './atomic-write.js';

/** A disk sector: the unit a block device writes whole. */
export const SECTOR_BYTES = 512;

/** Opening the file in place failed in a way that replacing it mends: gone, a link, a FIFO without reader. */
const REPLACEABLE = new Set(['ENOENT', 'ELOOP', 'ENXIO']);

/**
 * Durably replace a record of less than one sector, written in place: the
 * text is padded with spaces to one 512-byte sector (JSON allows the trailing
 * blanks) and written over the file's first sector, then `fdatasync`ed.
 *
 * Why in place: a block device writes a sector whole, so a crash leaves the
 * old record or the new one, as a rename would; and it costs one device
 * flush, where a durable rename costs two file-system commits (the temp
 * file's fsync, then the directory's). The agent records each slot's position
 * twice per sync (a copy starting, a copy done), on the path of every swap.
 * PostgreSQL keeps its control file within one sector for the same reason.
 *
 * Anything other than a regular file of exactly one sector with one link
 * (none yet, one written by hand or by an older version, a symbolic or hard
 * link or a FIFO put there) is
 * replaced atomically (temp file, fsync, rename, fsync of the directory)
 * instead, and later writes go in place. A text of a sector or more is
 * always written that way.
 *
 * Only for files whose one reader is the writer itself: another process
 * reading while the sector is written could see part of each. The epoch file,
 * which servers read at any time, is always replaced by rename.
 */
export async function writeSectorFile(file: string, text: string): Promise<void> {
  const body = Buffer.from(text, 'utf8');
  if (body.length >= SECTOR_BYTES) return writeFileAtomic(file, `${text}\n`, { durable: true });
  const sector = Buffer.alloc(SECTOR_BYTES, 0x20);
  body.copy(sector);
  sector[SECTOR_BYTES - 1] = 0x0a;
  let handle: FileHandle;
  try {
    handle = await open(file, constants.O_WRONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    if (!REPLACEABLE.has((err as NodeJS.ErrnoException).code ?? '')) throw err;
    return writeFileAtomic(file, sector, { durable: true });
  }
  let inPlace = false;
  try {
    const st = await handle.stat();
    // one link only: a hard link put in its place must not carry the write into another file
    inPlace = st.isFile() && st.size === SECTOR_BYTES && st.nlink === 1;
    if (inPlace) {
      await handle.write(sector, 0, SECTOR_BYTES, 0);
      await handle.datasync();
    }
  } finally {
    await handle.close();
  }
  if (!inPlace) await writeFileAtomic(file, sector, { durable: true });
}
