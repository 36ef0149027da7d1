/**
 * nginx managed by `mirrorswap nginx` against the same nginx with a fixed
 * root, side by side in one run: throughput on 2 KB files (the switch
 * machinery must cost nothing per request), the latency from a publish to
 * the first answer from the new copy (against the middleware's, `mirrorswap
 * serve`, measured the same way), and throughput while swaps follow each
 * other as a fraction of steady.
 *
 *   node dist/bench/nginx-companion.js [--duration 8 --rounds 2 --swaps 40]
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { publishEpoch } from '../src/store/publish.js';
import { NginxCompanion } from '../src/nginx/companion.js';
import type { SlotName, StoreLayout } from '../src/store/store-layout.js';
import {
  benchStore,
  flag,
  freePort,
  machine,
  percentile,
  requireCommand,
  startServe,
  stop,
  waitForPort,
  wrk,
} from './lib.js';

const duration = flag('duration', 8);
const rounds = flag('rounds', 2);
const swaps = flag('swaps', 40);
const quiet = { info: () => {}, warn: () => {}, error: (o: object, m: string) => console.error(m, o) };

async function startNginx(
  dir: string,
  server: string,
): Promise<{ child: ChildProcess; port: number; pidFile: string }> {
  const port = await freePort();
  await mkdir(join(dir, 'tmp'), { recursive: true });
  const conf = join(dir, 'nginx.conf');
  const pidFile = join(dir, 'nginx.pid');
  const user = process.getuid?.() === 0 ? 'user root;' : '';
  await writeFile(
    conf,
    `${user} daemon off; worker_processes 1; pid ${pidFile}; error_log ${dir}/error.log;
events { worker_connections 4096; }
http {
  access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;
  open_file_cache max=10000 inactive=60s; open_file_cache_valid 60s;
  client_body_temp_path ${dir}/tmp; proxy_temp_path ${dir}/tmp; fastcgi_temp_path ${dir}/tmp;
  uwsgi_temp_path ${dir}/tmp; scgi_temp_path ${dir}/tmp;
  types { text/html html; }
  server { listen 127.0.0.1:${port}; ${server} }
}
`,
  );
  const child = spawn('nginx', ['-p', dir, '-c', conf], { stdio: 'inherit' });
  await waitForPort(port);
  return { child, port, pidFile };
}

/** Publish epochs in turn; after each, poll `path` until the new copy answers. Milliseconds from the rename. */
async function propagation(
  layout: StoreLayout,
  port: number,
  firstEpoch: number,
  settle: () => Promise<void>,
): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < swaps; i++) {
    const epoch = firstEpoch + i;
    const slot: SlotName = epoch % 2 === 0 ? 'b' : 'a';
    const t = performance.now();
    await publishEpoch(layout, epoch, slot);
    const published = performance.now();
    for (;;) {
      const body = await fetch(`http://127.0.0.1:${port}/which.txt`, { headers: { connection: 'close' } })
        .then((r) => r.text())
        .catch(() => '');
      if (body === slot) break;
      await new Promise((r) => setTimeout(r, 1));
    }
    times.push(performance.now() - published);
    void t;
    await settle();
  }
  return times.sort((x, y) => x - y);
}

async function main(): Promise<void> {
  requireCommand('nginx');
  requireCommand('wrk');
  const layout = await benchStore('mirrorswap-nginx-companion-', async (dir, slot) => {
    for (let i = 0; i < 500; i++) await writeFile(join(dir, `f${i}.html`), Buffer.alloc(2048, 97 + (i % 26)));
    await writeFile(join(dir, 'which.txt'), slot);
  });
  const paths = Array.from({ length: 500 }, (_, i) => `/f${i}.html`);
  const includeFile = join(layout.root, 'nginx-managed', 'root.conf');
  await mkdir(join(layout.root, 'nginx-managed'), { recursive: true });
  const companionOptions = {
    layout,
    includeFile,
    pidFile: join(layout.root, 'nginx-managed', 'nginx.pid'),
    reloadTimeout: 5000,
    retryInterval: 1000,
    serverId: 'nginx-bench',
    heartbeatInterval: 1000,
    watch: 'native' as const,
    pollInterval: 250,
    logger: quiet,
  };
  const companion = await NginxCompanion.start(companionOptions);
  const managed = await startNginx(join(layout.root, 'nginx-managed'), `include ${includeFile};`);
  const fixed = await startNginx(join(layout.root, 'nginx-fixed'), `root ${layout.slots.a};`);
  const settle = async () => {
    await companion.settled();
    while (companion.status().master !== managed.child.pid || Object.keys(companion.status().retired).length > 0)
      await new Promise((r) => setTimeout(r, 5));
  };
  await settle();

  // 1. throughput, rounds alternating which goes first
  const rps = { managed: [] as number[], fixed: [] as number[] };
  for (let r = 0; r < rounds; r++) {
    for (const which of r % 2 === 0 ? (['fixed', 'managed'] as const) : (['managed', 'fixed'] as const)) {
      const port = which === 'managed' ? managed.port : fixed.port;
      const result = await wrk(`http://127.0.0.1:${port}`, paths, { connections: 50, duration });
      rps[which].push(result.rps);
      console.error(
        `  ${which}: ${result.rps.toFixed(0)} req/s, p99 ${result.p99.toFixed(2)} ms, errors ${result.errors}`,
      );
    }
  }
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

  // 2. publish to first answer from the new copy: the companion's nginx, and mirrorswap serve
  const nginxTimes = await propagation(layout, managed.port, 2, settle);
  const serve = await startServe(layout.root);
  const serveTimes = await propagation(layout, serve.port, 2 + swaps, async () => {});
  await stop(serve.child);

  // 3. throughput during back-to-back swaps (one every 250 ms) against steady
  await settle();
  const steady = await wrk(`http://127.0.0.1:${managed.port}`, paths, { connections: 50, duration });
  let swapping = true;
  let epoch = 2 + 2 * swaps;
  let swapCount = 0;
  const swapper = (async () => {
    while (swapping) {
      await publishEpoch(layout, epoch, epoch % 2 === 0 ? 'b' : 'a');
      epoch++;
      swapCount++;
      await new Promise((r) => setTimeout(r, 250));
    }
  })();
  const during = await wrk(`http://127.0.0.1:${managed.port}`, paths, { connections: 50, duration });
  swapping = false;
  await swapper;
  const reloads = /^mirrorswap_nginx_reloads_total (\d+)/m.exec(await companion.registry.metrics())?.[1];

  await companion.close();
  for (const n of [managed, fixed]) n.child.kill('SIGQUIT');
  const errorLog = await readFile(join(layout.root, 'nginx-managed', 'error.log'), 'utf8').catch(() => '');

  const p = (xs: number[], q: number) => percentile(xs, q).toFixed(1);
  console.log(`machine: ${machine()}; 500 files of 2 KB, wrk -t1 -c50, ${duration} s runs, ${rounds} rounds\n`);
  console.log('| measure | mirrorswap nginx | reference | ratio |');
  console.log('|---|---|---|---|');
  console.log(
    `| throughput, 2 KB files | ${mean(rps.managed).toFixed(0)} req/s | nginx, fixed root: ${mean(rps.fixed).toFixed(0)} req/s | **${(mean(rps.managed) / mean(rps.fixed)).toFixed(3)}x** |`,
  );
  console.log(
    `| publish to served from the new copy, p50 / p99 (${swaps} swaps) | ${p(nginxTimes, 50)} / ${p(nginxTimes, 99)} ms | mirrorswap serve: ${p(serveTimes, 50)} / ${p(serveTimes, 99)} ms | ${(percentile(nginxTimes, 50) / percentile(serveTimes, 50)).toFixed(1)}x at p50 |`,
  );
  console.log(
    `| throughput during swaps every 250 ms (${swapCount} swaps, ${reloads} reloads in all) | ${during.rps.toFixed(0)} req/s, errors ${during.errors} | steady: ${steady.rps.toFixed(0)} req/s | **${(during.rps / steady.rps).toFixed(3)}** |`,
  );
  if (/\[(emerg|alert)\]/.test(errorLog)) console.log(`\nnginx error log:\n${errorLog}`);
}

await main();
