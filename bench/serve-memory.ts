/**
 * Resident memory while serving many distinct files, against the cache
 * budget: mirrorStatic on bare node:http (as `mirrorswap serve` runs it) and
 * express.static on the same sweeps. Each sweep requests every file twice
 * (32 keep-alive connections); the mirror target is then switched to the
 * other copy and swept again, so the old epoch's cache must be let go.
 *
 *   node dist/bench/serve-memory.js [--files 10000,100000] [--budget-mib 64] [--size 2048]
 *
 * Sizes run from 1 KB to 64 KB (most small, as on real sites: 60% 1-4 KB,
 * 30% 4-16 KB, 10% 16-64 KB). A sweep of 1,000,000 files (`--files 1000000`)
 * needs about 10 GB of disk and a long while; the README says what it gives.
 */
import { Agent, get } from 'node:http';
import { link, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { publishEpoch } from '../src/store/publish.js';
import { storeLayout } from '../src/store/store-layout.js';
import { machine, rss, startTarget, stop } from './lib.js';

function option(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? dflt : (process.argv[i + 1] as string);
}

const MIB = 1024 * 1024;

/** `--size N`: every file N bytes (issue 31's sweep is 2 KB files), instead of the mix below. */
const FIXED_SIZE = Number(option('size', '0'));

/** A size for file `i`: deterministic, most of them small. */
function sizeOf(i: number): number {
  if (FIXED_SIZE > 0) return FIXED_SIZE;
  const r = ((i * 2654435761) >>> 0) / 2 ** 32;
  if (r < 0.6) return 1024 + Math.floor(r * 5000);
  if (r < 0.9) return 4096 + Math.floor((r - 0.6) * 40_000);
  return 16_384 + Math.floor((r - 0.9) * 480_000);
}

async function makeStore(files: number): Promise<{ root: string; paths: string[]; bytes: number }> {
  const layout = storeLayout(await mkdtemp(join(tmpdir(), 'mirrorswap-mem-')));
  const paths: string[] = [];
  let bytes = 0;
  const fill = Buffer.alloc(64 * 1024 + 1, 'm');
  for (let d = 0; d * 1000 < files; d++) {
    await mkdir(join(layout.slots.a, `d${d}`), { recursive: true });
    await mkdir(join(layout.slots.b, `d${d}`), { recursive: true });
  }
  for (let i = 0; i < files; i++) {
    const rel = `d${Math.floor(i / 1000)}/f${i}.html`;
    const size = sizeOf(i);
    await writeFile(join(layout.slots.a, rel), fill.subarray(0, size));
    // the other copy shares the bytes: what is measured is the server, not the disk
    await link(join(layout.slots.a, rel), join(layout.slots.b, rel));
    paths.push(`/${rel}`);
    bytes += size;
  }
  await mkdir(layout.serversDir, { recursive: true });
  await publishEpoch(layout, 1, 'a');
  return { root: layout.root, paths, bytes };
}

const agent = new Agent({ keepAlive: true, maxSockets: 32 });

function fetchOnce(port: number, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    get({ host: '127.0.0.1', port, path, agent }, (res) => {
      let n = 0;
      res.on('data', (c: Buffer) => {
        n += c.length;
      });
      res.on('end', () => (res.statusCode === 200 ? resolve(n) : reject(new Error(`${path}: ${res.statusCode}`))));
    }).on('error', reject);
  });
}

/** Every path twice, 32 at a time; requests per second. */
async function sweep(port: number, paths: string[]): Promise<number> {
  const started = performance.now();
  let next = 0;
  const total = paths.length * 2;
  await Promise.all(
    Array.from({ length: 32 }, async () => {
      while (next < total) {
        const i = next++;
        await fetchOnce(port, paths[i % paths.length] as string);
      }
    }),
  );
  return total / ((performance.now() - started) / 1000);
}

async function memory(port: number): Promise<NodeJS.MemoryUsage> {
  return new Promise((resolve, reject) => {
    get({ host: '127.0.0.1', port, path: '/__memory', agent }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => {
        text += c.toString();
      });
      res.on('end', () => resolve(JSON.parse(text) as NodeJS.MemoryUsage));
    }).on('error', reject);
  });
}

const mib = (n: number) => `${(n / MIB).toFixed(0)} MiB`;

async function measure(kind: 'mirror-node' | 'static', store: string, paths: string[], budget: number) {
  const target = await startTarget('./serve-target.js', [kind, store, String(budget)]);
  await fetchOnce(target.port, paths[0] as string);
  const idle = rss(target.pid);
  const rps = await sweep(target.port, paths);
  const afterPass = rss(target.pid);
  const usage = await memory(target.port);
  const heap = usage.heapUsed;
  // under --expose-gc (NODE_OPTIONS) the target also says what is live after a full collection
  if ('liveHeap' in usage) console.error(`# ${kind}: ${JSON.stringify(usage)}`);
  let afterSwap: number | null = null;
  if (kind === 'mirror-node') {
    await publishEpoch(storeLayout(store), 2, 'b');
    // a request of the new epoch answers from b: wait until the server switched
    await new Promise((r) => setTimeout(r, 1500));
    await sweep(target.port, paths);
    afterSwap = rss(target.pid);
  }
  await stop(target.child);
  return { idle, afterPass, afterSwap, heap, rps };
}

async function main(): Promise<void> {
  const budget = Number(option('budget-mib', '64')) * MIB;
  const counts = option('files', '10000,100000').split(',').map(Number);
  console.log(`# serving memory, ${machine()}; cacheMaxBytes ${mib(budget)}\n`);
  console.log(
    '| files | server | idle RSS | after a pass | growth | after a swap | growth / budget | above express.static / budget | heap used | req/s |',
  );
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const files of counts) {
    const { root, paths } = await makeStore(files);
    // serve-static first: its growth is what the mirror's is compared with (each in a fresh process)
    const s = await measure('static', root, paths, budget);
    const staticGrowth = s.afterPass - s.idle;
    const m = await measure('mirror-node', root, paths, budget);
    const worst = Math.max(m.afterPass, m.afterSwap ?? 0) - m.idle;
    for (const [name, r] of [
      ['mirrorStatic', m],
      ['express.static', s],
    ] as const) {
      const mirror = r === m;
      console.log(
        `| ${files} | ${name} | ${mib(r.idle)} | ${mib(r.afterPass)} | ${mib(r.afterPass - r.idle)} | ${r.afterSwap === null ? '-' : mib(r.afterSwap)} | ${mirror ? (worst / budget).toFixed(2) : '-'} | ${mirror ? ((worst - staticGrowth) / budget).toFixed(2) : '-'} | ${mib(r.heap)} | ${r.rps.toFixed(0)} |`,
      );
    }
    await rm(root, { recursive: true, force: true });
  }
  agent.destroy();
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
