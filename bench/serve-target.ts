/**
 * One server under test, in its own process so the load generator does not
 * share its event loop:
 * `node serve-target.js <static|mirror|ceiling|node-ceiling> <store> [cacheMaxBytes]`.
 * "ceiling" is the same Express app whose only middleware answers every
 * request with one 2 KB buffer made at start and the headers mirrorStatic
 * sends: the most any static middleware can do under Express here.
 * "node-ceiling" does the same on bare node:http: the most any server on
 * Node's HTTP stack can do here. "compression" is express.static behind the
 * `compression` middleware, compressing every answer as it goes (what users
 * of express.static run today for compressed answers). Prints its port on stdout.
 */
import { type IncomingMessage, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { getHeapStatistics, writeHeapSnapshot } from 'node:v8';
import compression from 'compression';
import express from 'express';
import { mirrorStatic } from '../middleware/static/mirror-static.js';

const KINDS = ['static', 'mirror', 'mirror-node', 'ceiling', 'node-ceiling', 'compression'];
const [kind, store, cacheMaxBytes] = process.argv.slice(2);
if (!kind || !KINDS.includes(kind) || !store) {
  console.error(`usage: serve-target.js <${KINDS.join('|')}> <store> [cacheMaxBytes]`);
  process.exit(2);
}

/** Answer every request with one 2 KB buffer and the headers mirrorStatic sends for such a file. */
function fixedAnswer(): (req: IncomingMessage, res: ServerResponse) => void {
  const body = Buffer.alloc(2048, 97);
  const headers = {
    'Accept-Ranges': 'bytes',
    'Cache-Control': 'public, max-age=0',
    'Last-Modified': new Date().toUTCString(),
    ETag: 'W/"800-19ab2c3d4e5"',
    'Content-Type': 'text/html; charset=utf-8',
    'Content-Length': String(body.length),
  };
  return (_req, res) => {
    res.writeHead(200, headers);
    res.end(body);
  };
}

let handler: (req: IncomingMessage, res: ServerResponse) => void;
if (kind === 'node-ceiling') {
  handler = fixedAnswer();
} else if (kind === 'mirror-node') {
  // mirrorStatic on bare node:http, as `mirrorswap serve` runs it
  const mw = mirrorStatic({
    store,
    watch: 'native',
    ...(cacheMaxBytes ? { cacheMaxBytes: Number(cacheMaxBytes) } : {}),
  });
  await mw.ready;
  handler = (req, res) =>
    mw(req, res, () => {
      res.statusCode = 404;
      res.end();
    });
} else {
  const app = express();
  if (kind === 'static') {
    app.use(express.static(join(store, 'a')));
  } else if (kind === 'compression') {
    app.use(compression());
    app.use(express.static(join(store, 'a')));
  } else if (kind === 'ceiling') {
    app.use(fixedAnswer());
  } else {
    const mw = mirrorStatic({
      store,
      watch: 'native',
      ...(cacheMaxBytes ? { cacheMaxBytes: Number(cacheMaxBytes) } : {}),
    });
    await mw.ready;
    app.use(mw);
  }
  handler = app;
}
/**
 * `GET /__memory` answers process.memoryUsage(), for the memory benchmark.
 * Under `--expose-gc` it also answers the heap after a full collection
 * (`liveHeap`: what is really held, against what V8 keeps); with
 * `MIRRORSWAP_HEAP_SNAPSHOT=<dir>` it writes a heap snapshot there first
 * (read with `bench/heap-summary.js`).
 */
const served = handler;
const snapshotDir = process.env.MIRRORSWAP_HEAP_SNAPSHOT;
const withMemory = (req: IncomingMessage, res: ServerResponse) => {
  if (req.url === '/__memory') {
    const usage: Record<string, number | string> = { ...process.memoryUsage() };
    const gc = (globalThis as { gc?: () => void }).gc;
    if (gc) {
      gc();
      usage.liveHeap = process.memoryUsage().heapUsed;
      usage.heapLimit = getHeapStatistics().total_heap_size;
    }
    if (snapshotDir) usage.snapshot = writeHeapSnapshot(join(snapshotDir, `${kind}-${process.pid}.heapsnapshot`));
    res.setHeader('Content-Type', 'application/json');
    res.end(JSON.stringify(usage));
    return;
  }
  served(req, res);
};
const server = createServer(withMemory).listen(0, '127.0.0.1', () => {
  console.log((server.address() as AddressInfo).port);
});
process.on('SIGTERM', () => process.exit(0));
