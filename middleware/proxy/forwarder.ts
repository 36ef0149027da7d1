import { type IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { Agent, Client, type Dispatcher } from 'undici';
import { PROXY_DEFAULTS } from '../defaults.js';
import { type HeaderPolicy, clientAddress, clientResponseHeaders, upstreamRequestHeaders } from './header-policy.js';
import { type ClientBody, ClientBodyError, readClientBody } from './request-body.js';
import { type Refusal, isRefusal, requestRefusal, upstreamTarget } from './request-checks.js';

/** Why an upstream request failed, as counted in metrics. */
export type UpstreamErrorKind = 'refused' | 'connect_timeout' | 'idle_timeout' | 'reset' | 'bad_response' | 'other';

/**
 * How a forwarded exchange ended: `ok`; the client's own doing (`client_closed`,
 * as nginx's 499, `client_timeout` for a body that stopped arriving or an
 * answer the client stopped reading, `bad_request` for one refused before
 * anything was sent upstream); or the upstream's failure.
 */
export type Outcome = 'ok' | 'client_closed' | 'client_timeout' | 'bad_request' | UpstreamErrorKind;

export interface ForwarderOptions {
  /** Longest wait for a new connection to the upstream (ms). */
  connectTimeout: number;
  /** Longest silence from the upstream: waiting for its answer, between body chunks, for a 101 (ms). */
  idleTimeout: number;
  /** Longest silence from the client while it sends a request body or reads an answer (ms). */
  clientBodyTimeout?: number;
  /** Request bodies up to this many bytes are read whole before an upstream connection is taken. */
  requestBufferSize?: number;
  /** Larger bodies streamed upstream at once from one client address; past it, 503. */
  streamedBodiesPerClient?: number;
  /** Send the client's Host (false) or the upstream's (true). */
  changeOrigin: boolean;
  /**
   * Trust the X-Forwarded-* a client sends (a proxy of yours is in front): append
   * to X-Forwarded-For and keep -Proto and -Host. Default false: replace them.
   */
  trustProxy?: boolean;
  onError: (kind: UpstreamErrorKind, req: IncomingMessage) => void;
}

const REASONS: Record<number, string> = {
  400: 'Bad Request',
  405: 'Not Allowed',
  408: 'Request Timeout',
  501: 'Not Implemented',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
  505: 'HTTP Version Not Supported',
};

/** Outcomes of the client's own doing: never counted as an upstream failure. */
const CLIENT_OUTCOMES: ReadonlySet<Outcome> = new Set(['ok', 'client_closed', 'client_timeout', 'bad_request']);

function isUpstreamFailure(outcome: Outcome): outcome is UpstreamErrorKind {
  return !CLIENT_OUTCOMES.has(outcome);
}

const REFUSED_CODES = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);
const BAD_RESPONSE_CODES = new Set([
  'UND_ERR_RES_CONTENT_LENGTH_MISMATCH',
  'UND_ERR_RES_EXCEEDED_MAX_SIZE',
  'UND_ERR_HEADERS_OVERFLOW',
  'UND_ERR_INVALID_ARG',
]);

/** The metrics kind of an error undici (or the socket under it) reported. */
function classify(err: Error): UpstreamErrorKind {
  if (err instanceof ClientBodyError) return 'other';
  const code = (err as NodeJS.ErrnoException).code ?? '';
  if (REFUSED_CODES.has(code)) return 'refused';
  if (code === 'UND_ERR_CONNECT_TIMEOUT') return 'connect_timeout';
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') return 'idle_timeout';
  // undici's parser errors carry an HPE_ code, or none (the name says it)
  if (code.startsWith('HPE_') || err.name === 'HTTPParserError' || BAD_RESPONSE_CODES.has(code)) return 'bad_response';
  if (code === 'UND_ERR_SOCKET' && /bad (response|upgrade)/.test(err.message)) return 'bad_response';
  if (code === 'UND_ERR_SOCKET' || code === 'ECONNRESET' || code === 'EPIPE') return 'reset';
  return 'other';
}

function statusFor(outcome: Outcome): number {
  if (outcome === 'bad_request') return 400;
  if (outcome === 'client_timeout') return 408;
  if (outcome === 'connect_timeout' || outcome === 'idle_timeout') return 504;
  return 502;
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

/** Our own abort, told apart from the upstream's failures when undici hands it back. */
class Aborted extends Error {}

/** A short plain-text answer, closing the connection: a refusal or a failure before any byte of an answer. */
function answer(res: ServerResponse, status: number, extra: Record<string, string> = {}): void {
  const body = `${REASONS[status] ?? 'Error'}\n`;
  res.writeHead(status, REASONS[status], {
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
    Connection: 'close',
    ...extra,
  });
  res.end(body);
}

/** The Link (and other) headers of a 103 from the upstream, for `writeEarlyHints`. */
function earlyHints(headers: Record<string, string | string[] | undefined>): Record<string, string | string[]> | null {
  if (headers.link === undefined) return null;
  const hints: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) if (value !== undefined) hints[name] = value;
  return hints;
}

interface Upstream {
  origin: string;
  base: string;
  host: string;
}

/**
 * Forwards requests and upgrades to an upstream. The connection side is
 * undici's (parser, pooling, framing, a connection closed after HEAD or when
 * an answer leaves it in doubt); what is ours is the policy around it:
 *
 * - Requests nginx refuses are refused here, with nginx's status, before
 *   anything goes upstream (request-checks.ts); headers cross by
 *   header-policy.ts.
 * - A request body up to `requestBufferSize` is read whole first; a larger
 *   one streams, at most `streamedBodiesPerClient` at once per client
 *   address. The pool has no size limit, so slow senders cannot take
 *   connections from anyone else.
 * - Every phase has a bound: a new connection (connectTimeout), the
 *   upstream's silences (idleTimeout), the client's (clientBodyTimeout, for
 *   sending a body and for reading an answer).
 * - An upgrade goes on a connection of its own, never pooled before or
 *   after; a declined one is relayed with proper framing, and a client that
 *   hangs up (or half-closes) during the handshake ends it.
 * - `done` is called exactly once per exchange, with how it ended.
 */
export class Forwarder {
  readonly #opts: Required<ForwarderOptions>;
  readonly #policy: HeaderPolicy;
  readonly #agent: Agent;
  readonly #upstreams = new Map<string, Upstream>();
  readonly #streaming = new Map<string, number>();
  readonly #upgrades = new Set<Client>();

  constructor(opts: ForwarderOptions) {
    this.#opts = {
      ...opts,
      clientBodyTimeout: opts.clientBodyTimeout ?? opts.idleTimeout,
      trustProxy: opts.trustProxy ?? false,
      requestBufferSize: opts.requestBufferSize ?? PROXY_DEFAULTS.requestBufferSize,
      streamedBodiesPerClient: opts.streamedBodiesPerClient ?? PROXY_DEFAULTS.streamedBodiesPerClient,
    };
    this.#policy = { changeOrigin: this.#opts.changeOrigin, trustProxy: this.#opts.trustProxy };
    this.#agent = new Agent(this.#clientOptions());
  }

  #clientOptions(): Agent.Options {
    return {
      connect: { timeout: this.#opts.connectTimeout },
      headersTimeout: this.#opts.idleTimeout,
      bodyTimeout: this.#opts.idleTimeout,
    };
  }

  /** A target URL parsed once: a handful of them, not one per request. */
  #upstream(target: string): Upstream {
    let up = this.#upstreams.get(target);
    if (!up) {
      const url = new URL(target);
      up = { origin: url.origin, base: url.pathname.replace(/\/$/, ''), host: url.host };
      this.#upstreams.set(target, up);
    }
    return up;
  }

  /** What to send upstream, or the refusal. */
  #plan(req: IncomingMessage, target: string, upgrade: boolean): Refusal | Dispatcher.DispatchOptions {
    const refusal = requestRefusal(req, upgrade);
    if (refusal) return refusal;
    const to = upstreamTarget(req.url);
    if (isRefusal(to)) return to;
    const up = this.#upstream(target);
    return {
      origin: up.origin,
      path: `${up.base}${to.path}`,
      method: req.method ?? 'GET',
      headers: upstreamRequestHeaders(req, this.#policy, up.host, to.authority),
    };
  }

  /** Count a streamed body against its client's bound; false when the client is at it. */
  #takeStreamSlot(client: string): boolean {
    const n = this.#streaming.get(client) ?? 0;
    if (n >= this.#opts.streamedBodiesPerClient) return false;
    this.#streaming.set(client, n + 1);
    return true;
  }

  #giveStreamSlot(client: string): void {
    const n = (this.#streaming.get(client) ?? 1) - 1;
    if (n <= 0) this.#streaming.delete(client);
    else this.#streaming.set(client, n);
  }

  /** Forward one request; `done` is called exactly once, with how it ended. */
  web(req: IncomingMessage, res: ServerResponse, target: string, done: (outcome: Outcome) => void): void {
    const settled = settleOnce(done);
    let controller: Dispatcher.DispatchController | null = null;
    let streamSlot: string | null = null;
    const end = (o: Outcome) => {
      if (streamSlot !== null) this.#giveStreamSlot(streamSlot);
      streamSlot = null;
      settled.end(o);
    };
    const fail = (o: Outcome, status = statusFor(o)) => {
      if (settled.outcome !== undefined) return;
      if (isUpstreamFailure(o)) this.#opts.onError(o, req);
      controller?.abort(new Aborted(o));
      // Connection: close on the answer, so a body left unread never reads as the next request
      if (!res.headersSent && !res.destroyed) answer(res, status);
      else res.destroy(); // the status is gone already: cutting the connection is the only honest signal
      end(o);
    };
    if (res.destroyed) {
      end('client_closed');
      return;
    }
    const plan = this.#plan(req, target, false);
    if ('status' in plan) {
      fail('bad_request', plan.status);
      return;
    }
    // the client gone before the answer is whole: the upstream request goes too
    res.once('close', () => {
      if (settled.outcome !== undefined || res.writableFinished) return;
      controller?.abort(new Aborted('client_closed'));
      end('client_closed');
    });
    const send = (body: ClientBody) => {
      if (settled.outcome !== undefined) {
        if (body.kind === 'streamed') body.body.destroy();
        return;
      }
      const options: Dispatcher.DispatchOptions = { ...plan };
      if (body.kind === 'buffered') options.body = body.body;
      else if (body.kind === 'streamed') {
        const client = clientAddress(req, this.#opts.trustProxy);
        if (!this.#takeStreamSlot(client)) {
          body.body.destroy();
          fail('bad_request', 503);
          return;
        }
        streamSlot = client;
        options.body = body.body;
        if (body.length !== null) (options.headers as string[]).push('Content-Length', String(body.length));
      }
      this.#agent.dispatch(
        options,
        this.#responseHandler(req, res, fail, end, (c) => (controller = c)),
      );
    };
    readClientBody(req, this.#opts.requestBufferSize, this.#opts.clientBodyTimeout).then(send, (err: unknown) =>
      fail(err instanceof ClientBodyError ? err.outcome : 'other'),
    );
  }

  /** The handler relaying undici's answer into `res`. */
  #responseHandler(
    req: IncomingMessage,
    res: ServerResponse,
    fail: (o: Outcome) => void,
    end: (o: Outcome) => void,
    started: (c: Dispatcher.DispatchController) => void,
  ): Dispatcher.DispatchHandler {
    const sendTimeout = this.#opts.clientBodyTimeout;
    let stalled: NodeJS.Timeout | undefined;
    return {
      onRequestStart(controller) {
        started(controller);
        if (res.destroyed) controller.abort(new Aborted('client_closed'));
      },
      onResponseStart(controller, statusCode, headers, statusMessage) {
        if (statusCode < 200) {
          // 103 Early Hints go on to the client; other 1xx are the connection's business
          const hints = statusCode === 103 ? earlyHints(headers) : null;
          if (hints && req.httpVersionMinor === 1) {
            try {
              res.writeEarlyHints(hints);
            } catch {
              // a hint node:http will not write is dropped, as a proxy may
            }
          }
          return;
        }
        try {
          res.writeHead(statusCode, statusMessage, clientResponseHeaders((controller.rawHeaders ?? []) as Buffer[]));
        } catch {
          fail('bad_response'); // a status line or header node:http will not write
          return;
        }
        // the client is told the length or gets chunks: a body the upstream cuts short is cut here too
        res.once('finish', () => end('ok'));
      },
      onResponseData(controller, chunk) {
        if (res.write(chunk)) return;
        // a client that stops reading holds an upstream connection: bounded as its silences are
        controller.pause();
        stalled = setTimeout(() => fail('client_timeout'), sendTimeout);
        res.once('drain', () => {
          clearTimeout(stalled);
          controller.resume();
        });
      },
      onResponseEnd() {
        clearTimeout(stalled);
        res.end();
      },
      onResponseError(_controller, err) {
        clearTimeout(stalled);
        if (err instanceof Aborted) return;
        fail(err instanceof ClientBodyError ? err.outcome : classify(err));
      },
    };
  }

  /**
   * Forward an upgrade (a WebSocket) on a connection of its own; `done` is
   * called exactly once, when the exchange is over.
   */
  ws(req: IncomingMessage, socket: Duplex, head: Buffer, target: string, done: (outcome: Outcome) => void): void {
    const settled = settleOnce(done);
    let controller: Dispatcher.DispatchController | null = null;
    let upgraded = false;
    const client = new Client(this.#upstream(target).origin, this.#clientOptions());
    this.#upgrades.add(client);
    const finish = (o: Outcome) => {
      this.#upgrades.delete(client);
      client.destroy().catch(() => {});
      settled.end(o);
    };
    // a response on the raw socket, framed by node:http as any other
    const out = new ServerResponse(req);
    out.assignSocket(socket as Socket);
    out.shouldKeepAlive = false;
    const refuse = (o: Outcome, status = statusFor(o)) => {
      if (settled.outcome !== undefined) return;
      if (isUpstreamFailure(o)) this.#opts.onError(o, req);
      controller?.abort(new Aborted(o));
      if (!out.headersSent && !socket.destroyed && socket.writable) {
        answer(out, status);
        out.once('finish', () => socket.destroy());
      } else socket.destroy();
      finish(o);
    };
    socket.on('error', () => {});
    // a client gone, or half-closed, before the upstream answered ends the exchange
    const clientLeft = () => {
      if (upgraded || settled.outcome !== undefined) return;
      controller?.abort(new Aborted('client_closed'));
      socket.destroy();
      finish('client_closed');
    };
    socket.once('end', clientLeft);
    socket.once('close', clientLeft);
    if (socket.readableEnded || socket.destroyed) {
      clientLeft();
      return;
    }
    const plan = this.#plan(req, target, true);
    if ('status' in plan) {
      refuse('bad_request', plan.status);
      return;
    }
    const handler: Dispatcher.DispatchHandler = {
      onRequestStart(c) {
        controller = c;
      },
      onRequestUpgrade: (c, _status, _headers, upstream) => {
        if (settled.outcome !== undefined || socket.destroyed) {
          upstream.destroy();
          return;
        }
        upgraded = true;
        out.detachSocket(socket as Socket);
        this.#splice(socket, upstream as Socket, head, (c.rawHeaders ?? []) as Buffer[], finish);
      },
      onResponseStart: (c, statusCode, _headers, statusMessage) => {
        if (statusCode < 200) return;
        // declined: relayed as an ordinary answer, framed, on a connection that then closes
        try {
          out.writeHead(statusCode, statusMessage, clientResponseHeaders((c.rawHeaders ?? []) as Buffer[]));
        } catch {
          refuse('bad_response');
        }
      },
      onResponseData: (c, chunk) => {
        if (!out.write(chunk)) {
          c.pause();
          out.once('drain', () => c.resume());
        }
      },
      onResponseEnd: () => {
        out.end(() => socket.destroy());
        finish('ok');
      },
      onResponseError: (_c, err) => {
        if (err instanceof Aborted) return;
        refuse(classify(err));
      },
    };
    const upgrade = String(req.headers.upgrade ?? 'websocket');
    client.dispatch({ ...plan, upgrade }, handler);
  }

  /**
   * Join an upgraded client socket and the upstream's. No idle bound (a quiet
   * WebSocket is normal; mirrorProxy's drain grace cuts it after a swap), but a
   * half-closed pair is bounded: once either side ends, the other has
   * idleTimeout to finish.
   */
  #splice(socket: Duplex, upstream: Socket, head: Buffer, raw: Buffer[], finish: (o: Outcome) => void): void {
    const lines = ['HTTP/1.1 101 Switching Protocols'];
    for (let i = 0; i < raw.length; i += 2) lines.push(`${raw[i]}: ${(raw[i + 1] as Buffer).toString('latin1')}`);
    lines.push('', '');
    socket.write(lines.join('\r\n'), 'latin1');
    if (head.length > 0) upstream.write(head);
    upstream.on('error', () => {});
    let closing: NodeJS.Timeout | undefined;
    const close = () => {
      clearTimeout(closing);
      socket.destroy();
      upstream.destroy();
      finish('ok');
    };
    const halfClosed = () => {
      closing ??= setTimeout(close, this.#opts.idleTimeout);
    };
    socket.once('end', halfClosed);
    upstream.once('end', halfClosed);
    upstream.once('close', close);
    socket.once('close', close);
    upstream.pipe(socket);
    socket.pipe(upstream);
  }

  /** Close upstream connections, pooled and upgraded. */
  close(): void {
    this.#agent.destroy().catch(() => {});
    for (const client of this.#upgrades) client.destroy().catch(() => {});
    this.#upgrades.clear();
  }
}
