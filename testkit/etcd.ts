import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { freePort } from './server.js';

/** Debian's etcd-server; the fleet tests need it (scripts/test-deps.sh installs it). */
export function etcdBinary(): string {
  for (const candidate of ['/usr/bin/etcd', '/usr/local/bin/etcd']) {
    try {
      execFileSync(candidate, ['--version'], { stdio: 'ignore' });
      return candidate;
    } catch {}
  }
  throw new Error('etcd is not installed: run `bash scripts/test-deps.sh` as root (apt-get install etcd-server)');
}

export interface EtcdMember {
  name: string;
  clientUrl: string;
  readonly running: boolean;
  /** SIGSTOP it (a hung member: connections open, no answer), and SIGCONT it. */
  pause(): Promise<void>;
  resume(): Promise<void>;
  /** SIGKILL it (as a crash would). */
  kill(): Promise<void>;
  /** Start it again on its data directory. */
  restart(): Promise<void>;
}

export interface EtcdCluster {
  members: EtcdMember[];
  /** Every client URL, comma-separated, as `--etcd` takes them. */
  endpoints: string;
  /** The member that is leader now (asked of a running member). */
  leader(): Promise<EtcdMember>;
  stop(): Promise<void>;
}

/**
 * A cluster of `size` members on loopback, fast elections by default (tests kill leaders). `clientHost`:
 * the address clients reach it on (a bridge's, for hosts in network namespaces); loopback by default.
 */
export async function startEtcdCluster(
  size = 3,
  timing: { heartbeatMs?: number; electionTimeoutMs?: number; clientHost?: string } = {},
  tls?: EtcdTls,
): Promise<EtcdCluster> {
  const scheme = tls ? 'https' : 'http';
  const clientHost = timing.clientHost ?? '127.0.0.1';
  const binary = etcdBinary();
  const dir = await mkdtemp(join(tmpdir(), 'mirrorswap-etcd-'));
  const ports: { client: number; peer: number }[] = [];
  for (let i = 0; i < size; i++) ports.push({ client: await freePort(), peer: await freePort() });
  const names = ports.map((_, i) => `m${i}`);
  const initialCluster = names.map((n, i) => `${n}=http://127.0.0.1:${ports[i].peer}`).join(',');
  const children = new Map<string, ChildProcess>();
  const start = (i: number, state: 'new' | 'existing') => {
    const child = spawn(
      binary,
      [
        '--name',
        names[i],
        '--data-dir',
        join(dir, names[i]),
        '--listen-client-urls',
        `${scheme}://${clientHost}:${ports[i].client}`,
        '--advertise-client-urls',
        `${scheme}://${clientHost}:${ports[i].client}`,
        ...(tls
          ? [
              '--cert-file',
              tls.certFile,
              '--key-file',
              tls.keyFile,
              '--trusted-ca-file',
              tls.caFile,
              '--client-cert-auth',
            ]
          : []),
        '--listen-peer-urls',
        `http://127.0.0.1:${ports[i].peer}`,
        '--initial-advertise-peer-urls',
        `http://127.0.0.1:${ports[i].peer}`,
        '--initial-cluster',
        initialCluster,
        '--initial-cluster-state',
        state,
        '--initial-cluster-token',
        'mirrorswap-test',
        '--heartbeat-interval',
        String(timing.heartbeatMs ?? 50),
        '--election-timeout',
        String(timing.electionTimeoutMs ?? 500),
        '--logger',
        'zap',
        '--log-outputs',
        join(dir, `${names[i]}.log`),
      ],
      { stdio: 'ignore' },
    );
    children.set(names[i], child);
  };
  for (let i = 0; i < names.length; i++) start(i, 'new');
  const members: EtcdMember[] = names.map((name, i) => ({
    name,
    clientUrl: `${scheme}://${clientHost}:${ports[i].client}`,
    get running() {
      const c = children.get(name);
      return c !== undefined && c.exitCode === null && c.signalCode === null;
    },
    async pause() {
      children.get(name)?.kill('SIGSTOP');
    },
    async resume() {
      children.get(name)?.kill('SIGCONT');
    },
    async kill() {
      const c = children.get(name);
      if (!c || c.exitCode !== null || c.signalCode !== null) return;
      c.kill('SIGKILL');
      await once(c, 'exit');
    },
    async restart() {
      start(i, 'existing');
      await healthy(`${scheme}://${clientHost}:${ports[i].client}`, tls);
    },
  }));
  const cluster: EtcdCluster = {
    members,
    endpoints: members.map((m) => m.clientUrl).join(','),
    async leader() {
      for (let attempt = 0; attempt < 100; attempt++) {
        for (const m of members.filter((x) => x.running)) {
          const status = await post(m.clientUrl, '/v3/maintenance/status', {}).catch(() => null);
          const leader = status?.leader as string | undefined;
          if (!leader || leader === '0') continue;
          for (const candidate of members.filter((x) => x.running)) {
            const s = await post(candidate.clientUrl, '/v3/maintenance/status', {}).catch(() => null);
            const id = (s?.header as { member_id?: string } | undefined)?.member_id;
            if (id === leader) return candidate;
          }
        }
        await delay(50);
      }
      throw new Error('the etcd cluster has no leader');
    },
    async stop() {
      for (const m of members) {
        await m.resume();
        await m.kill();
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
  for (const m of members) await healthy(m.clientUrl, tls);
  if (!tls) await cluster.leader();
  return cluster;
}

async function post(url: string, path: string, body: object): Promise<Record<string, unknown>> {
  const res = await fetch(`${url}${path}`, {
    method: 'POST',
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(1000),
  });
  return (await res.json()) as Record<string, unknown>;
}

async function healthy(url: string, tls?: EtcdTls): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const ok = await (tls
      ? healthOverTls(url, tls)
      : fetch(`${url}/health`, { signal: AbortSignal.timeout(500) }).then((r) => r.text())
    )
      .then((text) => (JSON.parse(text) as { health?: string }).health === 'true')
      .catch(() => false);
    if (ok) return;
    await delay(50);
  }
  throw new Error(`etcd at ${url} did not become healthy`);
}

/** Files of a test CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it. */
export interface EtcdTls {
  caFile: string;
  certFile: string;
  keyFile: string;
  clientCertFile: string;
  clientKeyFile: string;
}

/** Make a CA and the server and client certificates with openssl, in `dir`. */
export function makeTestCertificates(dir: string): EtcdTls {
  const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  openssl(
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    'ca.key',
    '-out',
    'ca.crt',
    '-days',
    '2',
    '-subj',
    '/CN=mirrorswap-test-ca',
  );
  for (const [name, ext] of [
    ['server', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth'],
    ['client', 'extendedKeyUsage=clientAuth'],
  ] as const) {
    openssl(
      'req',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      `${name}.key`,
      '-out',
      `${name}.csr`,
      '-subj',
      `/CN=${name}`,
    );
    writeFileSync(join(dir, `${name}.ext`), ext);
    openssl(
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      'ca.crt',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      `${name}.crt`,
      '-days',
      '2',
      '-extfile',
      `${name}.ext`,
    );
  }
  return {
    caFile: join(dir, 'ca.crt'),
    certFile: join(dir, 'server.crt'),
    keyFile: join(dir, 'server.key'),
    clientCertFile: join(dir, 'client.crt'),
    clientKeyFile: join(dir, 'client.key'),
  };
}

function healthOverTls(url: string, tls: EtcdTls): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      `${url}/health`,
      {
        ca: readFileSync(tls.caFile),
        cert: readFileSync(tls.clientCertFile),
        key: readFileSync(tls.clientKeyFile),
        timeout: 500,
      },
      (res) => {
        let text = '';
        res.on('data', (c: Buffer) => {
          text += c.toString();
        });
        res.on('end', () => resolve(text));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}
