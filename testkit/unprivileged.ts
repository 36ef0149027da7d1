import { spawn } from 'node:child_process';
import { statSync } from 'node:fs';
import { chown, lchown, readdir } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
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

/** Whether anyone may reach and read `file`: every directory above it searchable, and it readable, by others. */
function readableByAll(file: string): boolean {
  try {
    if ((statSync(file).mode & 0o004) === 0) return false;
    for (let d = dirname(file); ; d = dirname(d)) {
      if ((statSync(d).mode & 0o001) === 0) return false;
      if (dirname(d) === d) return true;
    }
  } catch {
    return false;
  }
}

/**
 * Run `scenario` of test/helpers/mode-scenarios.ts in a child process over
 * `dir` as a user the kernel checks permissions for: root passes every
 * permission check, so a test of read-only directories run as root would
 * prove nothing. As root the child drops to NOBODY with setpriv (the
 * directory is given to it first); where NOBODY could not load the code (a
 * clone in root's home, say) it stays root but without any capability,
 * which the kernel checks as it checks any owner. Run unprivileged already,
 * it runs as is. Resolves with the child's output; rejects with its stderr
 * when it fails.
 */
export async function runUnprivileged(scenario: string, dir: string, timeoutMs = 50_000): Promise<string> {
  const script = fileURLToPath(new URL('./mode-scenarios.js', import.meta.url));
  const root = process.getuid?.() === 0;
  const express = createRequire(import.meta.url).resolve('express');
  const asNobody = root && [script, express, process.execPath].every(readableByAll);
  if (asNobody) await chownTree(dir);
  const drop = asNobody
    ? [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups']
    : ['--bounding-set=-all', '--inh-caps=-all'];
  const [cmd, args] = root
    ? ['setpriv', [...drop, process.execPath, script, scenario, dir]]
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
