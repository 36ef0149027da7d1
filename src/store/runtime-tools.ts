import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { MirrorswapError } from '../core/errors.js';

/** A program the agent runs, and why: Node has no binding for what it does. */
export interface RuntimeTool {
  readonly command: string;
  readonly debianPackage: string;
  readonly why: string;
}

/** flock(1): the store lock, held on a descriptor for the agent's life. */
export const FLOCK: RuntimeTool = {
  command: 'flock',
  debianPackage: 'util-linux',
  why: 'the agent takes its store with it (one agent per store)',
};

/** sync(1) -f: one syncfs(2) making a large copy durable before it is published. */
export const SYNC: RuntimeTool = {
  command: 'sync',
  debianPackage: 'coreutils',
  why: 'a large copy is made durable with one `sync -f` (syncfs) before it is published',
};

async function onPath(command: string, path: string): Promise<boolean> {
  for (const dir of path.split(delimiter)) {
    if (dir === '') continue;
    try {
      // executable, and a file: a directory of that name has its x bit too, and is no program
      await access(join(dir, command), constants.X_OK);
      if ((await stat(join(dir, command))).isFile()) return true;
    } catch {
      // not in this directory
    }
  }
  return false;
}

/**
 * Fail at start, naming each missing program and its package, rather than at
 * the first swap that needs it.
 */
export async function checkRuntimeTools(tools: readonly RuntimeTool[], path = process.env.PATH ?? ''): Promise<void> {
  const missing: RuntimeTool[] = [];
  for (const tool of tools) if (!(await onPath(tool.command, path))) missing.push(tool);
  if (missing.length === 0) return;
  throw new MirrorswapError(
    'MISSING_TOOL',
    missing
      .map((t) => `${t.command} is not on PATH: ${t.why}; install the Debian package ${t.debianPackage} or fix PATH`)
      .join('; '),
  );
}
