import { execFileSync, spawnSync } from 'node:child_process';
import { mkdir } from 'node:fs/promises';

/**
 * The path of an external tool the deploy tests need, or a failure telling
 * how to install it (CI installs them in .ci/run).
 */
export function tool(command: string, debianPackage: string): string {
  const found = spawnSync('sh', ['-c', `command -v ${command}`], { encoding: 'utf8' });
  const path = found.stdout.trim();
  if (found.status !== 0 || path === '') {
    throw new Error(`${command} is not installed: apt-get install ${debianPackage} (.ci/run does this)`);
  }
  return path;
}

export function run(command: string, args: string[], cwd?: string): { code: number | null; output: string } {
  const r = spawnSync(command, args, { encoding: 'utf8', ...(cwd ? { cwd } : {}) });
  return { code: r.status, output: `${r.stdout}${r.stderr}` };
}

/**
 * Mount a small tmpfs over `dir` (root only) so a test can fill a disk for
 * real, in bytes or, with `inodes`, in files and directories; returns the
 * unmount. Whatever `dir` held is hidden until then.
 */
export function mountTmpfs(dir: string, size: string, inodes?: number): () => void {
  const options = inodes === undefined ? `size=${size}` : `size=${size},nr_inodes=${inodes}`;
  execFileSync('mount', ['-t', 'tmpfs', '-o', options, 'tmpfs', dir]);
  return () => execFileSync('umount', [dir]);
}

/** Run `fn` on a new directory `dir` mounted as a tmpfs of `size` of its own (root only), unmounted after. */
export async function onSmallDisk<T>(dir: string, size: string, fn: (dir: string) => Promise<T>): Promise<T> {
  await mkdir(dir);
  const unmount = mountTmpfs(dir, size);
  try {
    return await fn(dir);
  } finally {
    unmount();
  }
}
