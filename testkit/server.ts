import { type RequestListener, type Server, createServer, request } from 'node:http';
import { type AddressInfo, connect, createServer as createNetServer } from 'node:net';

/** A real HTTP server on a loopback port. */
export interface Running {
  readonly server: Server;
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

export async function listen(handler: RequestListener): Promise<Running> {
  const server = createServer(handler);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    server,
    port,
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/**
 * Send a request with the path exactly as given (no normalisation, unlike
 * fetch and supertest), which hostile-path tests need.
 */
export function rawGet(
  port: number,
  path: string,
  headers: Record<string, string> = {},
  method = 'GET',
  body?: string | Buffer,
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** A TCP port free on loopback right now (for a child process that must be told its port). */
export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createNetServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/**
 * Ports below the ephemeral range (`ip_local_port_range`) that no service
 * of a test machine takes: a server listening on port 0 is never given one.
 */
const REFUSING_PORTS = [1, 2, 3, 4, 5, 6, 8, 10];

/**
 * The URL of a loopback port where nothing listens, the `n`th of a few
 * distinct ones: for a test of a client that is refused. Never a port freed
 * by a test (`freePort`, a server closed): test files run in processes side
 * by side, the next server listening on port 0 in any of them may be given
 * it, and the client under test would call that test's server. Checked to
 * refuse, else an error naming the port.
 */
export async function refusedUrl(n = 0): Promise<string> {
  const port = REFUSING_PORTS[n];
  if (port === undefined) throw new RangeError(`refusedUrl: ${REFUSING_PORTS.length} ports at most`);
  await new Promise<void>((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      reject(new Error(`refusedUrl: something listens on 127.0.0.1:${port}; a test needs it refusing`));
    });
    socket.once('error', (err: NodeJS.ErrnoException) =>
      err.code === 'ECONNREFUSED' ? resolve() : reject(new Error(`refusedUrl: 127.0.0.1:${port}: ${err.message}`)),
    );
  });
  return `http://127.0.0.1:${port}`;
}

/** GET `path`, read the first chunk of the answer, then hang up: a client that leaves mid-response. */
export function hangUpAtFirstByte(port: number, path: string): Promise<void> {
  return new Promise<void>((resolve) => {
    const req = request({ host: '127.0.0.1', port, path }, (res) => {
      res.once('data', () => {
        req.destroy();
        resolve();
      });
    });
    req.on('error', () => {});
    req.end();
  });
}

/**
 * How many connections wait in the accept queue of the IPv4 socket listening
 * on `port` (from /proc/net/tcp, where a listener's rx_queue is its accept
 * queue), or null when no such listener is found.
 */
export async function acceptQueueLength(port: number): Promise<number | null> {
  const { readFile } = await import('node:fs/promises');
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  for (const line of (await readFile('/proc/net/tcp', 'utf8')).split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/);
    // fields: sl, local_address, rem_address, st, tx_queue:rx_queue, ...; st 0A is LISTEN
    if (fields[1]?.endsWith(`:${hexPort}`) && fields[3] === '0A') {
      return Number.parseInt(fields[4]?.split(':')[1] ?? '', 16);
    }
  }
  return null;
}

/** Start `server` on a free loopback port; its base URL. */
export async function listenUrl(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}
