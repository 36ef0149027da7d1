/**
 * mirrorStatic against express.static, side by side in one run, over the same
 * files: requests per second on 2 KB and 1 MB files, resident memory, and how
 * fast a publish reaches the first response.
 *
 *   npm run bench:serve [-- --duration 10 --rounds 2]
 */
import { mkdir, open, rename, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { fsyncDir } from '../src/store/atomic-write.js';
import { benchStore, flag, machine, percentile, rss, startTarget, stop, wrk } from './lib.js';

const duration = flag('duration', 10);
const rounds = flag('rounds', 2);
const connections = flag('connections', 50);
const CACHE_BUDGET = 64 * 1024 * 1024;

function makeStore(): Promise<string> {
  return benchStore('mirrorswap-bench-', async (dir, slot) => {
    await mkdir(join(dir, 'small'), { recursive: true });
    await mkdir(join(dir, 'large'), { recursive: true });
    for (let i = 0; i < 500; i++) await writeFile(join(dir, 'small', `f${i}.html`), Buffer.alloc(2048, 97 + (i % 26)));
    for (let i = 0; i < 20; i++) await writeFile(join(dir, 'large', `f${i}.bin`), Buffer.alloc(1024 * 1024, i));
    await writeFile(join(dir, 'v.txt'), slot);
  }).then((layout) => layout.root);
}

function load(port: number, paths: string[]): Promise<{ rps: number; p99: number; errors: number }> {
  return wrk(`http://127.0.0.1:${port}`, paths, { connections, duration });
}

function get(port: number, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    request({ host: '127.0.0.1', port, path }, (res) => {
      let body = '';
      res.on('data', (c) => {
        body += c;
      });
      res.on('end', () => resolve(body));
    })
      .on('error', reject)
      .end();
  });
}

/**
 * Publish the way the agent does (temp file, fsync, rename, fsync dir), then
 * poll until a response comes from the new copy. Times are taken from the
 * rename, the moment a server can first see the new epoch, and also from the
 * start of the durable write.
 */
async function propagation(
  store: string,
  port: number,
  samples: number,
): Promise<{ fromRename: number[]; fromWrite: number[] }> {
  const fromRename: number[] = [];
  const fromWrite: number[] = [];
  const stateDir = join(store, 'state');
  const epochFile = join(stateDir, 'epoch.json');
  let epoch = 1;
  for (let i = 0; i < samples; i++) {
    const slot = epoch % 2 === 1 ? 'b' : 'a';
    epoch += 1;
    const record = {
      format: 1,
      epoch,
      mounted: slot,
      roots: { a: join(store, 'a'), b: join(store, 'b') },
      publishedAt: new Date().toISOString(),
    };
    const began = performance.now();
    const tmp = join(stateDir, `.epoch.json.${process.pid}.tmp`);
    const handle = await open(tmp, 'w');
    await handle.writeFile(JSON.stringify(record));
    await handle.sync();
    await handle.close();
    const renamed = performance.now();
    await rename(tmp, epochFile);
    const synced = fsyncDir(stateDir); // the agent's last step, in parallel with the servers' switch
    while ((await get(port, '/v.txt')) !== slot) {
      if (performance.now() - renamed > 5000) throw new Error('a publish did not propagate within 5 s');
    }
    const now = performance.now();
    await synced;
    fromRename.push(now - renamed);
    fromWrite.push(now - began);
  }
  const sort = (xs: number[]) => xs.sort((x, y) => x - y);
  return { fromRename: sort(fromRename), fromWrite: sort(fromWrite) };
}

async function main(): Promise<void> {
  const store = await makeStore();
  const small = Array.from({ length: 500 }, (_, i) => `/small/f${i}.html`);
  const large = Array.from({ length: 20 }, (_, i) => `/large/f${i}.bin`);
  const totals: Record<string, { rps: number[]; p99: number[]; errors: number; rss: number }> = {};
  const record = (key: string, r: { rps: number; p99: number; errors: number }, mem: number) => {
    totals[key] ??= { rps: [], p99: [], errors: 0, rss: 0 };
    const t = totals[key];
    t.rps.push(r.rps);
    t.p99.push(r.p99);
    t.errors += r.errors;
    t.rss = Math.max(t.rss, mem);
  };
  for (let round = 0; round < rounds; round++) {
    // alternate the order each round so neither side always runs on a warmer machine
    const order =
      round % 2 === 0 ? (['static', 'mirror', 'ceiling'] as const) : (['ceiling', 'mirror', 'static'] as const);
    for (const kind of order) {
      const target = await startTarget('./serve-target.js', [kind, store, String(CACHE_BUDGET)]);
      record(`${kind} 2KB`, await load(target.port, small), rss(target.child.pid));
      if (kind !== 'ceiling') record(`${kind} 1MB`, await load(target.port, large), rss(target.child.pid));
      await stop(target.child);
    }
  }
  const target = await startTarget('./serve-target.js', ['mirror', store, String(CACHE_BUDGET)]);
  const prop = await propagation(store, target.port, 200);
  await stop(target.child);
  await rm(store, { recursive: true, force: true });

  const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;
  const row = (size: string) => {
    const s = totals[`static ${size}`];
    const m = totals[`mirror ${size}`];
    if (!s || !m) throw new Error('missing results');
    return `| ${size} | ${mean(s.rps).toFixed(0)} | ${mean(m.rps).toFixed(0)} | **${(mean(m.rps) / mean(s.rps)).toFixed(2)}x** | ${mean(s.p99).toFixed(1)} / ${mean(m.p99).toFixed(1)} ms | ${(s.rss / 2 ** 20).toFixed(0)} / ${(m.rss / 2 ** 20).toFixed(0)} MiB | ${s.errors + m.errors} |`;
  };
  console.log(
    `machine: ${machine()}; wrk, 1 thread, ${connections} connections, ${duration} s per run, ${rounds} rounds alternating order\n`,
  );
  console.log(
    '| files | express.static req/s | mirrorStatic req/s | ratio | p99 static / mirror | RSS static / mirror | errors |',
  );
  console.log('|---|---|---|---|---|---|---|');
  console.log(row('2KB'));
  console.log(row('1MB'));
  const ceiling = mean(totals['ceiling 2KB']?.rps ?? [0]);
  const mirror2k = mean(totals['mirror 2KB']?.rps ?? [0]);
  const static2k = mean(totals['static 2KB']?.rps ?? [1]);
  console.log(
    `\nExpress ceiling (one 2 KB buffer from memory, same headers): ${ceiling.toFixed(0)} req/s; ` +
      `mirrorStatic measured ${((100 * mirror2k) / ceiling).toFixed(0)}% of it; the ceiling itself is ` +
      `${(ceiling / static2k).toFixed(2)}x express.static, the most any middleware under Express could show here`,
  );
  const line = (xs: number[]) =>
    `p50 ${percentile(xs, 50).toFixed(2)} ms, p99 ${percentile(xs, 99).toFixed(2)} ms, max ${percentile(xs, 100).toFixed(2)} ms`;
  console.log(
    `\nswap propagation, native watching, ${prop.fromRename.length} swaps, to the first response from the new copy:`,
  );
  console.log(`  from the rename of the epoch file:   ${line(prop.fromRename)}`);
  console.log(`  from the start of the durable write: ${line(prop.fromWrite)}`);
  console.log(
    `cache budget ${CACHE_BUDGET / 2 ** 20} MiB; the 2 KB set is ${(500 * 2048) / 2 ** 20} MiB, 1 MB files are above cacheMaxFileSize and streamed`,
  );
}

await main();
