import { join } from 'node:path';
import { lstatOrNull } from '../core/lstat-or-null.js';

/**
 * A check of whether a directory of the copy at `slot` (relative, `''` for
 * its root) is one of the copy's own: reached from its root through
 * directories alone, no link on the way. Each directory is looked at once
 * per checker, its parents first. What writes or removes by a path an index
 * or a record names asks this first: drift may have made a directory of it a
 * link since, to anywhere.
 */
export function realDirectories(slot: string): (dir: string) => Promise<boolean> {
  const known = new Map<string, Promise<boolean>>();
  // a path that names no directory below the root (`..`, `.`, an empty segment, a leading `/`) is none
  const check = (dir: string): Promise<boolean> =>
    dir === '' || dir.split('/').every((s) => s !== '' && s !== '.' && s !== '..')
      ? realDir(dir)
      : Promise.resolve(false);
  const realDir = (dir: string): Promise<boolean> => {
    if (dir === '') return Promise.resolve(true);
    let real = known.get(dir);
    if (real === undefined) {
      const cut = dir.lastIndexOf('/');
      real = realDir(cut === -1 ? '' : dir.slice(0, cut)).then(
        async (up) => up && (await lstatOrNull(join(slot, dir)).catch(() => null))?.isDirectory() === true,
      );
      known.set(dir, real);
    }
    return real;
  };
  return check;
}
