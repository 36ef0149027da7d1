import { randomBytes } from 'node:crypto';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

/** Answers one route of a stub coordinator: the request, its answer, and the request's whole body. */
export type StubHandler = (req: IncomingMessage, res: ServerResponse, body: Buffer) => void;

export interface StubCoordinator {
  url: string;
  /** The token its routes take (`Bearer ...`): one of its own, so that no other test's client holds it. */
  token: string;
  close(): Promise<void>;
}

/**
 * A coordinator of a test's making: the fleet's two routes answered with
 * whatever the test gives, and nothing else. Test files run in processes of
 * their own, side by side, and a port one of them closes is soon handed to
 * another's server: a client of another test still calling that port (a
 * scrape, a poll, a pull retried) must meet a 404 or a 401 here, never the
 * test's handler, which would count it or choke on its body.
 *
 * - `GET /v1/fleet/manifest` → `manifest`;
 * - `POST /v1/fleet/files` → `files` (default: an answer holding no frame).
 */
export async function stubCoordinator(
  manifest: StubHandler,
  files: StubHandler = (_req, res) => res.end(),
): Promise<StubCoordinator> {
  const token = `stub-${randomBytes(16).toString('hex')}`;
  const server: Server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://stub').pathname;
    const route =
      req.method === 'GET' && path === '/v1/fleet/manifest'
        ? manifest
        : req.method === 'POST' && path === '/v1/fleet/files'
          ? files
          : null;
    if (route === null || req.headers.authorization !== `Bearer ${token}`) {
      refuseStray(req, res, route === null ? 404 : 401);
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => route(req, res, Buffer.concat(chunks)));
  });
  // what a test trickles goes out as it is written: the host meets its chunks as they are cut
  server.on('connection', (socket) => socket.setNoDelay(true));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    token,
    close: () => {
      server.closeAllConnections();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

/**
 * Answer a request that is not the test's own (a client of another test on a
 * port handed out again) with `status`, its body unread and its connection
 * closed: no handler of the test sees it, nothing counts it.
 */
export function refuseStray(req: IncomingMessage, res: ServerResponse, status = 404): void {
  req.resume();
  res.writeHead(status, { connection: 'close' }).end();
}

/** The paths a files request asks for (its body, as the host sends it). */
export function pathsAsked(body: Buffer): string[] {
  return (JSON.parse(body.toString()) as { paths: string[] }).paths;
}
