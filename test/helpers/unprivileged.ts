import { spawn } from 'node:child_process';
import { chown, lchown, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The user and group unprivileged runs take on when the suite runs as root (CI's unit tier runs as this user). */
export const NOBODY = 65534;

/** Give `dir` and everything below it to NOBODY, links included (never followed). */
async function chownTree(dir: string): Promise<void> {
  await chown(dir, NOBODY, NOBODY);
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, e.name);
    if (e.isDirectory()) await chownTree(path);
    else await lchown(path, NOBODY, NOBODY);
  }
}

/**
 * Run `scenario` of test/helpers/mode-scenarios.ts in a child process over
 * `dir` as a user the kernel checks permissions for: root passes every
 * permission check, so a test of read-only directories run as root would
 * prove nothing. As root the child drops to NOBODY with setpriv (the
 * directory is given to it first); run unprivileged already, it runs as is.
 * Resolves with the child's output; rejects with its stderr when it fails.
 */
export async function runUnprivileged(scenario: string, dir: string, timeoutMs = 50_000): Promise<string> {
  const script = fileURLToPath(new URL('./mode-scenarios.js', import.meta.url));
  const root = process.getuid?.() === 0;
  if (root) await chownTree(dir);
  const [cmd, args] = root
    ? ['setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', process.execPath, script, scenario, dir]]
    : [process.execPath, [script, scenario, dir]];
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, HOME: dir } });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
    });
    child.stderr.on('data', (c: Buffer) => {
      err += c.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`scenario ${scenario} failed (${code ?? signal}):\n${err}\n${out}`));
    });
  });
}
