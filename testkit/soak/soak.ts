import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type RecordableHistogram, createHistogram } from 'node:perf_hooks';
import { setTimeout as delay } from 'node:timers/promises';
import { Worker } from 'node:worker_threads';
import { brotliDecompressSync, gunzipSync } from 'node:zlib';
import { connect } from 'node:net';
import { Pool } from 'undici';
import { readHeartbeats } from '../../src/store/heartbeat.js';
import { startAgentProc, startWebProc } from '../cluster.js';
import { tempStore } from '../store.js';
import { FILES, type SoakFile, TOKEN, body, versionOf } from './content.js';
import { CpuMeter, type CpuShare } from './cpu.js';
import type { WriterData, WriterEvent } from './writer.js';

export interface SoakReport {
  durationMs: number;
  requests: number;
  errors: number;
  torn: number;
  etagMismatches: number;
  regressions: number;
  /**
   * Answers that came precompressed (by Content-Encoding), each decoded and
   * checked like the rest: a variant of another version, or one that does not
   * decode, counts as torn.
   */
  encoded: { br: number; gzip: number };
  swaps: number;
  failedSwaps: number;
  writes: number;
  /** Quiet and swapping windows taken in turn, each this long. */
  windowMs: number;
  windows: number;
  steadyRps: number;
  swappingRps: number;
  ratio: number;
  /**
   * The same ratio between the quiet windows of the first and second half:
   * what the measurement itself wobbles by on this machine with nothing changing.
   */
  quietRatio: number;
  /**
   * Where the true ratio lies, from the spread of the pairs' own ratios (each
   * swapping window over the quiet window next to it): mean ± 2 standard errors.
   */
  ratioInterval: [number, number];
  /** Requests per second of each window, in order. */
  windowRps: { steady: number[]; swapping: number[] };
  /** Request latency in ms, [p50, p99, max], in quiet and in swapping windows. */
  latency: { steady: number[]; swapping: number[] };
  /** Highest version any client received: proves the writes reached the servers. */
  maxVersionServed: number;
  /** Requests whose client hung up on purpose (after sending, at the first byte, during a 304 or a Range). */
  aborted: number;
  /** Times the stalling server was stopped (SIGSTOP) past the agent's --server-ttl, then resumed. */
  stalls: number;
  /** Requests answered by the stalling server, every one checked like the rest. */
  stalledServerRequests: number;
  /** In-flight counts the servers still reported once all load had stopped: each one would wedge a swap. */
  leakedCounts: number;
  cpu: { steady: CpuShare; swapping: CpuShare };
  firstErrors: string[];
}

interface WebTarget {
  port: number;
  pool: Pool;
}

interface Window {
  requests: number;
  ms: number;
  /** Latency in µs. A native histogram: an array of a million latencies slows the generator's GC as it grows, and its throughput with it. */
  latencies: RecordableHistogram;
}

/** [p50, p99, max] in ms, to 0.1 ms. */
function percentiles(h: RecordableHistogram): number[] {
  const ms = (us: number) => Math.round(us / 100) / 10;
  return h.count === 0 ? [0, 0, 0] : [ms(h.percentile(50)), ms(h.percentile(99)), ms(h.max)];
}

/**
 * The agent (at nice 10, as its unit runs it), two web-server processes and a
 * load generator on loopback. The load runs throughout; quiet windows and
 * swapping windows alternate (quiet-swapping, swapping-quiet, ...), so both see
 * the same warm code and the same machine, and their throughputs compare fairly. In a swapping window swaps
 * run back to back (one every 250 ms at least) while a write batch of every
 * file arrives every 250 ms. Every response is checked: status, one version in
 * the whole body, the same ETag always for the same version, and never an
 * older version than the client already saw from that server.
 */
export async function runSoak({
  durationMs,
  connections = 12,
  writes = true,
  swaps = true,
  hostile = true,
  minSwaps = 0,
  maxDurationMs = durationMs,
}: {
  durationMs: number;
  /**
   * Run on past `durationMs` (up to `maxDurationMs`) until this many swaps
   * happened: on a loaded machine the run takes longer rather than proving
   * too little.
   */
  minSwaps?: number;
  maxDurationMs?: number;
  connections?: number;
  /** Leave out the write batches or the swaps, to see what each costs (both off: the measurement's own noise). */
  writes?: boolean;
  swaps?: boolean;
  /**
   * Clients that hang up at every stage of a request, and a third web server
   * stopped (SIGSTOP) past the agent's --server-ttl now and then, throughout
   * (off: the throughput comparison alone).
   */
  hostile?: boolean;
}): Promise<SoakReport> {
  const store = await tempStore('mirrorswap-soak-');
  await store.fill('master', Object.fromEntries(FILES.map((f) => [f.path, body(0, f.size)])));
  const token = randomBytes(24).toString('hex');
  await writeFile(join(store.root, 'token'), token, { mode: 0o600 });
  const agent = await startAgentProc(
    store,
    join(store.root, 'token'),
    token,
    ['--drain-timeout', '10s', '--server-ttl', '3s'],
    { nice: 10 },
  );
  const webs = [await startWebProc(store, 'soak-1'), await startWebProc(store, 'soak-2')];
  // the stalling server takes its own checked clients, apart from the measured load
  const staller = hostile ? await startWebProc(store, 'soak-stall') : null;
  // undici's pool, not node:http's client: at half the CPU per request, the
  // load generator is no longer what sets the pace; the servers are.
  const targets: WebTarget[] = webs.map((w) => ({
    port: w.port,
    pool: new Pool(w.url, { connections: Math.ceil(connections / webs.length) }),
  }));
  const windowMs = Math.min(5000, Math.max(1500, Math.round(durationMs / 12)));
  const report: SoakReport = {
    durationMs,
    requests: 0,
    errors: 0,
    torn: 0,
    etagMismatches: 0,
    regressions: 0,
    encoded: { br: 0, gzip: 0 },
    swaps: 0,
    failedSwaps: 0,
    writes: 0,
    windowMs,
    windows: 0,
    steadyRps: 0,
    swappingRps: 0,
    ratio: 0,
    quietRatio: 0,
    ratioInterval: [0, 0],
    windowRps: { steady: [], swapping: [] },
    latency: { steady: [], swapping: [] },
    maxVersionServed: 0,
    aborted: 0,
    stalls: 0,
    stalledServerRequests: 0,
    leakedCounts: 0,
    cpu: {
      steady: { loadGenerator: 0, servers: 0, agent: 0, other: 0 },
      swapping: { loadGenerator: 0, servers: 0, agent: 0, other: 0 },
    },
    firstErrors: [],
  };
  const problem = (what: string) => {
    if (report.firstErrors.length < 10) report.firstErrors.push(what);
  };
  /**
   * Whole-file requests ask in turn for brotli, gzip, or nothing: the small
   * files are text the agent precompresses, so two in three answers exercise a
   * variant of the version being served.
   */
  let turn = 0;
  const acceptEncoding = (file: SoakFile): Record<string, string> => {
    turn = (turn + 1) % 3;
    if (file.size > 100_000 || turn === 0) return {};
    return { 'accept-encoding': turn === 1 ? 'br, gzip;q=0.5' : 'gzip' };
  };
  /** The body as sent before its Content-Encoding; an empty buffer (torn) when it does not decode. */
  const decoded = (encoding: string | string[] | undefined, raw: Buffer): Buffer => {
    if (encoding === undefined) return raw;
    try {
      if (encoding === 'br') {
        report.encoded.br++;
        return brotliDecompressSync(raw);
      }
      if (encoding === 'gzip') {
        report.encoded.gzip++;
        return gunzipSync(raw);
      }
    } catch {
      return Buffer.alloc(0);
    }
    problem(`unknown Content-Encoding ${String(encoding)}`);
    return Buffer.alloc(0);
  };
  const etagVersion = new Map<string, number>();
  const seen = new Map<number, number>(); // per server port: highest version received
  let running = true;
  /** The window being counted; null while warming up and between windows, while the last swap of a swapping window finishes. */
  let current: Window | null = null;

  /** Check one answer; `startedSeen` is the newest version the server had shown when the request left. */
  const check = (
    port: number,
    file: SoakFile,
    range: [number, number] | null,
    status: number,
    etagHeader: string | string[] | undefined,
    body: Buffer,
    startedSeen: number,
  ) => {
    const expected = range ? 206 : 200;
    if (status !== expected) {
      report.errors++;
      problem(`${status} for ${file.path}`);
      return;
    }
    const version = versionOf(body);
    if (version < 0) {
      report.torn++;
      problem(`torn body for ${file.path}${range ? ` range ${range}` : ''}`);
      return;
    }
    const etag = `${file.path} ${etagHeader}`;
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
  };

  const one = async (web: WebTarget, file: SoakFile, range: [number, number] | null) => {
    const startedSeen = seen.get(web.port) ?? 0;
    const startedAt = performance.now();
    try {
      const res = await web.pool.request({
        method: 'GET',
        path: `/${file.path}`,
        headers: range ? { range: `bytes=${range[0]}-${range[1]}` } : acceptEncoding(file),
      });
      const body = decoded(res.headers['content-encoding'], Buffer.from(await res.body.arrayBuffer()));
      report.requests++;
      if (current) {
        current.requests++;
        current.latencies.record(Math.max(1, Math.round((performance.now() - startedAt) * 1000)));
      }
      check(web.port, file, range, res.statusCode, res.headers.etag, body, startedSeen);
    } catch (err) {
      report.errors++;
      problem(`request error: ${(err as Error).message}`);
    }
  };

  const worker = async (n: number) => {
    for (let i = n; running; i++) {
      const web = targets[i % targets.length] as WebTarget;
      const file = FILES[(i * 7) % FILES.length] as SoakFile;
      let range: [number, number] | null = null;
      if (file.size > 100_000 && i % 3 === 0) {
        const start = ((i * 131) % 1000) * TOKEN;
        range = [start, start + 200 * TOKEN - 1];
      }
      await one(web, file, range);
    }
  };

  const publisher = new Worker(new URL('./writer.js', import.meta.url), {
    workerData: { agentUrl: agent.url, token, intervalMs: 250, writes, swaps } satisfies WriterData,
  });
  let stopped: () => void = () => {};
  publisher.on('message', (event: WriterEvent) => {
    if (event.kind === 'write') {
      if (event.ok) report.writes++;
    } else if (event.kind === 'swap') {
      report.swaps++;
      if (!event.ok) {
        report.failedSwaps++;
        problem(event.problem ?? 'a swap failed');
      }
    } else stopped();
  });
  let publisherFailed = false;
  publisher.on('error', (err) => {
    publisherFailed = true;
    problem(`the publisher thread failed: ${err.message}`);
    stopped();
  });
  /** Start publishing; `stop()` resolves once the last write and swap under way have finished. */
  const publish = () => {
    publisher.postMessage('start');
    return {
      stop: () =>
        publisherFailed
          ? Promise.resolve()
          : new Promise<void>((resolve) => {
              stopped = resolve;
              publisher.postMessage('stop');
            }),
    };
  };

  const pids = { servers: webs.map((w) => w.proc.child.pid), agent: agent.proc.child.pid };
  const cpu = { steady: new CpuMeter(pids), swapping: new CpuMeter(pids) };
  const totals = {
    steady: { requests: 0, ms: 0, latencies: createHistogram() },
    swapping: { requests: 0, ms: 0, latencies: createHistogram() },
  };
  const rates = { steady: [] as number[], swapping: [] as number[] };
  /** One window of a kind: count what is answered in it, and what it cost. */
  const runWindow = async (kind: 'steady' | 'swapping') => {
    const window: Window = { requests: 0, ms: 0, latencies: createHistogram() };
    current = window;
    cpu[kind].begin();
    const began = performance.now();
    const publishing = kind === 'swapping' ? publish() : null;
    await delay(windowMs);
    window.ms = performance.now() - began;
    cpu[kind].end();
    current = null;
    await publishing?.stop();
    const total = totals[kind];
    total.requests += window.requests;
    total.ms += window.ms;
    total.latencies.add(window.latencies);
    rates[kind].push(Math.round((window.requests / window.ms) * 1000));
  };

  /** Hang up on purpose at one stage of a request, over a raw socket. */
  const abortOne = async (port: number, i: number) => {
    const file = FILES[(i * 5) % FILES.length] as SoakFile;
    const stage = i % 4;
    const headers = [
      '',
      '',
      'If-None-Match: *\r\n', // a 304
      `Range: bytes=0-${Math.max(0, file.size - 2)}\r\n`,
    ][stage];
    await new Promise<void>((resolve) => {
      const socket = connect(port, '127.0.0.1', () => {
        socket.write(`GET /${file.path} HTTP/1.1\r\nHost: soak\r\n${headers}\r\n`);
        if (stage === 0) socket.destroy(); // gone right after sending: during the lookup
      });
      socket.once('data', () => socket.destroy()); // gone at the first byte: mid-stream
      socket.once('error', () => resolve());
      socket.once('close', () => resolve());
      setTimeout(() => socket.destroy(), 2000).unref();
    });
    report.aborted++;
  };
  const aborter = async () => {
    for (let i = 0; running; i++) {
      await abortOne((targets[i % targets.length] as WebTarget).port, i);
      await delay(5);
    }
  };
  const stalling = staller ? { port: staller.port, pool: new Pool(staller.url, { connections: 2 }) } : null;
  /** Checked requests to the stalling server, not counted in the windows. */
  const stalledClient = async () => {
    if (!stalling) return;
    for (let i = 0; running; i++) {
      const file = FILES[(i * 3) % FILES.length] as SoakFile;
      const startedSeen = seen.get(stalling.port) ?? 0;
      try {
        const res = await stalling.pool.request({ method: 'GET', path: `/${file.path}` });
        const bodyBytes = Buffer.from(await res.body.arrayBuffer());
        report.stalledServerRequests++;
        check(stalling.port, file, null, res.statusCode, res.headers.etag, bodyBytes, startedSeen);
      } catch (err) {
        report.errors++;
        problem(`request error on the stalling server: ${(err as Error).message}`);
      }
    }
  };
  /** Stop the stalling server past the agent's lease (3 s), resume it, and again. */
  const staller$ = async () => {
    if (!staller) return;
    const pid = staller.proc.child.pid as number;
    while (running) {
      await delay(1500);
      if (!running) break;
      process.kill(pid, 'SIGSTOP');
      await delay(4000);
      process.kill(pid, 'SIGCONT');
      report.stalls++;
    }
  };

  const hostiles = hostile ? [aborter(), aborter(), stalledClient(), staller$()] : [];
  const workers = Array.from({ length: connections }, (_, n) => worker(n));
  const t0 = Date.now();
  await delay(2000); // connections open, code warm, caches full
  const more = () =>
    Date.now() - t0 < durationMs || report.windows < 2 || (report.swaps < minSwaps && Date.now() - t0 < maxDurationMs);
  while (more()) {
    // quiet, swapping, then swapping, quiet: a drift over the run weighs on both kinds alike
    const order = report.windows % 2 === 0 ? (['steady', 'swapping'] as const) : (['swapping', 'steady'] as const);
    for (const kind of order) await runWindow(kind);
    report.windows++;
  }
  running = false;
  await Promise.all(workers);
  await Promise.all(hostiles);
  await publisher.terminate();
  // With every client gone, every server must come back to nothing in flight: a count left over
  // is a slot that could never be drained again.
  const settleBy = Date.now() + 5000;
  for (;;) {
    const heartbeats = await readHeartbeats(store.serversDir);
    report.leakedCounts = heartbeats.reduce((n, hb) => n + hb.inflight.a + hb.inflight.b, 0);
    if (report.leakedCounts === 0 || Date.now() > settleBy) break;
    await delay(100);
  }
  if (report.leakedCounts > 0) problem(`${report.leakedCounts} requests still counted in flight with no client left`);

  report.steadyRps = (totals.steady.requests / totals.steady.ms) * 1000;
  report.swappingRps = (totals.swapping.requests / totals.swapping.ms) * 1000;
  report.ratio = report.steadyRps > 0 ? report.swappingRps / report.steadyRps : 0;
  const quietRates = rates.steady;
  report.windowRps = rates;
  const half = Math.floor(quietRates.length / 2);
  const mean = (xs: number[]) => xs.reduce((sum, x) => sum + x, 0) / (xs.length || 1);
  report.quietRatio = mean(quietRates.slice(half)) / (mean(quietRates.slice(0, half)) || 1);
  const pairs = rates.swapping.map((rps, i) => rps / (rates.steady[i] || 1));
  const pairMean = mean(pairs);
  const sd = Math.sqrt(pairs.reduce((sum, r) => sum + (r - pairMean) ** 2, 0) / Math.max(1, pairs.length - 1));
  const margin = (2 * sd) / Math.sqrt(pairs.length || 1);
  report.ratioInterval = [pairMean - margin, pairMean + margin];
  report.latency = { steady: percentiles(totals.steady.latencies), swapping: percentiles(totals.swapping.latencies) };
  report.cpu = { steady: cpu.steady.share(), swapping: cpu.swapping.share() };
  await Promise.all(targets.map((t) => t.pool.close()));
  await stalling?.pool.close();
  for (const w of staller ? [...webs, staller] : webs) await w.proc.kill('SIGTERM');
  await agent.proc.kill('SIGTERM');
  await store.dispose();
  return report;
}
