/**
 * mirrorProxy in front of one upstream (both slots bound to it), for the
 * proxy-latency benchmark: `node proxy-target.js <store> <upstream-url>`. Prints its port.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mirrorProxy } from '../middleware/proxy/mirror-proxy.js';

const [store, upstream] = process.argv.slice(2) as [string, string];
const proxy = mirrorProxy({ store, upstreams: { a: upstream, b: upstream }, watch: 'native' });
await proxy.ready;
const server = createServer((req, res) => proxy(req, res, () => res.end()));
server.listen(0, '127.0.0.1', () => console.log((server.address() as AddressInfo).port));
process.on('SIGTERM', () => process.exit(0));
