import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

/** The built CLI, run the way operators run it. */
export const CLI = fileURLToPath(new URL('../src/cli/bin.js', import.meta.url));

export interface CliProcess {
  readonly child: ChildProcess;
  readonly output: () => string;
  /** Resolve with the first output line matching `re` (stdout or stderr), or fail after `timeout`. */
  waitForLine(re: RegExp, timeout?: number): Promise<string>;
  /** Resolve with the exit code. */
  exited(): Promise<number | null>;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

export interface RunOptions {
  /** Run at this niceness, as a unit with `Nice=` runs it (nice(1) execs, so the pid is the CLI's). */
  nice?: number;
  /**
   * Run through this shell command, which must end by exec'ing "$@" (the CLI
   * and its arguments): to set limits or namespaces first.
   */
  through?: string;
  /** How long to wait for the "listening" line (a large store takes a while to start): 15 s by default. */
  listenTimeoutMs?: number;
}

export function runCli(args: string[], env: Record<string, string> = {}, opts: RunOptions = {}): CliProcess {
  const command = [process.execPath, CLI, ...args];
  if (opts.nice !== undefined) command.unshift('nice', '-n', String(opts.nice));
  if (opts.through !== undefined) command.unshift('sh', '-c', opts.through, 'sh');
  const child = spawn(command[0] as string, command.slice(1), {
    env: { ...process.env, MIRRORSWAP_LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let text = '';
  const waiters: { re: RegExp; resolve: (line: string) => void }[] = [];
  const exit = once(child, 'exit').then(([code]) => code as number | null);
  const feed = (chunk: Buffer) => {
    text += chunk.toString();
    for (const w of [...waiters]) {
      const line = text.split('\n').find((l) => w.re.test(l));
      if (line !== undefined) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(line);
      }
    }
  };
  child.stdout?.on('data', feed);
  child.stderr?.on('data', feed);
  return {
    child,
    output: () => text,
    waitForLine(re, timeout = 15_000) {
      const line = text.split('\n').find((l) => re.test(l));
      if (line !== undefined) return Promise.resolve(line);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`no line matching ${re} within ${timeout} ms; output:\n${text}`)),
          timeout,
        );
        const exitWatch = exit.then((code) =>
          reject(new Error(`process exited (${code}) before a line matching ${re}; output:\n${text}`)),
        );
        void exitWatch;
        waiters.push({
          re,
          resolve: (l) => {
            clearTimeout(timer);
            resolve(l);
          },
        });
      });
    },
    exited: () => exit,
    async kill(signal = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill(signal);
      await exit;
    },
  };
}

/** Run a CLI command to completion. */
export async function cli(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number | null; output: string }> {
  const p = runCli(args, env);
  const code = await p.exited();
  return { code, output: p.output() };
}

/**
 * The URL an agent or web server logged when it started listening. One that
 * does not get there in time is killed: left running, nothing would stop it
 * (its caller never had it), and it would hold the test file open until the
 * runner's own timeout.
 */
export async function listeningUrl(p: CliProcess, timeoutMs?: number): Promise<string> {
  let line: string;
  try {
    line = await p.waitForLine(/"msg":"(agent|web server) listening"/, timeoutMs);
  } catch (err) {
    await p.kill('SIGKILL');
    throw err;
  }
  return (JSON.parse(line) as { url: string }).url;
}
