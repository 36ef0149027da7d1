import { Agent, type ClientRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { createProxyServer } from 'http-proxy-3';

/** Why an upstream request failed, as counted in metrics. */
export type UpstreamErrorKind = 'refused' | 'connect_timeout' | 'idle_timeout' | 'reset' | 'bad_response' | 'other';

export interface ForwarderOptions {
  /** Longest wait for the TCP connection to an upstream (ms). */
  connectTimeout: number;
  /** Longest silence from an upstream, waiting for headers or between body chunks (ms). */
  idleTimeout: number;
  /** Send the client's Host header (false) or the upstream's (true). */
  changeOrigin: boolean;
  onError: (kind: UpstreamErrorKind, req: IncomingMessage) => void;
}

/** Hop-by-hop headers (RFC 9110 7.6.1): they describe one connection and never cross a proxy. */
const HOP_BY_HOP = [
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'upgrade',
];

function connectionTokens(value: string | string[] | number | undefined): string[] {
  if (value === undefined) return [];
  return String(value)
    .split(',')
    .map((t) => t.trim().toLowerCase())
    .filter(Boolean);
}

function classify(err: NodeJS.ErrnoException, timedOut: UpstreamErrorKind | undefined): UpstreamErrorKind {
  if (timedOut) return timedOut;
  const code = err.code ?? '';
  if (code === 'ECONNREFUSED' || code === 'EHOSTUNREACH' || code === 'ENETUNREACH' || code === 'ENOTFOUND')
    return 'refused';
  if (code.startsWith('HPE_')) return 'bad_response';
  if (code === 'ECONNRESET' || code === 'EPIPE' || err.message === 'socket hang up') return 'reset';
  return 'other';
}

const BODIES: Record<number, string> = { 502: 'Bad Gateway\n', 504: 'Gateway Timeout\n' };

/**
 * Forwards requests to an upstream with http-proxy-3, and owns what a reverse
 * proxy must get right around it: X-Forwarded-*, hop-by-hop headers removed
 * both ways, connect and idle timeouts, 502 and 504 with fixed bodies (never
 * an internal message), a client abort aborting the upstream request.
 */
export class Forwarder {
  readonly #opts: ForwarderOptions;
  readonly #agent = new Agent({ keepAlive: true, maxSockets: 256 });
  readonly #proxy;
  readonly #timedOut = new WeakMap<IncomingMessage, UpstreamErrorKind>();

  constructor(opts: ForwarderOptions) {
    this.#opts = opts;
    this.#proxy = createProxyServer({ xfwd: true, agent: this.#agent, changeOrigin: opts.changeOrigin, ws: true });
    this.#proxy.on('proxyReq', (proxyReq: ClientRequest, req: IncomingMessage) => this.#prepare(proxyReq, req, false));
    this.#proxy.on('proxyReqWs', (proxyReq: ClientRequest, req: IncomingMessage) => this.#prepare(proxyReq, req, true));
    this.#proxy.on('proxyRes', (proxyRes: IncomingMessage, req: IncomingMessage, res: ServerResponse) => {
      for (const name of [...HOP_BY_HOP, ...connectionTokens(proxyRes.headers.connection)])
        delete proxyRes.headers[name];
      // an upstream that dies mid-body: the client must not wait forever for the rest
      proxyRes.once('close', () => {
        if (proxyRes.complete) return;
        this.#opts.onError(this.#timedOut.get(req) ?? 'reset', req);
        res.destroy();
      });
      proxyRes.on('error', () => {});
    });
    // errors reach the per-request callbacks; this keeps a stray one from crashing the process
    this.#proxy.on('error', () => {});
  }

  #prepare(proxyReq: ClientRequest, req: IncomingMessage, upgrade: boolean): void {
    for (const name of [...HOP_BY_HOP, ...connectionTokens(req.headers.connection)]) {
      if (upgrade && (name === 'connection' || name === 'upgrade')) continue;
      if (proxyReq.hasHeader(name) && !proxyReq.headersSent) proxyReq.removeHeader(name);
    }
    const fail = (kind: UpstreamErrorKind) => {
      this.#timedOut.set(req, kind);
      proxyReq.destroy(
        Object.assign(new Error(kind), { code: kind === 'connect_timeout' ? 'ECONNECTTIMEOUT' : 'ETIMEDOUT' }),
      );
    };
    const socket = proxyReq.socket;
    if (socket?.connecting) {
      const timer = setTimeout(() => fail('connect_timeout'), this.#opts.connectTimeout);
      socket.once('connect', () => clearTimeout(timer));
      proxyReq.once('close', () => clearTimeout(timer));
    }
    if (!upgrade) proxyReq.setTimeout(this.#opts.idleTimeout, () => fail('idle_timeout'));
  }

  /** Forward one request; `done` runs once when the response is over, however it ends. */
  web(req: IncomingMessage, res: ServerResponse, target: string, done: () => void): void {
    res.once('close', done);
    this.#proxy.web(req, res, { target }, (err: Error) => {
      const kind = classify(err as NodeJS.ErrnoException, this.#timedOut.get(req));
      this.#opts.onError(kind, req);
      if (res.headersSent || res.destroyed) {
        res.destroy(); // the status is gone already: cutting the connection is the only honest signal
        return;
      }
      const status = kind === 'connect_timeout' || kind === 'idle_timeout' ? 504 : 502;
      const body = BODIES[status] as string;
      res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(body) });
      res.end(body);
    });
  }

  /** Forward an upgrade (WebSocket); `done` runs once when the client socket closes. */
  ws(req: IncomingMessage, socket: Duplex, head: Buffer, target: string, done: () => void): void {
    socket.once('close', done);
    this.#proxy.ws(req, socket, head, { target }, (err: Error) => {
      this.#opts.onError(classify(err as NodeJS.ErrnoException, this.#timedOut.get(req)), req);
      socket.destroy();
    });
  }

  /** Close idle upstream connections. */
  close(): void {
    this.#agent.destroy();
    this.#proxy.close();
  }
}
