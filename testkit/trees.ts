import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { readManifest } from '../src/tree/manifest.js';

/** A tree's entries and content, temp directory left out: what two copies must agree on. */
export async function treeOf(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readManifest(root)) {
    const content = e.type === 'file' ? (await readFile(join(root, e.path))).toString('hex') : (e.target ?? '');
    // a link's own time is never served (its target's is)
    out.push(`${e.type} ${e.path} ${e.mode.toString(8)} ${e.type === 'link' ? '' : e.mtimeMs} ${content}`);
  }
  return out;
}

/** Every entry under `root` (files, links, directories; not the root itself), counted the plain way. */
export async function countEntries(root: string): Promise<number> {
  let n = 0;
  for (const e of await readdir(root, { withFileTypes: true })) {
    n++;
    if (e.isDirectory()) n += await countEntries(join(root, e.name));
  }
  return n;
}
