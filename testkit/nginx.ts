import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
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
export async function startNginx(opts: { args?: string[]; server?: string; main?: string } = {}): Promise<TestNginx> {
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
daemon off;
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
  const api: TestNginx = {
    port,
    dir,
    pidFile,
    includeFile,
    confFile,
    master: () => child?.pid,
    async start() {
      child = spawn(bin, ['-c', confFile, '-p', dir, ...(opts.args ?? [])], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr?.on('data', (d: Buffer) => {
        stderr += d.toString();
      });
      const proc = child;
      await waitFor(`nginx to start (${stderr})`, async () => {
        if (proc.exitCode !== null) throw new Error(`nginx exited ${proc.exitCode}: ${stderr}`);
        const pid = Number((await readFile(pidFile, 'utf8').catch(() => '')).trim());
        if (pid !== proc.pid) return false;
        const res = await fetch(`http://127.0.0.1:${port}/`).catch(() => null);
        return res !== null;
      });
    },
    async stop(signal = 'SIGQUIT') {
      const proc = child;
      if (!proc || proc.exitCode !== null) return;
      const exited = new Promise((r) => proc.once('exit', r));
      if (signal === 'SIGKILL') {
        // the whole group, as systemd's control-group kill: orphaned workers would keep the port
        const workers = execFileSync('sh', ['-c', `pgrep -P ${proc.pid} || true`], { encoding: 'utf8' })
          .trim()
          .split('\n')
          .filter(Boolean)
          .map(Number);
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
