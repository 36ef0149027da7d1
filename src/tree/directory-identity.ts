import { type Stats, lstatSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { reportWalked } from './walk-report.js';

/** Which directory a path names: a path can come to name another directory (renamed in, recreated). */
export function directoryIdentity(st: Pick<Stats, 'dev' | 'ino' | 'birthtimeMs'>): string {
  return `${st.dev}:${st.ino}:${st.birthtimeMs}`;
}

/**
 * The subdirectories of `dir` (as `join(dir, name)`), each with its identity,
 * but those in `skip`; for the master watcher's start, in a walk thread. What cannot
 * be listed or looked at is left out, as the watcher's own walk does.
 */
export function subdirectoriesWithIdentity(dir: string, skip: readonly string[]): [string, string][] {
  let entries: import('node:fs').Dirent[];
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  reportWalked(entries.length);
  const out: [string, string][] = [];
  for (const e of entries) {
    if (!e.isDirectory()) continue;
    const path = join(dir, e.name);
    if (skip.includes(path)) continue;
    try {
      const st = lstatSync(path, { throwIfNoEntry: false });
      if (st?.isDirectory()) out.push([path, directoryIdentity(st)]);
    } catch {
      // gone or unreadable meanwhile: an event says so if it matters
    }
  }
  return out;
}
