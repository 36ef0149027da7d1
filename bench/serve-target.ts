/**
 * One server under test, in its own process so the load generator does not
 * share its event loop: `node serve-target.js <static|mirror|ceiling> <store> [cacheMaxBytes]`.
 * "ceiling" is the same Express app whose only middleware answers every
 * request with one 2 KB buffer made at start and the headers mirrorStatic
 * sends: the most any static middleware can do under Express here.
 * Prints its port on stdout.
 */
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import express from 'express';
import { mirrorStatic } from '../middleware/mirror-static.js';

const [kind, store, cacheMaxBytes] = process.argv.slice(2);
if ((kind !== 'static' && kind !== 'mirror' && kind !== 'ceiling') || !store) {
  console.error('usage: serve-target.js <static|mirror|ceiling> <store> [cacheMaxBytes]');
  process.exit(2);
}
const app = express();
if (kind === 'static') {
  app.use(express.static(join(store, 'a')));
} else if (kind === 'ceiling') {
  const body = Buffer.alloc(2048, 97);
  const headers = {
    'Accept-Ranges': 'bytes',
    'Cache-Control': 'public, max-age=0',
    'Last-Modified': new Date().toUTCString(),
    ETag: 'W/"800-19ab2c3d4e5"',
    'Content-Type': 'text/html; charset=utf-8',
    'Content-Length': String(body.length),
  };
  app.use((_req, res) => {
    res.writeHead(200, headers);
    res.end(body);
  });
} else {
  const mw = mirrorStatic({
    store,
    watch: 'native',
    ...(cacheMaxBytes ? { cacheMaxBytes: Number(cacheMaxBytes) } : {}),
  });
  await mw.ready;
  app.use(mw);
}
const server = app.listen(0, '127.0.0.1', () => {
  console.log((server.address() as AddressInfo).port);
});
process.on('SIGTERM', () => process.exit(0));
