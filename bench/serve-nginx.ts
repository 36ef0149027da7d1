/**
 * `mirrorswap serve` against nginx (one worker, sendfile and open_file_cache
 * on) over the same 2 KB files, side by side in one run; the same middleware
 * under Express, which decided that `serve` uses bare node:http; bare
 * node:http answering one buffer from memory, the ceiling of any server on
 * Node's HTTP stack; and the latency mirrorProxy adds in front of an upstream.
 *
 *   npm run bench:nginx [-- --duration 10 --rounds 2]
 */
import type { ChildProcess } from 'node:child_process';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { benchStore, flag, machine, startBenchNginx, startServe, startTarget, stop, wrk } from './lib.js';

const duration = flag('duration', 10);
const rounds = flag('rounds', 2);

/** nginx serving the slot, its own files beside the store. */
function startNginx(root: string, slotRoot: string): Promise<{ child: ChildProcess; port: number }> {
  return startBenchNginx(join(root, 'nginx'), `server { listen 127.0.0.1:PORT; root ${slotRoot}; }`);
}

async function main(): Promise<void> {
  const layout = await benchStore('mirrorswap-nginx-', async (dir) => {
    for (let i = 0; i < 500; i++) await writeFile(join(dir, `f${i}.html`), Buffer.alloc(2048, 97 + (i % 26)));
  });
  const store = layout.root;
  const root = layout.root; // nginx's own files go beside the slots
  const paths = Array.from({ length: 500 }, (_, i) => `/f${i}.html`);
  const results: Record<string, { rps: number[]; p99: number[] }> = {};
  const add = (k: string, r: { rps: number; p99: number }) => {
    results[k] ??= { rps: [], p99: [] };
    results[k].rps.push(r.rps);
    results[k].p99.push(r.p99);
  };
  const kinds = ['nginx', 'node-ceiling', 'serve', 'express'] as const;
  for (let round = 0; round < rounds; round++) {
    for (const kind of round % 2 === 0 ? kinds : [...kinds].reverse()) {
      const t =
        kind === 'nginx'
          ? await startNginx(root, join(store, 'a'))
          : kind === 'serve'
            ? await startServe(store)
            : await startTarget('./serve-target.js', [kind === 'express' ? 'mirror' : kind, store]);
      add(kind, await wrk(`http://127.0.0.1:${t.port}`, paths, { connections: 50, duration }));
      await stop(t.child);
    }
  }
  // proxy latency: one request at a time (no queueing), straight at nginx and through mirrorProxy;
  // then 10 connections, which saturates the proxy on this machine
  const nginx = await startNginx(root, join(store, 'a'));
  const proxy = await startTarget('./proxy-target.js', [store, `http://127.0.0.1:${nginx.port}`]);
  for (let round = 0; round < rounds; round++) {
    add('direct', await wrk(`http://127.0.0.1:${nginx.port}`, paths, { connections: 1, duration }));
    add('proxied', await wrk(`http://127.0.0.1:${proxy.port}`, paths, { connections: 1, duration }));
    add('direct10', await wrk(`http://127.0.0.1:${nginx.port}`, paths, { connections: 10, duration }));
    add('proxied10', await wrk(`http://127.0.0.1:${proxy.port}`, paths, { connections: 10, duration }));
  }
  await stop(proxy.child);
  await stop(nginx.child);
  await rm(root, { recursive: true, force: true });

  const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;
  const r = (k: string) => results[k] as { rps: number[]; p99: number[] };
  console.log(
    `machine: ${machine()}; wrk, 1 thread, ${duration} s per run, ${rounds} rounds alternating order; 500 files of 2 KB\n`,
  );
  console.log('| server | req/s | p99 | ratio to nginx |');
  console.log('|---|---|---|---|');
  for (const k of kinds) {
    const label = {
      nginx: 'nginx 1 worker, sendfile, open_file_cache',
      'node-ceiling': 'bare node:http, one 2 KB buffer from memory (the ceiling)',
      serve: 'mirrorswap serve (bare node:http)',
      express: 'mirrorStatic under Express',
    }[k];
    console.log(
      `| ${label} | ${mean(r(k).rps).toFixed(0)} | ${mean(r(k).p99).toFixed(2)} ms | **${(mean(r(k).rps) / mean(r('nginx').rps)).toFixed(2)}x** |`,
    );
  }
  const line = (d: string, p: string, label: string) =>
    `- ${label}: p99 direct to nginx ${mean(r(d).p99).toFixed(2)} ms, through mirrorProxy ${mean(r(p).p99).toFixed(2)} ms: ` +
    `**+${(mean(r(p).p99) - mean(r(d).p99)).toFixed(2)} ms** at p99 (${mean(r(d).rps).toFixed(0)} vs ${mean(r(p).rps).toFixed(0)} req/s)`;
  console.log('\nproxy path, added latency:');
  console.log(line('direct', 'proxied', '1 connection (one request at a time)'));
  console.log(line('direct10', 'proxied10', '10 connections (the proxy saturated)'));
}

await main();
