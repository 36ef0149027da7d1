/**
 * One server under test, in its own process so the load generator does not
 * share its event loop: `node serve-target.js <static|mirror> <store> [cacheMaxBytes]`.
 * Prints its port on stdout.
 */
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import express from 'express';
import { mirrorStatic } from '../middleware/mirror-static.js';

const [kind, store, cacheMaxBytes] = process.argv.slice(2);
if ((kind !== 'static' && kind !== 'mirror') || !store) {
  console.error('usage: serve-target.js <static|mirror> <store> [cacheMaxBytes]');
  process.exit(2);
}
const app = express();
if (kind === 'static') {
  app.use(express.static(join(store, 'a')));
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
