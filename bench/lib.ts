import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createConnection } from 'node:net';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { publishEpoch } from '../src/store/publish.js';
import { type SlotName, type StoreLayout, storeLayout } from '../src/store/store-layout.js';
import { fileURLToPath } from 'node:url';

/** Start a bench target script (compiled, next to this file) and wait for the port it prints. */
export async function startTarget(
  script: string,
  args: string[],
): Promise<{ child: ChildProcess; port: number; pid: number | undefined }> {
  const child = spawn(process.execPath, [fileURLToPath(new URL(script, import.meta.url)), ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  // the target prints its port, and optionally the pid of the process that serves it
  const [port, pid] = await new Promise<number[]>((resolve, reject) => {
    child.stdout?.once('data', (d: Buffer) => resolve(d.toString().trim().split(/\s+/).map(Number)));
    child.once('exit', (code) => reject(new Error(`${script} exited with ${code}`)));
  });
  return { child, port: port as number, pid: pid ?? child.pid };
}

export async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

/** Resident set size of a process, in bytes (Linux). */
export function rss(pid: number | undefined): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0);
  return kb * 1024;
}

export function machine(): string {
  const cpu = cpus()[0]?.model ?? 'unknown cpu';
  return `${cpus().length} cores (${cpu}), ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`;
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] as number;
}

export function flag(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? dflt : Number(process.argv[i + 1]);
}

/** Make sure a Debian package's command is here, installing it when running as root. */
/** The value after `--name`, as given; undefined when the flag is absent. */
export function textFlag(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? undefined : process.argv[i + 1];
}

/** The middle of `xs` (the upper of the two for an even count). */
export const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1] as number;

export function requireCommand(command: string, pkg = command): void {
  try {
    execFileSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' });
    return;
  } catch {
    // not installed
  }
  if (process.getuid?.() !== 0) throw new Error(`${command} is needed: apt-get install ${pkg}`);
  console.error(`installing ${pkg} (Debian package) for the benchmark...`);
  execFileSync('sh', ['-c', `apt-get update -qq && apt-get install -y -qq ${pkg}`], { stdio: 'inherit' });
}

/** Run wrk (one thread: the other core is the server's) over `paths` in turn. */
export async function wrk(
  url: string,
  paths: string[],
  opts: { connections: number; duration: number; headers?: Record<string, string> },
): Promise<{ rps: number; p99: number; errors: number }> {
  requireCommand('wrk');
  const dir = mkdtempSync(join(tmpdir(), 'mirrorswap-wrk-'));
  const script = join(dir, 'paths.lua');
  writeFileSync(
    script,
    `local paths = {${paths.map((p) => JSON.stringify(p)).join(',')}}\nlocal i = 0\n` +
      `local headers = {${Object.entries(opts.headers ?? {})
        .map(([k, v]) => `[${JSON.stringify(k)}]=${JSON.stringify(v)}`)
        .join(',')}}\n` +
      'request = function()\n  i = i % #paths + 1\n  return wrk.format("GET", paths[i], headers)\nend\n',
  );
  const out = await new Promise<string>((resolve, reject) => {
    const child = spawn('wrk', ['-t1', `-c${opts.connections}`, `-d${opts.duration}s`, '--latency', '-s', script, url]);
    let text = '';
    child.stdout.on('data', (d: Buffer) => {
      text += d.toString();
    });
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve(text) : reject(new Error(`wrk exited ${code}: ${text}`))));
  });
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]);
  const p99raw = /\s99%\s+([\d.]+)(us|ms|s)/.exec(out);
  const unit = p99raw?.[2] === 'us' ? 0.001 : p99raw?.[2] === 's' ? 1000 : 1;
  const errors =
    Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0) +
    Number(/Socket errors:.*?timeout (\d+)/.exec(out)?.[1] ?? 0);
  return { rps, p99: Number(p99raw?.[1]) * unit, errors };
}

/**
 * A store in a temp dir with both slots filled by `fill` and epoch 1 published
 * mounting slot a, the way the agent publishes it.
 */
export async function benchStore(
  prefix: string,
  fill: (slotDir: string, slot: SlotName) => Promise<void>,
): Promise<StoreLayout> {
  const layout = storeLayout(await mkdtemp(join(tmpdir(), prefix)));
  for (const slot of ['a', 'b'] as const) {
    await mkdir(layout.slots[slot], { recursive: true });
    await fill(layout.slots[slot], slot);
  }
  await mkdir(layout.serversDir, { recursive: true });
  await publishEpoch(layout, 1, 'a');
  return layout;
}

/** A TCP port free on loopback right now. */
export async function freePort(): Promise<number> {
  const { createServer } = await import('node:net');
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** Resolve once something accepts connections on `port` (at most 10 s). */
export function waitForPort(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const deadline = Date.now() + 10_000;
    const attempt = () => {
      const s = createConnection({ host: '127.0.0.1', port }, () => {
        s.destroy();
        resolve();
      });
      s.on('error', () =>
        Date.now() > deadline ? reject(new Error(`nothing listens on ${port}`)) : setTimeout(attempt, 50),
      );
    };
    attempt();
  });
}

/** The CLI of this build. */
export const THIS_CLI = fileURLToPath(new URL('../src/cli/bin.js', import.meta.url));

/** `mirrorswap serve` of `cli` (this build by default) on `store`, on a free port. */
export async function startServe(store: string, cli = THIS_CLI): Promise<{ child: ChildProcess; port: number }> {
  const port = await freePort();
  const child = spawn(process.execPath, [cli, 'serve', '--store', store, '--listen', `127.0.0.1:${port}`], {
    stdio: 'ignore',
    env: { ...process.env, MIRRORSWAP_LOG_LEVEL: 'warn' },
  });
  await waitForPort(port);
  return { child, port };
}

/** Run `fn`, print how long it took under `label` (on stderr), and return the milliseconds. */
export function timed(label: string, fn: () => void, indent = '  '): number {
  const t = performance.now();
  fn();
  const ms = performance.now() - t;
  console.error(`${indent}${label}: ${ms.toFixed(0)} ms`);
  return ms;
}

/**
 * nginx as the benchmarks run it (one worker in the foreground, sendfile,
 * open_file_cache, its temp files under `prefix`), with `server` as its
 * server blocks; `PORT` in them is replaced by a free port.
 */
export async function startBenchNginx(prefix: string, server: string): Promise<{ child: ChildProcess; port: number }> {
  requireCommand('nginx');
  const port = await freePort();
  await mkdir(join(prefix, 'tmp'), { recursive: true });
  const conf = join(prefix, 'nginx.conf');
  await writeFile(
    conf,
    `daemon off; master_process off; worker_processes 1; pid ${prefix}/nginx.pid; error_log ${prefix}/error.log;
events { worker_connections 4096; }
http {
  access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;
  open_file_cache max=10000 inactive=60s; open_file_cache_valid 60s;
  client_body_temp_path ${prefix}/tmp; proxy_temp_path ${prefix}/tmp; fastcgi_temp_path ${prefix}/tmp;
  uwsgi_temp_path ${prefix}/tmp; scgi_temp_path ${prefix}/tmp;
  types { text/html html; }
  ${server.replace('PORT', String(port))}
}
`,
  );
  const child = spawn('nginx', ['-p', prefix, '-c', conf], { stdio: 'inherit' });
  await waitForPort(port);
  return { child, port };
}

/**
 * A master of `files` text files (JS, CSS, JSON, HTML) of 2 to 30 KiB in 40
 * directories (`d0` to `d39`, file `i` as `m<i>.<ext>` in `d<i % 40>`), and
 * an image of random bytes for every tenth; returns the text's bytes.
 */
export function textMaster(master: string, files: number): number {
  let bytes = 0;
  for (let i = 0; i < files; i++) {
    const dir = join(master, `d${i % 40}`);
    mkdirSync(dir, { recursive: true });
    const size = 2048 + ((i * 7919) % 28) * 1024;
    let text = '';
    for (let k = 0; text.length < size; k++) text += `export function f${i}_${k}(a) { return a * ${k} + "${i}"; }\n`;
    writeFileSync(join(dir, `m${i}.${['js', 'css', 'json', 'html'][i % 4]}`), text.slice(0, size));
    bytes += size;
    if (i % 10 === 0) writeFileSync(join(dir, `i${i}.png`), randomBytes(size));
  }
  return bytes;
}
