import {
  Agent,
  type ClientRequest,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  type ServerResponse,
  request as httpRequest,
} from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { Socket } from 'node:net';
import { type Duplex, pipeline } from 'node:stream';

/** Why an upstream request failed, as counted in metrics. */
export type UpstreamErrorKind = 'refused' | 'connect_timeout' | 'idle_timeout' | 'reset' | 'bad_response' | 'other';

/**
 * How a forwarded exchange ended: `ok`; the client's own doing (`client_closed`,
 * as nginx's 499, `client_timeout` for a body that stopped arriving,
 * `bad_request` for one refused before anything was sent upstream); or the
 * upstream's failure.
 */
export type Outcome = 'ok' | 'client_closed' | 'client_timeout' | 'bad_request' | UpstreamErrorKind;

export interface ForwarderOptions {
  /** Longest wait for a connection to the upstream, from a free pooled socket or a new one (ms). */
  connectTimeout: number;
  /** Longest silence from the upstream: waiting for its answer, between body chunks, for a 101 (ms). */
  idleTimeout: number;
  /** Longest silence from the client while it sends a request body (ms); a slow upload frees its socket. */
  clientBodyTimeout?: number;
  /** Send the client's Host (false) or the upstream's (true). */
  changeOrigin: boolean;
  /**
   * Trust the X-Forwarded-* a client sends (a proxy of yours is in front): append
   * to X-Forwarded-For and keep -Proto and -Host. Default false: replace them.
   */
  trustProxy?: boolean;
  onError: (kind: UpstreamErrorKind, req: IncomingMessage) => void;
}

/** Hop-by-hop headers (RFC 9110 7.6.1): they describe one connection and never cross a proxy. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'expect', // answered here (Node sends 100 Continue); the upstream gets the body straight away
  'http2-settings',
]);

/**
 * What a Connection header may never name away: the message's framing and
 * the headers this proxy sets itself. A client that lists them must not make
 * the proxy forward a body without its length, or drop X-Forwarded-For.
 */
const PROTECTED = new Set([
  'content-length',
  'transfer-encoding',
  'host',
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'forwarded',
]);

const FORWARDING = new Set(['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'forwarded']);

/** Set by the proxy itself for the upstream, whatever the client sent. */
const SET_HERE = new Set(['host', 'content-length']);

function connectionTokens(value: string | string[] | undefined): string[] {
  if (value === undefined) return [];
  return (Array.isArray(value) ? value.join(',') : value)
    .split(',')
    .map((t) => t.trim().toLowerCase())
    .filter(Boolean);
}

function classify(err: NodeJS.ErrnoException): UpstreamErrorKind {
  const code = err.code ?? '';
  if (code === 'ECONNREFUSED' || code === 'EHOSTUNREACH' || code === 'ENETUNREACH' || code === 'ENOTFOUND')
    return 'refused';
  if (code.startsWith('HPE_')) return 'bad_response';
  if (code === 'ECONNRESET' || code === 'EPIPE' || err.message === 'socket hang up') return 'reset';
  return 'other';
}

const BODIES: Record<number, string> = {
  400: 'Bad Request\n',
  408: 'Request Timeout\n',
  502: 'Bad Gateway\n',
  504: 'Gateway Timeout\n',
};

/** A request this proxy will not forward (the answer is 400). */
class BadRequest extends Error {}

/** The request headers for the upstream, and whether the request has a body. */
interface Plan {
  url: URL;
  path: string;
  headers: string[];
  hasBody: boolean;
}

/** Outcomes of the client's own doing: never counted as an upstream failure. */
const CLIENT_OUTCOMES: ReadonlySet<Outcome> = new Set(['ok', 'client_closed', 'client_timeout', 'bad_request']);

function isUpstreamFailure(outcome: Outcome): outcome is UpstreamErrorKind {
  return !CLIENT_OUTCOMES.has(outcome);
}

/** `done` wrapped so it is called at most once, and the outcome it was called with. */
function settleOnce(done: (outcome: Outcome) => void) {
  let outcome: Outcome | undefined;
  return {
    get outcome() {
      return outcome;
    },
    end(o: Outcome) {
      if (outcome !== undefined) return;
      outcome = o;
      done(o);
    },
  };
}

function statusFor(outcome: Outcome): number {
  if (outcome === 'bad_request') return 400;
  if (outcome === 'client_timeout') return 408;
  if (outcome === 'connect_timeout' || outcome === 'idle_timeout') return 504;
  return 502;
}

/**
 * Forwards requests and upgrades to an upstream, on node:http alone, and
 * owns what a reverse proxy put on the internet must get right:
 *
 * - Headers for the upstream are built from the client's before the upstream
 *   request exists: hop-by-hop headers and those the client's Connection
 *   names are dropped, but never the framing (Content-Length,
 *   Transfer-Encoding) nor the proxy's own X-Forwarded-*, and a body is always
 *   sent framed. A duplicate Host, a malformed target: 400, nothing sent.
 * - Every phase has its own bound: a socket from the pool and the connection
 *   (connectTimeout, counted from the start, not from when a socket is
 *   assigned), the client's body (clientBodyTimeout), the upstream's answer
 *   and body, and a WebSocket handshake (idleTimeout).
 * - `Expect: 100-continue` takes the same path as any request.
 * - A 101 to a request that did not ask to upgrade is a bad answer (502).
 * - No input reaches a throw that is not turned into a response or a closed
 *   socket, and `done` is called exactly once with how the exchange ended.
 */
export class Forwarder {
  readonly #opts: ForwarderOptions & { clientBodyTimeout: number; trustProxy: boolean };
  readonly #http = new Agent({ keepAlive: true, maxSockets: 256 });
  /** Parsed upstream URLs: a handful of targets, parsed once rather than per request. */
  readonly #targets = new Map<string, URL>();
  readonly #https = new HttpsAgent({ keepAlive: true, maxSockets: 256 });

  constructor(opts: ForwarderOptions) {
    this.#opts = {
      ...opts,
      clientBodyTimeout: opts.clientBodyTimeout ?? opts.idleTimeout,
      trustProxy: opts.trustProxy ?? false,
    };
  }

  /** The upstream request's target and headers, or BadRequest. */
  #plan(req: IncomingMessage, target: string, upgrade: boolean): Plan {
    let url = this.#targets.get(target);
    if (!url) {
      url = new URL(target);
      this.#targets.set(target, url);
    }
    const raw = req.url ?? '';
    let path: string;
    if (raw.startsWith('/') && !raw.startsWith('//')) path = raw;
    else if (/^https?:\/\//i.test(raw)) {
      // absolute-form (RFC 9112 3.2.2): only its path and query go on
      let parsed: URL;
      try {
        parsed = new URL(raw);
      } catch {
        throw new BadRequest('malformed request target');
      }
      path = `${parsed.pathname}${parsed.search}`;
    } else if (raw.startsWith('//')) path = raw.replace(/^\/+/, '/');
    else throw new BadRequest('malformed request target');
    if (/[\s\0]/.test(path)) throw new BadRequest('malformed request target');
    const base = url.pathname.replace(/\/$/, '');
    path = `${base}${path}`;

    // One pass over the raw headers: what goes on, and the framing and Host checks.
    const named = connectionTokens(req.headers.connection).filter((t) => !PROTECTED.has(t));
    const headers: string[] = [];
    let hosts = 0;
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      const name = req.rawHeaders[i] as string;
      const lower = name.toLowerCase();
      if (lower === 'host') hosts++;
      // hop-by-hop, named by Connection, or set below by the proxy itself (host, framing, forwarding)
      if (HOP_BY_HOP.has(lower) || SET_HERE.has(lower) || FORWARDING.has(lower)) continue;
      if (named.length > 0 && named.includes(lower)) continue;
      headers.push(name, req.rawHeaders[i + 1] as string);
    }
    if (hosts > 1) throw new BadRequest('more than one Host header');
    if (req.headers['content-length'] !== undefined && req.headers['transfer-encoding'] !== undefined)
      throw new BadRequest('both Content-Length and Transfer-Encoding');
    const clientHost = req.headers.host;
    headers.push('Host', this.#opts.changeOrigin || !clientHost ? url.host : clientHost);
    const address = req.socket.remoteAddress ?? '';
    const priorFor = this.#opts.trustProxy ? req.headers['x-forwarded-for'] : undefined;
    headers.push('X-Forwarded-For', priorFor ? `${priorFor}, ${address}` : address);
    const proto = (req.socket as Socket & { encrypted?: boolean }).encrypted ? 'https' : 'http';
    const priorProto = this.#opts.trustProxy ? req.headers['x-forwarded-proto'] : undefined;
    headers.push('X-Forwarded-Proto', typeof priorProto === 'string' ? priorProto : proto);
    const priorHost = this.#opts.trustProxy ? req.headers['x-forwarded-host'] : undefined;
    if (typeof priorHost === 'string') headers.push('X-Forwarded-Host', priorHost);
    else if (clientHost) headers.push('X-Forwarded-Host', clientHost);

    // The body goes framed whatever the client's Connection said: its length, or chunked.
    const length = req.headers['content-length'];
    const chunked = req.headers['transfer-encoding'] !== undefined;
    const hasBody = chunked || (length !== undefined && length !== '0');
    if (length !== undefined) headers.push('Content-Length', length);
    else if (chunked) headers.push('Transfer-Encoding', 'chunked');
    if (upgrade) headers.push('Connection', 'Upgrade', 'Upgrade', String(req.headers.upgrade ?? ''));
    return { url, path, headers, hasBody };
  }

  #request(plan: Plan, method: string): ClientRequest {
    const https = plan.url.protocol === 'https:';
    return (https ? httpsRequest : httpRequest)({
      protocol: plan.url.protocol,
      hostname: plan.url.hostname.replace(/^\[|\]$/g, ''),
      port: plan.url.port || (https ? 443 : 80),
      method,
      path: plan.path,
      headers: plan.headers as unknown as OutgoingHttpHeaders,
      setHost: false,
      agent: https ? this.#https : this.#http,
    });
  }

  /** Bound the wait for a connection from the moment the request exists, pooled or new. */
  #boundConnect(proxyReq: ClientRequest, fail: (kind: Outcome) => void): void {
    const timer = setTimeout(() => fail('connect_timeout'), this.#opts.connectTimeout);
    const connected = () => clearTimeout(timer);
    proxyReq.once('socket', (socket: Socket) => {
      if (socket.connecting) socket.once('connect', connected);
      else connected();
    });
    proxyReq.once('close', connected);
  }

  /** Forward one request; `done` is called exactly once, with how it ended. */
  web(req: IncomingMessage, res: ServerResponse, target: string, done: (outcome: Outcome) => void): void {
    let proxyReq: ClientRequest | undefined;
    let upstreamDied = false;
    const settled = settleOnce(done);
    const end = (o: Outcome) => settled.end(o);
    const fail = (o: Outcome) => {
      if (settled.outcome !== undefined) return;
      if (isUpstreamFailure(o)) this.#opts.onError(o, req);
      proxyReq?.destroy();
      if (!res.headersSent && !res.destroyed) {
        const status = statusFor(o);
        const body = BODIES[status] as string;
        res.writeHead(status, {
          'Content-Type': 'text/plain; charset=utf-8',
          'Content-Length': Buffer.byteLength(body),
          Connection: 'close',
        });
        res.end(body);
      } else {
        res.destroy(); // the status is gone already: cutting the connection is the only honest signal
      }
      end(o);
    };
    try {
      if (res.destroyed) {
        end('client_closed');
        return;
      }
      const plan = this.#plan(req, target, false);
      const upstream = this.#request(plan, req.method ?? 'GET');
      proxyReq = upstream;
      this.#boundConnect(upstream, fail);
      upstream.setTimeout(this.#opts.idleTimeout, () => fail('idle_timeout'));
      upstream.on('error', (err: NodeJS.ErrnoException) => fail(classify(err)));
      upstream.on('upgrade', (_r: IncomingMessage, socket: Socket) => {
        socket.destroy(); // a 101 nobody asked for: nothing can be relayed as an answer
        fail('bad_response');
      });
      upstream.on('response', (answer: IncomingMessage) => {
        const headers: string[] = [];
        const named = connectionTokens(answer.headers.connection).filter((t) => !PROTECTED.has(t));
        for (let i = 0; i < answer.rawHeaders.length; i += 2) {
          const name = answer.rawHeaders[i] as string;
          const lower = name.toLowerCase();
          if (HOP_BY_HOP.has(lower) || lower === 'content-length') continue;
          if (named.length > 0 && named.includes(lower)) continue;
          headers.push(name, answer.rawHeaders[i + 1] as string);
        }
        const length = answer.headers['content-length'];
        if (length !== undefined) headers.push('Content-Length', length);
        try {
          res.writeHead(answer.statusCode ?? 502, answer.statusMessage, headers);
        } catch {
          answer.destroy();
          fail('bad_response');
          return;
        }
        // pipe(), not pipeline(): the ends are handled here, without eos listeners on both
        // streams of every response. An upstream that dies mid-body cuts the client's connection.
        answer.once('error', () => {});
        answer.once('close', () => {
          if (answer.complete) return;
          upstreamDied = true;
          fail('reset');
        });
        res.once('finish', () => end('ok'));
        answer.pipe(res);
      });
      // the client gone before the answer is whole: the upstream request goes too
      res.once('close', () => {
        if (settled.outcome !== undefined || res.writableFinished || upstreamDied) return;
        upstream.destroy();
        end('client_closed');
      });
      if (!plan.hasBody) {
        upstream.end();
        return;
      }
      // the client's body, with a bound on its silences: a slow upload must not hold a pooled socket
      let timer = setTimeout(() => fail('client_timeout'), this.#opts.clientBodyTimeout);
      req.on('data', () => {
        timer.refresh();
      });
      req.once('end', () => clearTimeout(timer));
      req.once('close', () => clearTimeout(timer));
      pipeline(req, upstream, (err) => {
        clearTimeout(timer);
        timer = undefined as unknown as NodeJS.Timeout;
        if (err && settled.outcome === undefined)
          fail(req.complete ? classify(err as NodeJS.ErrnoException) : 'client_closed');
      });
    } catch (err) {
      fail(err instanceof BadRequest ? 'bad_request' : 'other');
    }
  }

  /**
   * Forward an upgrade (a WebSocket); `done` is called exactly once, when the
   * client's socket closes or the handshake fails.
   */
  ws(req: IncomingMessage, socket: Duplex, head: Buffer, target: string, done: (outcome: Outcome) => void): void {
    let proxyReq: ClientRequest | undefined;
    const settled = settleOnce(done);
    const end = (o: Outcome) => settled.end(o);
    const refuse = (o: Outcome) => {
      if (settled.outcome !== undefined) return;
      if (isUpstreamFailure(o)) this.#opts.onError(o, req);
      proxyReq?.destroy();
      const status = statusFor(o);
      const body = BODIES[status] as string;
      if (!socket.destroyed && socket.writable) {
        socket.end(
          `HTTP/1.1 ${status} ${body.trim()}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
        );
      }
      socket.destroy();
      end(o);
    };
    let upgraded = false;
    socket.on('error', () => {});
    socket.once('close', () => {
      proxyReq?.destroy();
      end(upgraded ? 'ok' : 'client_closed');
    });
    try {
      const plan = this.#plan(req, target, true);
      const upstream = this.#request(plan, req.method ?? 'GET');
      proxyReq = upstream;
      this.#boundConnect(upstream, refuse);
      // the handshake is bounded like any answer; once upgraded, the connection may idle
      upstream.setTimeout(this.#opts.idleTimeout, () => refuse('idle_timeout'));
      upstream.on('error', (err: NodeJS.ErrnoException) => refuse(classify(err)));
      upstream.on('response', (answer: IncomingMessage) => {
        // the upstream declined to upgrade: relay its answer, then close
        const lines = [`HTTP/1.1 ${answer.statusCode} ${answer.statusMessage ?? ''}`];
        for (let i = 0; i < answer.rawHeaders.length; i += 2) {
          const name = answer.rawHeaders[i] as string;
          if (!HOP_BY_HOP.has(name.toLowerCase())) lines.push(`${name}: ${answer.rawHeaders[i + 1]}`);
        }
        lines.push('Connection: close', '', '');
        socket.write(lines.join('\r\n'));
        pipeline(answer, socket, () => {
          socket.destroy();
          end('ok');
        });
      });
      upstream.on('upgrade', (answer: IncomingMessage, upstreamSocket: Socket, upstreamHead: Buffer) => {
        upstream.setTimeout(0);
        upstreamSocket.setTimeout(0);
        upgraded = true;
        if (socket.destroyed) {
          upstreamSocket.destroy();
          return;
        }
        const lines = [`HTTP/1.1 101 ${answer.statusMessage || 'Switching Protocols'}`];
        for (let i = 0; i < answer.rawHeaders.length; i += 2)
          lines.push(`${answer.rawHeaders[i]}: ${answer.rawHeaders[i + 1]}`);
        lines.push('', '');
        socket.write(lines.join('\r\n'));
        if (upstreamHead.length > 0) socket.write(upstreamHead);
        if (head.length > 0) upstreamSocket.write(head);
        upstreamSocket.on('error', () => {});
        const close = () => {
          socket.destroy();
          upstreamSocket.destroy();
        };
        upstreamSocket.once('close', close);
        socket.once('close', close);
        upstreamSocket.pipe(socket);
        socket.pipe(upstreamSocket);
      });
      upstream.end();
    } catch (err) {
      refuse(err instanceof BadRequest ? 'bad_request' : 'other');
    }
  }

  /** Close idle upstream connections. */
  close(): void {
    this.#http.destroy();
    this.#https.destroy();
  }
}
