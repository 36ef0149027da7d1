import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { isAlive } from '../src/nginx/nginx-processes.js';
import { join } from 'node:path';
import { freePort } from './server.js';
import { waitFor } from './wait.js';

/** Where Debian's nginx is (scripts/test-deps.sh installs it). */
export function nginxBinary(): string {
  for (const candidate of ['/usr/sbin/nginx', '/usr/bin/nginx']) {
    try {
      execFileSync(candidate, ['-v'], { stdio: 'ignore' });
      return candidate;
    } catch {
      // not here
    }
  }
  throw new Error('nginx is needed for these tests: apt-get install nginx (scripts/test-deps.sh does)');
}

export interface TestNginx {
  readonly port: number;
  readonly dir: string;
  readonly pidFile: string;
  readonly includeFile: string;
  readonly confFile: string;
  readonly master: () => number | undefined;
  /** Start nginx (again) on the same port and configuration. */
  start(): Promise<void>;
  /** Stop the master and its workers with `signal` (all of them, as systemd would). */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Replace the main configuration by something nginx refuses, or restore it. */
  breakConfig(broken: boolean): Promise<void>;
  dispose(): Promise<void>;
}

/**
 * A real nginx on a loopback port, in the foreground as our child, whose
 * server block includes the companion's file. `open_file_cache` and
 * keep-alive are on, as in production: the tests show they do not carry the
 * old copy over a switch.
 */
/** The processes whose parent is `pid`, zombies included (`pgrep -P`). */
export function childrenOf(pid: number): number[] {
  return execFileSync('sh', ['-c', `pgrep -P ${pid} || true`], { encoding: 'utf8' })
    .trim()
    .split('\n')
    .filter(Boolean)
    .map(Number);
}

async function anyAlive(pids: number[]): Promise<boolean> {
  for (const pid of pids) if (await isAlive(pid)) return true;
  return false;
}

export async function startNginx(
  opts: {
    args?: string[];
    server?: string;
    main?: string;
    /** `daemon on` (nginx's default): the master is forked once the configuration is read and the sockets open. */
    daemon?: boolean;
  } = {},
): Promise<TestNginx> {
  const bin = nginxBinary();
  const dir = await mkdtemp(join(tmpdir(), 'mirrorswap-nginx-'));
  const port = await freePort();
  const pidFile = join(dir, 'nginx.pid');
  const includeFile = join(dir, 'mirrorswap-root.conf');
  const confFile = join(dir, 'nginx.conf');
  const user = process.getuid?.() === 0 ? 'user root;' : '';
  const conf = `${user}
${opts.main ?? ''}
worker_processes 2;
daemon ${opts.daemon ? 'on' : 'off'};
pid ${pidFile};
error_log ${join(dir, 'error.log')} notice;
events { worker_connections 512; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  sendfile on;
  keepalive_timeout 60s;
  open_file_cache max=1000 inactive=60s;
  open_file_cache_valid 60s;
  etag on;
  server {
    listen 127.0.0.1:${port};
    include ${includeFile};
    add_header X-Epoch $mirrorswap_epoch always;
    location ~ /\\. { return 404; }
    ${opts.server ?? ''}
  }
}
`;
  await writeFile(confFile, conf);
  let child: ChildProcess | undefined;
  /** The daemon's master (with `daemon`): the pid its pid file named once it started. */
  let daemonMaster: number | undefined;
  const api: TestNginx = {
    port,
    dir,
    pidFile,
    includeFile,
    confFile,
    master: () => (opts.daemon ? daemonMaster : child?.pid),
    async start() {
      child = spawn(bin, ['-c', confFile, '-p', dir, ...(opts.args ?? [])], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr?.on('data', (d: Buffer) => {
        stderr += d.toString();
      });
      const proc = child;
      await waitFor(
        `nginx to start (${stderr})`,
        async () => {
          // a daemon's launcher exits 0 once it has forked the master
          if (proc.exitCode !== null && !(opts.daemon && proc.exitCode === 0)) {
            throw new Error(`nginx exited ${proc.exitCode}: ${stderr}`);
          }
          const pid = Number((await readFile(pidFile, 'utf8').catch(() => '')).trim());
          if (opts.daemon ? !(pid > 1 && pid !== daemonMaster && (await isAlive(pid))) : pid !== proc.pid) return false;
          const res = await fetch(`http://127.0.0.1:${port}/`).catch(() => null);
          if (res === null) return false;
          if (opts.daemon) daemonMaster = pid;
          return true;
        },
        { timeout: 10_000 },
      );
    },
    async stop(signal = 'SIGQUIT') {
      if (opts.daemon) {
        const pid = daemonMaster;
        if (pid === undefined || !(await isAlive(pid))) return;
        const workers = childrenOf(pid);
        process.kill(pid, signal);
        if (signal === 'SIGKILL') {
          for (const w of workers) {
            try {
              process.kill(w, 'SIGKILL');
            } catch {
              // gone already
            }
          }
        }
        // not our child: reaped by init, gone from /proc once it has
        await waitFor('the nginx daemon to exit', async () => !(await isAlive(pid)) && !(await anyAlive(workers)), {
          timeout: 10_000,
        });
        await rm(pidFile, { force: true });
        return;
      }
      const proc = child;
      if (!proc || proc.exitCode !== null) return;
      const exited = new Promise((r) => proc.once('exit', r));
      if (signal === 'SIGKILL') {
        // the whole group, as systemd's control-group kill: orphaned workers would keep the port
        const workers = childrenOf(proc.pid as number);
        proc.kill('SIGKILL');
        for (const w of workers) {
          try {
            process.kill(w, 'SIGKILL');
          } catch {
            // gone already
          }
        }
      } else proc.kill(signal);
      await exited;
      await rm(pidFile, { force: true });
    },
    async breakConfig(broken) {
      await writeFile(confFile, broken ? `${conf}\nthis is not a directive;\n` : conf);
    },
    async dispose() {
      await api.stop('SIGKILL').catch(() => {});
      await rm(dir, { recursive: true, force: true });
    },
  };
  return api;
}
