import { type Server, createServer } from 'node:http';
import { type MirrorStatic, mirrorStatic } from '../../middleware/mirror-static.js';
import type { StaticOptions } from '../../middleware/options.js';

export interface StaticServer {
  readonly server: Server;
  readonly mw: MirrorStatic;
  readonly url: string;
  close(): Promise<void>;
}

/**
 * The standalone web server (`mirrorswap serve`): the middleware on bare
 * node:http, plus `/healthz` and `/metrics`. Bare node:http rather than Express
 * because nothing here needs routing; see bench/README.md for the measurement.
 */
export async function startStaticServer(host: string, port: number, options: StaticOptions): Promise<StaticServer> {
  const mw = mirrorStatic(options);
  const server = createServer((req, res) => {
    const path = req.url?.split('?', 1)[0];
    if (path === '/healthz') {
      const state = mw.state();
      res.statusCode = state.epoch > 0 ? 200 : 503;
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ ok: state.epoch > 0, epoch: state.epoch, slot: state.slot }));
      return;
    }
    if (path === '/metrics') {
      mw.metrics(req, res);
      return;
    }
    mw(req, res, (err?: unknown) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      const status = (err as { status?: number } | undefined)?.status ?? (err ? 500 : 404);
      const text: Record<number, string> = {
        400: 'Bad Request',
        403: 'Forbidden',
        404: 'Not Found',
        405: 'Method Not Allowed',
        503: 'Service Unavailable',
      };
      res.statusCode = status;
      res.setHeader('Content-Type', 'text/plain; charset=utf-8');
      res.end(`${text[status] ?? 'Internal Server Error'}\n`);
    });
  });
  await mw.ready;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const addr = server.address();
  const bound = typeof addr === 'object' && addr ? addr.port : port;
  const shownHost = host.includes(':') ? `[${host}]` : host;
  return {
    server,
    mw,
    url: `http://${shownHost}:${bound}`,
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      });
      await mw.close();
    },
  };
}
