import { STATUS_CODES, type Server, createServer } from 'node:http';
import { type MirrorStatic, mirrorStatic } from '../../middleware/static/mirror-static.js';
import type { StaticOptions } from '../../middleware/options.js';
import { Forwarder, type Outcome, isUpstreamFailure } from '../../middleware/proxy/forwarder.js';
import { PROXY_DEFAULTS } from '../../middleware/defaults.js';
import { requestPath } from '../../middleware/static/path-resolver.js';
import { closeServer, listen } from './listen.js';
import { sendReadiness } from './send-readiness.js';
import { Counter } from 'prom-client';

export interface StaticServer {
  readonly server: Server;
  readonly mw: MirrorStatic;
  readonly url: string;
  close(): Promise<void>;
}

/**
 * The standalone web server (`mirrorswap serve`): the middleware on bare
 * node:http, plus `/healthz`, `/readyz` and `/metrics`. Bare node:http rather than Express
 * because nothing here needs routing; see bench/README.md for the measurement.
 */
export async function startStaticServer(
  host: string,
  port: number,
  options: StaticOptions,
  app?: { upstream: string; connectTimeout?: number; idleTimeout?: number },
): Promise<StaticServer> {
  const mw = mirrorStatic(options);
  // static first, the application behind: what the mounted copy does not hold goes upstream
  const upstreamErrors = app
    ? new Counter({
        name: 'mirrorswap_app_upstream_errors_total',
        help: 'Failures forwarding a miss to the application upstream, by kind',
        labelNames: ['kind'],
        registers: [mw.registry],
      })
    : null;
  const forwarder = app
    ? new Forwarder({
        connectTimeout: app.connectTimeout ?? PROXY_DEFAULTS.connectTimeout,
        idleTimeout: app.idleTimeout ?? PROXY_DEFAULTS.idleTimeout,
        changeOrigin: false,
      })
    : null;
  const countFailure = (outcome: Outcome) => {
    if (isUpstreamFailure(outcome)) upstreamErrors?.inc({ kind: outcome });
  };
  const server = createServer((req, res) => {
    const path = requestPath(req.url);
    if (path === '/healthz') {
      const state = mw.state();
      res.statusCode = state.epoch > 0 ? 200 : 503;
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ ok: state.epoch > 0, epoch: state.epoch, slot: state.slot }));
      return;
    }
    if (path === '/readyz') {
      // what a load balancer checks: answered from memory and the clock, so it never waits on a
      // disk or on the host agent (a stopped host agent's membership simply runs out)
      sendReadiness(res, mw.readiness());
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
      if (forwarder && app && err === undefined) {
        forwarder.web(req, res, app.upstream, countFailure);
        return;
      }
      const status = (err as { status?: number } | undefined)?.status ?? (err ? 500 : 404);
      res.statusCode = status;
      res.setHeader('Content-Type', 'text/plain; charset=utf-8');
      res.end(`${STATUS_CODES[status] ?? 'Internal Server Error'}\n`);
    });
  });
  // WebSockets and other upgrades go to the application, untouched by the static side
  server.on('upgrade', (req, socket, head: Buffer) => {
    if (forwarder && app) forwarder.ws(req, socket, head, app.upstream, countFailure);
    else socket.destroy();
  });
  await mw.ready;
  const url = await listen(server, host, port);
  return {
    server,
    mw,
    url,
    async close() {
      await closeServer(server, 'idle');
      await mw.close();
      forwarder?.close();
    },
  };
}
