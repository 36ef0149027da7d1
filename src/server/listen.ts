import type { Server } from 'node:http';

/** Listen on HOST:PORT (port 0: any free one); resolves with the URL the server answers on. */
export async function listen(server: Server, host: string, port: number): Promise<string> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const addr = server.address();
  const bound = typeof addr === 'object' && addr ? addr.port : port;
  return `http://${host.includes(':') ? `[${host}]` : host}:${bound}`;
}

/**
 * Stop listening and resolve once every connection is gone. `connections`
 * says what to do with open ones: close the idle ones and let requests in
 * flight finish (a web server draining), or close them all (an API whose
 * callers retry).
 */
export function closeServer(server: Server, connections: 'idle' | 'all'): Promise<void> {
  return new Promise<void>((resolve) => {
    server.close(() => resolve());
    if (connections === 'all') server.closeAllConnections();
    else server.closeIdleConnections();
  });
}
