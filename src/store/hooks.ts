import { spawn } from 'node:child_process';
import { MirrorswapError } from '../core/errors.js';

/**
 * Run an operator hook (`--on-mount`, `--on-unmount`) through the shell with
 * the swap described in its environment; fails if it exits non-zero or runs
 * past the timeout.
 */
export function runHook(name: string, command: string, env: Record<string, string>, timeoutMs = 60_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/sh', ['-c', command], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'inherit', 'inherit'],
      timeout: timeoutMs,
    });
    child.on('error', (err) =>
      reject(new MirrorswapError('HOOK_FAILED', `${name} hook could not start: ${err.message}`)),
    );
    child.on('exit', (code, signal) => {
      if (code === 0) resolve();
      else
        reject(
          new MirrorswapError(
            'HOOK_FAILED',
            `${name} hook "${command}" ${signal ? `was killed by ${signal}` : `exited with status ${code}`}`,
          ),
        );
    });
  });
}
