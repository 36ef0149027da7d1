/**
 * The reverse proxy, side by side in one run: wrk straight at an upstream
 * (nginx serving 2 KB files), through nginx `proxy_pass` (keep-alive to the
 * upstream), through this build's mirrorProxy and, with `--a`, through another
 * build's (the previous forwarder), in interleaved rounds, at 1 and 10
 * connections. Prints req/s, p99 and the p99 each proxy adds over a direct
 * request, and the ratio B/A.
 *
 *   npm run bench:proxy -- [--a /path/to/old/dist/bench/proxy-target.js] [--rounds 3] [--duration 5]
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchStore, flag, machine, startBenchNginx, stop, wrk } from './lib.js';

function option(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? undefined : process.argv[i + 1];
}

/** A proxy-target.js (this build's, or another's) in front of `upstream`. */
async function proxyTarget(script: string, store: string, upstream: string) {
  const child = spawn(process.execPath, [script, store, upstream], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout?.once('data', (d: Buffer) => resolve(Number(d.toString().trim().split(/\s+/)[0])));
    child.once('exit', (code) => reject(new Error(`${script} exited with ${code}`)));
  });
  return { child, port };
}

async function main(): Promise<void> {
  const duration = flag('duration', 5);
  const rounds = flag('rounds', 3);
  const previous = option('a');
  const layout = await benchStore('mirrorswap-proxy-ab-', async (dir) => {
    for (let i = 0; i < 500; i++) await writeFile(join(dir, `f${i}.html`), Buffer.alloc(2048, 97 + (i % 26)));
  });
  const root = layout.root;
  const paths = Array.from({ length: 500 }, (_, i) => `/f${i}.html`);
  const origin = await startBenchNginx(
    join(root, 'origin'),
    `server { listen 127.0.0.1:PORT; root ${layout.slots.a}; }`,
  );
  const front = await startBenchNginx(
    join(root, 'front'),
    `upstream app { server 127.0.0.1:${origin.port}; keepalive 64; }
  server { listen 127.0.0.1:PORT; location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; } }`,
  );
  const targets: { name: string; port: () => Promise<{ port: number; child?: ChildProcess }> }[] = [
    { name: 'direct', port: async () => ({ port: origin.port }) },
    { name: 'nginx proxy_pass', port: async () => ({ port: front.port }) },
    {
      name: 'mirrorProxy (this build)',
      port: () =>
        proxyTarget(
          fileURLToPath(new URL('./proxy-target.js', import.meta.url)),
          root,
          `http://127.0.0.1:${origin.port}`,
        ),
    },
  ];
  if (previous)
    targets.push({
      name: 'mirrorProxy (previous build)',
      port: () => proxyTarget(previous, root, `http://127.0.0.1:${origin.port}`),
    });
  const results = new Map<string, { rps: number[]; p99: number[] }>();
  for (let round = 0; round < rounds; round++) {
    // alternate the order, so drift over the run hits every target alike
    const order = round % 2 === 0 ? targets : [...targets].reverse();
    for (const t of order) {
      const { port, child } = await t.port();
      for (const connections of [1, 10]) {
        await wrk(`http://127.0.0.1:${port}`, paths, { connections, duration: 1 }); // warm-up
        const r = await wrk(`http://127.0.0.1:${port}`, paths, { connections, duration });
        if (r.errors > 0) throw new Error(`${t.name}: ${r.errors} errors`);
        const key = `${t.name}|${connections}`;
        const entry = results.get(key) ?? { rps: [], p99: [] };
        entry.rps.push(r.rps);
        entry.p99.push(r.p99);
        results.set(key, entry);
      }
      if (child) await stop(child);
    }
  }
  await stop(front.child);
  await stop(origin.child);
  await rm(root, { recursive: true, force: true });

  const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)] as number;
  console.log(
    `machine: ${machine()}; wrk 1 thread, ${duration} s per run, ${rounds} rounds in alternating order; 500 files of 2 KB from nginx\n`,
  );
  for (const connections of [1, 10]) {
    const direct = results.get(`direct|${connections}`) as { rps: number[]; p99: number[] };
    console.log(`### ${connections} connection${connections > 1 ? 's' : ''}\n`);
    console.log('| path | req/s (median) | p99 (median) | p99 added over direct |');
    console.log('|---|---|---|---|');
    for (const t of targets) {
      const r = results.get(`${t.name}|${connections}`) as { rps: number[]; p99: number[] };
      const added = t.name === 'direct' ? '' : `+${(median(r.p99) - median(direct.p99)).toFixed(2)} ms`;
      console.log(`| ${t.name} | ${median(r.rps).toFixed(0)} | ${median(r.p99).toFixed(2)} ms | ${added} |`);
    }
    if (previous) {
      const a = results.get(`mirrorProxy (previous build)|${connections}`) as { rps: number[] };
      const b = results.get(`mirrorProxy (this build)|${connections}`) as { rps: number[] };
      const ratios = b.rps.map((x, i) => (x / (a.rps[i] as number)).toFixed(2));
      console.log(
        `\nthis build / previous, req/s by round: ${ratios.join(', ')} (median **${median(b.rps.map((x, i) => x / (a.rps[i] as number))).toFixed(2)}x**)`,
      );
    }
    console.log('');
  }
}

await main();
