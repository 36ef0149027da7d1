/**
 * Precompressed variants, side by side in one run:
 *
 * 1. a cached 20 KB JS file served as `br` by mirrorStatic (bare node:http,
 *    as `mirrorswap serve` runs it) against the same file as it is, against
 *    express.static behind the `compression` middleware (compressing each
 *    answer as it goes: what express.static users run today), and nginx's
 *    `gzip_static` (with the include the companion writes) beside them;
 * 2. bytes on the wire for a full page load of a real site corpus, with `br`
 *    against identity (and gzip): the JS, CSS, SVG and JSON of a few
 *    well-known front-end packages fetched from npm with `npm pack` (into a
 *    cache directory, once), laid out as a site with an index.html linking
 *    them.
 *
 * Variants are made as the agent makes them at sync, with zlib's defaults
 * (brotli quality 11, gzip level 6), by testkit/variants.ts.
 *
 *   node dist/bench/serve-compressed.js [--duration 10] [--rounds 1] [--connections 50]
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { renderInclude } from '../src/nginx/include-file.js';
import { writeVariantsFor } from '../testkit/variants.js';
import { benchStore, flag, machine, startBenchNginx, startTarget, stop, wrk } from './lib.js';

const duration = flag('duration', 10);
const rounds = flag('rounds', 1);
const connections = flag('connections', 50);

/** The corpus: npm packages (pinned), and which of their files the page loads. */
const PACKAGES: { spec: string; files: string[] }[] = [
  { spec: 'bootstrap@5.3.3', files: ['dist/css/bootstrap.min.css', 'dist/js/bootstrap.bundle.min.js'] },
  { spec: 'jquery@3.7.1', files: ['dist/jquery.min.js'] },
  { spec: 'react@18.3.1', files: ['umd/react.production.min.js'] },
  { spec: 'react-dom@18.3.1', files: ['umd/react-dom.production.min.js'] },
  { spec: 'bootstrap-icons@1.11.3', files: ['font/bootstrap-icons.min.css', 'font/bootstrap-icons.json'] },
];
/** SVGs of bootstrap-icons the page shows. */
const ICONS = 40;

const CACHE = join(tmpdir(), 'mirrorswap-bench-corpus');

/** Each package unpacked under CACHE/<name>/package, fetched once with `npm pack`. */
function fetchCorpus(): Map<string, string> {
  const dirs = new Map<string, string>();
  for (const { spec } of PACKAGES) {
    const name = spec.slice(0, spec.lastIndexOf('@'));
    const dir = join(CACHE, name);
    if (!existsSync(join(dir, 'package', 'package.json'))) {
      execFileSync('mkdir', ['-p', dir]);
      const tgz = execFileSync('npm', ['pack', spec, '--silent'], { cwd: dir, encoding: 'utf8' })
        .trim()
        .split('\n')
        .at(-1);
      execFileSync('tar', ['-xzf', tgz as string], { cwd: dir });
    }
    dirs.set(spec, join(dir, 'package'));
  }
  return dirs;
}

/** Lay the corpus out as a site in `slot`; the paths a page load requests. */
async function layOut(slot: string, corpus: Map<string, string>): Promise<string[]> {
  const paths: string[] = [];
  for (const { spec, files } of PACKAGES) {
    const name = spec.slice(0, spec.lastIndexOf('@'));
    for (const file of files) {
      const rel = posix.join('vendor', name, posix.basename(file));
      await mkdir(join(slot, posix.dirname(rel)), { recursive: true });
      await copyFile(join(corpus.get(spec) as string, file), join(slot, rel));
      paths.push(`/${rel}`);
    }
  }
  const iconsDir = join(corpus.get('bootstrap-icons@1.11.3') as string, 'icons');
  const icons = (await readdir(iconsDir))
    .filter((f) => f.endsWith('.svg'))
    .sort()
    .slice(0, ICONS);
  await mkdir(join(slot, 'icons'), { recursive: true });
  for (const icon of icons) {
    await copyFile(join(iconsDir, icon), join(slot, 'icons', icon));
    paths.push(`/icons/${icon}`);
  }
  const css = paths.filter((p) => p.endsWith('.css')).map((p) => `<link rel="stylesheet" href="${p}">`);
  const js = paths.filter((p) => p.endsWith('.js')).map((p) => `<script src="${p}"></script>`);
  const figures = icons.map(
    (icon) =>
      `<figure class="col-2 text-center"><img src="/icons/${icon}" alt="${icon}" width="32" height="32"><figcaption class="small text-muted">${icon.replace('.svg', '')}</figcaption></figure>`,
  );
  const html = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Icons</title>
${css.join('\n')}
</head>
<body>
<nav class="navbar navbar-expand-lg bg-body-tertiary"><div class="container-fluid"><a class="navbar-brand" href="/">Icons</a></div></nav>
<main class="container py-4">
<h1 class="display-5">A page of icons</h1>
<p class="lead">Every icon below is an SVG file of its own; the page loads Bootstrap, jQuery and React besides.</p>
<div class="row">
${figures.join('\n')}
</div>
<div id="root"></div>
</main>
${js.join('\n')}
<script>fetch('/vendor/bootstrap-icons/bootstrap-icons.json').then((r) => r.json()).then((m) => console.log(Object.keys(m).length));</script>
</body>
</html>
`;
  await writeFile(join(slot, 'index.html'), html);
  // the 20 KB JS file of the throughput runs: the first 20,000 bytes of Bootstrap's bundle
  const bundle = await readFile(join(slot, 'vendor', 'bootstrap', 'bootstrap.bundle.min.js'));
  await writeFile(join(slot, 'app.js'), bundle.subarray(0, 20_000));
  return ['/', ...paths];
}

/** One GET: bytes received (status line, headers and body, as sent) and the coding. */
function fetchBytes(port: number, path: string, ae: string | null): Promise<{ bytes: number; coding: string }> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = ae === null ? {} : { 'accept-encoding': ae };
    request({ host: '127.0.0.1', port, path, headers, agent: false }, (res) => {
      let bytes = `HTTP/1.1 ${res.statusCode} ${res.statusMessage}\r\n`.length + 2;
      for (let i = 0; i < res.rawHeaders.length; i += 2) {
        bytes += `${res.rawHeaders[i]}: ${res.rawHeaders[i + 1]}\r\n`.length;
      }
      res.on('data', (c: Buffer) => {
        bytes += c.length;
      });
      res.on('end', () =>
        res.statusCode === 200
          ? resolve({ bytes, coding: String(res.headers['content-encoding'] ?? 'identity') })
          : reject(new Error(`${path}: ${res.statusCode}`)),
      );
    })
      .on('error', reject)
      .end();
  });
}

async function pageLoad(port: number, paths: string[], ae: string | null): Promise<number> {
  let total = 0;
  for (const path of paths) total += (await fetchBytes(port, path, ae)).bytes;
  return total;
}

const BROWSER = 'gzip, deflate, br, zstd';

async function main(): Promise<void> {
  const corpus = fetchCorpus();
  let paths: string[] = [];
  const layout = await benchStore('mirrorswap-compressed-', async (slot) => {
    paths = await layOut(slot, corpus);
    const files = paths.map((p) => (p === '/' ? 'index.html' : p.slice(1)));
    writeVariantsFor(slot, [...files, 'app.js']);
  });
  const slotA = layout.slots.a;
  console.log(`# precompressed variants, ${machine()}\n`);
  console.log(
    `corpus: ${PACKAGES.map((p) => p.spec).join(', ')} (npm), ${ICONS} SVGs of bootstrap-icons, an index.html; ${paths.length} requests a page load\n`,
  );

  // 2. bytes on the wire, first (the servers are idle)
  const mirror = await startTarget('./serve-target.js', ['mirror-node', layout.root]);
  await pageLoad(mirror.port, paths, BROWSER); // warm
  const identity = await pageLoad(mirror.port, paths, null);
  const br = await pageLoad(mirror.port, paths, BROWSER);
  const gzip = await pageLoad(mirror.port, paths, 'gzip, deflate');
  console.log('| page load (mirrorStatic) | bytes on the wire | of identity |');
  console.log('| --- | --- | --- |');
  for (const [name, bytes] of [
    ['identity', identity],
    ['gzip', gzip],
    ['br', br],
  ] as const) {
    console.log(`| ${name} | ${bytes} | ${(bytes / identity).toFixed(3)}x |`);
  }
  const appBr = await fetchBytes(mirror.port, '/app.js', BROWSER);
  await stop(mirror.child);
  console.log(`\n20 KB JS file: ${appBr.bytes} bytes on the wire as ${appBr.coding}\n`);

  // 1. requests per second on one cached 20 KB JS file
  const include = join(layout.root, 'nginx-root.conf');
  await writeFile(include, renderInclude(1, 'a', slotA));
  const runs: {
    name: string;
    start: () => Promise<{ child: import('node:child_process').ChildProcess; port: number }>;
    ae: string | null;
  }[] = [
    {
      name: 'mirrorStatic, identity',
      start: () => startTarget('./serve-target.js', ['mirror-node', layout.root]),
      ae: null,
    },
    {
      name: 'mirrorStatic, br',
      start: () => startTarget('./serve-target.js', ['mirror-node', layout.root]),
      ae: BROWSER,
    },
    {
      name: 'express.static + compression, br',
      start: () => startTarget('./serve-target.js', ['compression', layout.root]),
      ae: BROWSER,
    },
    {
      name: 'nginx gzip_static, gzip',
      start: () => startBenchNginx(join(layout.root, 'nginx'), `server { listen 127.0.0.1:PORT; include ${include}; }`),
      ae: 'gzip',
    },
  ];
  const rps = new Map<string, number[]>();
  for (let round = 0; round < rounds; round++) {
    for (const run of round % 2 === 0 ? runs : [...runs].reverse()) {
      const t = await run.start();
      const coding = (await fetchBytes(t.port, '/app.js', run.ae)).coding;
      const r = await wrk(`http://127.0.0.1:${t.port}`, ['/app.js'], {
        connections,
        duration,
        ...(run.ae === null ? {} : { headers: { 'Accept-Encoding': run.ae } }),
      });
      await stop(t.child);
      if (r.errors > 0) throw new Error(`${run.name}: ${r.errors} errors`);
      const list = rps.get(run.name) ?? [];
      list.push(r.rps);
      rps.set(run.name, list);
      console.error(`  ${run.name} (${coding}): ${r.rps.toFixed(0)} req/s`);
    }
  }
  const best = (name: string) => Math.max(...(rps.get(name) as number[]));
  const base = best('mirrorStatic, br');
  console.log(
    `| one cached 20 KB JS file (${connections} connections, ${duration} s, best of ${rounds}) | req/s | mirrorStatic br / this |`,
  );
  console.log('| --- | --- | --- |');
  for (const run of runs) {
    console.log(`| ${run.name} | ${best(run.name).toFixed(0)} | ${(base / best(run.name)).toFixed(2)}x |`);
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
