import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

/** What file `path` holds at `version`: a torn tree shows two versions. */
export function versionContent(version: number, path: string): string {
  return `version ${version} of ${path}\n`;
}

/** The one version every one of `files` holds under `root`; fails if the tree mixes versions. */
export async function treeVersion(root: string, files: readonly string[]): Promise<number> {
  const versions = new Set<number>();
  for (const path of files) {
    const text = await readFile(join(root, path), 'utf8');
    const m = /^version (\d+) of (.+)\n$/.exec(text);
    assert.ok(m && m[2] === path, `${root}/${path} holds ${JSON.stringify(text)}`);
    versions.add(Number(m[1]));
  }
  assert.equal(versions.size, 1, `${root} mixes versions ${[...versions].join(', ')}`);
  return [...versions][0] as number;
}
