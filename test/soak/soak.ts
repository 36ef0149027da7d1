import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { Agent as HttpAgent, request } from 'node:http';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import type { SwapRecord } from '../../src/agent/agent.js';
import { startAgentProc, startWebProc } from '../helpers/cluster.js';
import { tempStore } from '../helpers/store.js';

/** Every file of version k is this token, repeated: a torn body shows two versions. */
const TOKEN = 9;
const token = (k: number) => `${String(k).padStart(8, '0')}\n`;
function body(k: number, size: number): string {
  return token(k)
    .repeat(Math.ceil(size / TOKEN))
    .slice(0, Math.floor(size / TOKEN) * TOKEN);
}
/** The one version a body (or an aligned slice of one) holds, or -1 if it mixes versions. */
function versionOf(buf: Buffer): number {
  const text = buf.toString();
  const first = text.slice(0, TOKEN);
  if (text.length % TOKEN !== 0 || first.length < TOKEN) return -1;
  for (let i = TOKEN; i < text.length; i += TOKEN) if (text.slice(i, i + TOKEN) !== first) return -1;
  return Number(first);
}

const SMALL = Array.from({ length: 20 }, (_, i) => ({ path: `s/f${i}.txt`, size: 2 * 1024 }));
const LARGE = Array.from({ length: 2 }, (_, i) => ({ path: `l/big${i}.bin`, size: 512 * 1024 }));
const FILES = [...SMALL, ...LARGE];

export interface SoakReport {
  durationMs: number;
  requests: number;
  errors: number;
  torn: number;
  etagMismatches: number;
  regressions: number;
  swaps: number;
  failedSwaps: number;
  writes: number;
  steadyRps: number;
  swappingRps: number;
  ratio: number;
  /** Highest version any client received: proves the writes reached the servers. */
  maxVersionServed: number;
  firstErrors: string[];
}

/**
 * The agent, two web-server processes and a load generator on loopback. Swaps
 * run back to back while writes keep arriving; every response is checked:
 * status, one version in the whole body, the same ETag always for the same
 * version, and never an older version than the client already saw from that
 * server.
 */
export async function runSoak({
  durationMs,
  connections = 12,
}: {
  durationMs: number;
  connections?: number;
}): Promise<SoakReport> {
  const store = await tempStore('mirrorswap-soak-');
  await store.fill('master', Object.fromEntries(FILES.map((f) => [f.path, body(0, f.size)])));
  const token = randomBytes(24).toString('hex');
  await writeFile(join(store.root, 'token'), token, { mode: 0o600 });
  const agent = await startAgentProc(store, join(store.root, 'token'), token, [
    '--drain-timeout',
    '10s',
    '--server-ttl',
    '3s',
  ]);
  const webs = [await startWebProc(store, 'soak-1'), await startWebProc(store, 'soak-2')];
  const keepAlive = new HttpAgent({ keepAlive: true, maxSockets: connections });
  const report: SoakReport = {
    durationMs,
    requests: 0,
    errors: 0,
    torn: 0,
    etagMismatches: 0,
    regressions: 0,
    swaps: 0,
    failedSwaps: 0,
    writes: 0,
    steadyRps: 0,
    swappingRps: 0,
    ratio: 0,
    maxVersionServed: 0,
    firstErrors: [],
  };
  const problem = (what: string) => {
    if (report.firstErrors.length < 10) report.firstErrors.push(what);
  };
  const etagVersion = new Map<string, number>();
  const seen = new Map<number, number>(); // per server port: highest version received
  let phase: 'warmup' | 'steady' | 'swapping' | 'done' = 'warmup';
  const counts = { warmup: 0, steady: 0, swapping: 0 };

  const one = (port: number, file: { path: string; size: number }, range: [number, number] | null) =>
    new Promise<void>((resolve) => {
      const startedSeen = seen.get(port) ?? 0;
      const headers: Record<string, string> = range ? { range: `bytes=${range[0]}-${range[1]}` } : {};
      const req = request({ host: '127.0.0.1', port, path: `/${file.path}`, agent: keepAlive, headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          report.requests++;
          if (phase !== 'done') counts[phase]++;
          const expected = range ? 206 : 200;
          if (res.statusCode !== expected) {
            report.errors++;
            problem(`${res.statusCode} for ${file.path}`);
            return resolve();
          }
          const version = versionOf(Buffer.concat(chunks));
          if (version < 0) {
            report.torn++;
            problem(`torn body for ${file.path}${range ? ` range ${range}` : ''}`);
            return resolve();
          }
          const etag = `${file.path} ${res.headers.etag}`;
          const known = etagVersion.get(etag);
          if (known !== undefined && known !== version) {
            report.etagMismatches++;
            problem(`ETag ${etag} served for versions ${known} and ${version}`);
          }
          etagVersion.set(etag, version);
          if (version < startedSeen) {
            report.regressions++;
            problem(`server ${port} went back from version ${startedSeen} to ${version}`);
          }
          seen.set(port, Math.max(seen.get(port) ?? 0, version));
          report.maxVersionServed = Math.max(report.maxVersionServed, version);
          resolve();
        });
        res.on('error', () => {
          report.errors++;
          resolve();
        });
      });
      req.on('error', (err) => {
        report.errors++;
        problem(`request error: ${err.message}`);
        resolve();
      });
      req.end();
    });

  const worker = async (n: number) => {
    for (let i = n; phase !== 'done'; i++) {
      const web = webs[i % webs.length] as { port: number };
      const file = FILES[(i * 7) % FILES.length] as { path: string; size: number };
      let range: [number, number] | null = null;
      if (file.size > 100_000 && i % 3 === 0) {
        const start = ((i * 131) % 1000) * TOKEN;
        range = [start, start + 200 * TOKEN - 1];
      }
      await one(web.port, file, range);
    }
  };

  const steadyMs = Math.min(5000, Math.max(2000, durationMs * 0.2));
  const workers = Array.from({ length: connections }, (_, n) => worker(n));
  const t0 = Date.now();
  await delay(1000); // connections opened, code warm: then steady throughput is measured
  phase = 'steady';
  await delay(steadyMs);
  report.steadyRps = counts.steady / (steadyMs / 1000);
  phase = 'swapping';
  const t1 = Date.now();
  let version = 0;
  const writer = (async () => {
    while (phase === 'swapping') {
      version++;
      const ops = FILES.map((f) => ({ op: 'put', path: f.path, content: body(version, f.size) }));
      const res = await fetch(`${agent.url}/v1/batch`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ ops }),
      }).catch(() => ({ status: 0 }));
      if (res.status === 200) report.writes++;
      await delay(250); // a write batch per swap, on average
    }
  })();
  const swapper = (async () => {
    while (phase === 'swapping') {
      const started = Date.now();
      const { body: record } = await agent.api<SwapRecord>('POST', '/v1/sync?wait=1');
      report.swaps++;
      if (record.result !== 'ok') {
        report.failedSwaps++;
        problem(`swap ${record.epoch}: ${record.result} ${record.error?.message ?? ''}`);
      }
      await delay(Math.max(0, 250 - (Date.now() - started)));
    }
  })();
  await delay(Math.max(1000, durationMs - (Date.now() - t0)));
  report.swappingRps = counts.swapping / ((Date.now() - t1) / 1000);
  phase = 'done';
  await Promise.all([writer, swapper, ...workers]);
  report.ratio = report.steadyRps > 0 ? report.swappingRps / report.steadyRps : 0;
  keepAlive.destroy();
  for (const w of webs) await w.proc.kill('SIGTERM');
  await agent.proc.kill('SIGTERM');
  await store.dispose();
  return report;
}
