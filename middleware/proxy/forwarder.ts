import { type IncomingMessage, ServerResponse } from 'node:http';
import { type Socket, isIP } from 'node:net';
import type { Duplex } from 'node:stream';
import type { ConnectionOptions } from 'node:tls';
import { Agent, Client, type Dispatcher, buildConnector } from 'undici';
import { PROXY_DEFAULTS } from '../defaults.js';
import { PINNED_PRIVATELY, answersPrivately } from '../mount/release-pins.js';
import {
  type HeaderPolicy,
  clientAddress,
  clientResponseHeaders,
  upstreamRequestHeaders,
  withCacheControl,
} from './header-policy.js';
import {
  type BufferBudget,
  type ClientBody,
  ClientBodyError,
  bufferBudget,
  carriesBody,
  readClientBody,
} from './request-body.js';
import { type Refusal, isRefusal, requestRefusal, upstreamTarget } from './request-checks.js';

/** TLS settings for https upstreams. */
export interface UpstreamTls {
  /** Certificate authorities to trust (PEM), in place of Node's bundled ones. */
  ca?: string | Buffer | (string | Buffer)[];
}

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
  /** Bytes all buffered request bodies may hold at once; a body past it streams instead (and counts as streamed). */
  requestBufferTotal?: number;
  /** Send the client's Host (false) or the upstream's (true). */
  changeOrigin: boolean;
  /**
   * Trust the X-Forwarded-* a client sends (a proxy of yours is in front): append
   * to X-Forwarded-For and keep -Proto and -Host. Default false: replace them.
   */
  trustProxy?: boolean;
  /**
   * TLS towards an https upstream: the certificate authorities to trust
   * instead of Node's own (an internal CA). The server name checked, and sent
   * as SNI, is always the upstream URL's host, never the client's Host.
   */
  upstreamTls?: UpstreamTls;
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

/** An outcome that is the upstream's failure: what a caller counts as an upstream error. */
export function isUpstreamFailure(outcome: Outcome): outcome is UpstreamErrorKind {
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
    // a failure of a retained release's upstream, pinned outside the URL, is no answer for others either
    ...(answersPrivately(res) ? { 'Cache-Control': PINNED_PRIVATELY } : {}),
    ...extra,
  });
  res.end(body);
}

/**
 * `res.writeHead(status, message, headers)`, every field `headers` repeats
 * written each time. Given a flat list, node:http (Node 20) merges it by
 * name into the fields set on `res` beforehand (an earlier middleware's;
 * mirrorStatic's `Cache-Control` on a pinned request it passes on), so
 * of two `Set-Cookie` the client got the last alone. With such fields,
 * each of the list's replaces the one of its name, its values all kept.
 */
function writeHeadKeepingRepeats(
  res: ServerResponse,
  status: number,
  message: string | undefined,
  headers: readonly string[],
): void {
  if (res.getHeaderNames().length === 0) {
    res.writeHead(status, message, headers as string[]);
    return;
  }
  const byName = new Map<string, [string, string[]]>();
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i] as string;
    const key = name.toLowerCase();
    const values = byName.get(key);
    if (values) values[1].push(headers[i + 1] as string);
    else byName.set(key, [name, [headers[i + 1] as string]]);
  }
  for (const [name, values] of byName.values())
    res.setHeader(name, values.length === 1 ? (values[0] as string) : values);
  res.writeHead(status, message);
}

/** A header name as RFC 9110 allows it (a token). */
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** A header value node:http writes as it is: no control character but tab. */
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

/**
 * The headers of a 103 from the upstream, for `writeEarlyHints`, through the
 * same policy as a final answer's (no hop-by-hop header, none its Connection
 * names) and without what a hint must not carry (Content-Length, Set-Cookie:
 * a hint sets nothing). Only a hint with a Link is relayed, as its purpose is.
 */
function earlyHints(raw: readonly (Buffer | string)[]): Record<string, string | string[]> | null {
  const kept = clientResponseHeaders(raw);
  const hints: Record<string, string | string[]> = {};
  for (let i = 0; i < kept.length; i += 2) {
    const name = (kept[i] as string).toLowerCase();
    const value = kept[i + 1] as string;
    if (name === 'content-length' || name === 'set-cookie') continue;
    if (!TOKEN.test(name) || !FIELD_VALUE.test(value)) continue;
    const prior = hints[name];
    hints[name] = prior === undefined ? value : [...(Array.isArray(prior) ? prior : [prior]), value];
  }
  return hints.link === undefined ? null : hints;
}

/**
 * A refusal written on the raw socket, fixed bytes, closing it: the upgrade
 * path's answer before any response object owns the socket. A client that
 * never reads it is cut after `timeout`.
 */
export function endRaw(socket: Duplex, status: number, timeout: number): void {
  const reason = REASONS[status] ?? 'Error';
  const body = `${reason}\n`;
  const timer = setTimeout(() => socket.destroy(), timeout);
  socket.once('close', () => clearTimeout(timer));
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
    () => socket.destroy(),
  );
}

/** The response node:http is still writing on a client connection, if any. */
function socketOwner(socket: Duplex): ServerResponse | null {
  return (socket as Duplex & { _httpMessage?: ServerResponse | null })._httpMessage ?? null;
}

/**
 * Call `ready` once no earlier answer is still being written on `socket` (an
 * upgrade pipelined behind ordinary requests: node:http hands it over at once,
 * nginx takes it in turn), or `gone` if the connection closes first.
 */
export function whenSocketFree(socket: Duplex, ready: () => void, gone: () => void): void {
  const owner = socketOwner(socket);
  if (owner === null) {
    if (socket.destroyed) gone();
    else ready();
    return;
  }
  const again = () => {
    cleanup();
    // node:http detaches the finished answer (and hands the socket to the next) in its own listener
    setImmediate(() => whenSocketFree(socket, ready, gone));
  };
  const lost = () => {
    cleanup();
    gone();
  };
  const cleanup = () => {
    owner.off('finish', again);
    owner.off('close', again);
    socket.off('close', lost);
  };
  owner.once('finish', again);
  owner.once('close', again);
  socket.once('close', lost);
}

/** The TLS server name for an upstream host: its name, none for an IP address (as nginx's `proxy_ssl_server_name off` checks the name from proxy_pass). */
function serverName(hostname: string): string | undefined {
  const bare = hostname.startsWith('[') ? hostname.slice(1, -1) : hostname;
  return bare === '' || isIP(bare) !== 0 ? undefined : bare;
}

interface Upstream {
  origin: string;
  base: string;
  host: string;
  /** The upstream's hostname: one value per upstream, so undici never derives a TLS name from a client's Host. */
  servername: string;
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
  readonly #opts: Required<Omit<ForwarderOptions, 'upstreamTls'>> & Pick<ForwarderOptions, 'upstreamTls'>;
  readonly #policy: HeaderPolicy;
  readonly #agent: Agent;
  readonly #upstreams = new Map<string, Upstream>();
  readonly #streaming = new Map<string, number>();
  readonly #upgrades = new Set<Client>();
  /** The memory all buffered request bodies hold together. */
  readonly #buffered: BufferBudget;
  /** Per client connection, the pipelined requests waiting for their turn: told when it closes. */
  readonly #waiting = new WeakMap<object, Set<() => void>>();

  constructor(opts: ForwarderOptions) {
    this.#opts = {
      ...opts,
      clientBodyTimeout: opts.clientBodyTimeout ?? opts.idleTimeout,
      trustProxy: opts.trustProxy ?? false,
      requestBufferSize: opts.requestBufferSize ?? PROXY_DEFAULTS.requestBufferSize,
      streamedBodiesPerClient: opts.streamedBodiesPerClient ?? PROXY_DEFAULTS.streamedBodiesPerClient,
      requestBufferTotal: opts.requestBufferTotal ?? PROXY_DEFAULTS.requestBufferTotal,
    };
    this.#buffered = bufferBudget(this.#opts.requestBufferTotal);
    this.#policy = { changeOrigin: this.#opts.changeOrigin, trustProxy: this.#opts.trustProxy };
    const tls: ConnectionOptions = opts.upstreamTls?.ca === undefined ? {} : { ca: opts.upstreamTls.ca };
    const connector = buildConnector({ timeout: this.#opts.connectTimeout, ...tls });
    // the TLS name (SNI and the certificate's check) is the upstream's own, whatever Host a client sent
    this.#connect = (options, callback) =>
      connector({ ...options, servername: serverName(options.hostname) ?? '' }, callback);
    this.#agent = new Agent(this.#clientOptions());
  }

  readonly #connect: buildConnector.connector;

  #clientOptions(): Agent.Options {
    return {
      connect: this.#connect,
      headersTimeout: this.#opts.idleTimeout,
      bodyTimeout: this.#opts.idleTimeout,
    };
  }

  /** A target URL parsed once: a handful of them, not one per request. */
  #upstream(target: string): Upstream {
    let up = this.#upstreams.get(target);
    if (!up) {
      const url = new URL(target);
      up = { origin: url.origin, base: url.pathname.replace(/\/$/, ''), host: url.host, servername: url.hostname };
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
    const plan: Dispatcher.DispatchOptions & { servername: string } = {
      origin: up.origin,
      path: `${up.base}${to.path}`,
      method: req.method ?? 'GET',
      // undici would otherwise take the TLS name from the Host header: a client's choice, and a new connection per Host
      servername: up.servername,
      headers: upstreamRequestHeaders(req, this.#policy, up.host, to.authority),
    };
    return plan;
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

  /**
   * Forward one request; `done` is called exactly once, with how it ended.
   * Pipelined requests on one client connection go upstream one at a time, in
   * order, as nginx takes them: this one starts when node:http hands its
   * response the connection, once every earlier answer on it is finished.
   */
  web(req: IncomingMessage, res: ServerResponse, target: string, done: (outcome: Outcome) => void): void {
    const settled = settleOnce(done);
    const socket = req.socket;
    // the common case: not pipelined behind another answer, so nothing to wait for
    if (res.socket || res.destroyed || socket.destroyed) {
      this.#forwardGuarded(req, res, target, settled);
      return;
    }
    const start = () => {
      cleanup();
      this.#forwardGuarded(req, res, target, settled);
    };
    const handedOver = () => {
      cleanup();
      setImmediate(start);
    };
    const gone = () => {
      cleanup();
      settled.end('client_closed');
    };
    const cleanup = () => {
      res.off('socket', handedOver);
      res.off('close', gone);
      this.#waiting.get(socket)?.delete(gone);
    };
    res.once('socket', handedOver);
    res.once('close', gone);
    // one listener per connection, however many requests wait on it
    let waiting = this.#waiting.get(socket);
    if (waiting === undefined) {
      const set = new Set<() => void>();
      waiting = set;
      this.#waiting.set(socket, set);
      socket.once('close', () => {
        this.#waiting.delete(socket);
        for (const left of [...set]) left();
      });
    }
    waiting.add(gone);
  }

  /** `#forward`, with nothing of ours ever thrown into node:http: the client learns it as from any failure. */
  #forwardGuarded(req: IncomingMessage, res: ServerResponse, target: string, settled: ReturnType<typeof settleOnce>) {
    try {
      this.#forward(req, res, target, settled);
    } catch {
      if (!res.headersSent && !res.destroyed) answer(res, 502);
      else res.destroy();
      settled.end('other');
    }
  }

  #forward(req: IncomingMessage, res: ServerResponse, target: string, settled: ReturnType<typeof settleOnce>): void {
    let controller: Dispatcher.DispatchController | null = null;
    let streamSlot: string | null = null;
    /** Bytes of the buffered body taken from the shared budget, given back when the exchange ends. */
    let held = 0;
    const end = (o: Outcome) => {
      if (streamSlot !== null) this.#giveStreamSlot(streamSlot);
      streamSlot = null;
      this.#buffered.give(held);
      held = 0;
      settled.end(o);
    };
    const fail = (o: Outcome, status = statusFor(o)) => {
      if (settled.outcome !== undefined) return;
      controller?.abort(new Aborted(o));
      // Connection: close on the answer, so a body left unread never reads as the next request
      if (!res.headersSent && !res.destroyed) answer(res, status);
      else res.destroy(); // the status is gone already: cutting the connection is the only honest signal
      end(o);
    };
    if (res.destroyed || req.socket.destroyed) {
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
        if (body.kind === 'buffered') this.#buffered.give(body.held);
        return;
      }
      if (body.kind === 'buffered') held = body.held;
      const options = plan; // made for this request alone: filled in, not copied
      if (body.kind === 'buffered') options.body = body.body;
      else if (body.kind === 'streamed') {
        const client = streamKey(clientAddress(req, this.#opts.trustProxy));
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
    // most requests carry no body: sent at once, without a promise's turn
    if (!carriesBody(req)) {
      send({ kind: 'none' });
      return;
    }
    readClientBody(req, this.#opts.requestBufferSize, this.#opts.clientBodyTimeout, this.#buffered)
      .then(send, (err: unknown) => fail(err instanceof ClientBodyError ? err.outcome : 'other'))
      .catch(() => fail('other'));
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
    let requestStarted = false;
    /** The answer is whole already (a 204 or 304 ends at its headers): what undici reports later is not the client's business. */
    let ended = false;
    return {
      onRequestStart(controller) {
        requestStarted = true;
        started(controller);
        if (res.destroyed) controller.abort(new Aborted('client_closed'));
      },
      onResponseStart(controller, statusCode, _headers, statusMessage) {
        const raw = (controller.rawHeaders ?? []) as Buffer[];
        if (statusCode < 200) {
          // 103 Early Hints go on to the client, through the header policy; other 1xx are the connection's business
          const hints = statusCode === 103 ? earlyHints(raw) : null;
          if (hints && req.httpVersionMinor === 1) {
            try {
              res.writeEarlyHints(hints);
            } catch {
              // a hint node:http will not write is dropped, as a proxy may
            }
          }
          return;
        }
        const bodiless = statusCode === 204 || statusCode === 304;
        let headers = clientResponseHeaders(raw);
        // a retained release named outside the URL (mirrorProxy's pins): no shared cache may keep it for others
        if (answersPrivately(res)) headers = withCacheControl(headers, PINNED_PRIVATELY);
        // a 204 has no body, so no length (RFC 9110 8.6); what the upstream sent after its headers is dropped
        if (statusCode === 204) headers = withoutContentLength(headers);
        try {
          writeHeadKeepingRepeats(res, statusCode, statusMessage, headers);
        } catch {
          fail('bad_response'); // a status line or header node:http will not write
          return;
        }
        // the client is told the length or gets chunks: a body the upstream cuts short is cut here too
        res.once('finish', () => end('ok'));
        if (bodiless) {
          ended = true;
          res.end();
        }
      },
      onResponseData(controller, chunk) {
        if (ended || res.write(chunk)) return;
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
        if (!ended) res.end();
      },
      onResponseError(_controller, err) {
        clearTimeout(stalled);
        if (err instanceof Aborted || ended) return;
        // undici refusing the request itself (before anything went upstream) is the client's input, never an upstream error
        if (!requestStarted && (err as NodeJS.ErrnoException).code === 'UND_ERR_INVALID_ARG') fail('bad_request');
        else fail(err instanceof ClientBodyError ? err.outcome : classify(err));
      },
    };
  }

  /**
   * Forward an upgrade (a WebSocket) on a connection of its own; `done` is
   * called exactly once, when the exchange is over. Nothing throws out of
   * here, into node:http's 'upgrade' event.
   */
  ws(
    req: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    target: string,
    done: (outcome: Outcome) => void,
    privately = false,
  ): void {
    const settled = settleOnce(done);
    const guarded = (run: () => void) => {
      try {
        run();
      } catch {
        socket.destroy();
        settled.end('other');
      }
    };
    socket.on('error', () => {});
    // an upgrade pipelined behind requests waits for their answers, as nginx takes requests in turn
    guarded(() =>
      whenSocketFree(
        socket,
        () => guarded(() => this.#upgrade(req, socket, head, target, settled, privately)),
        () => settled.end('client_closed'),
      ),
    );
  }

  #upgrade(
    req: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    target: string,
    settled: ReturnType<typeof settleOnce>,
    privately: boolean,
  ): void {
    const sendTimeout = this.#opts.clientBodyTimeout;
    let controller: Dispatcher.DispatchController | null = null;
    let upgraded = false;
    let client: Client | null = null;
    /** The declined answer's response object: the socket is ours alone by now. */
    let out: ServerResponse | null = null;
    let stalled: NodeJS.Timeout | undefined;
    const finish = (o: Outcome) => {
      clearTimeout(stalled);
      if (client !== null) {
        this.#upgrades.delete(client);
        client.destroy().catch(() => {});
      }
      settled.end(o);
    };
    const refuse = (o: Outcome, status = statusFor(o)) => {
      if (settled.outcome !== undefined) return;
      controller?.abort(new Aborted(o));
      if (upgraded || out?.headersSent || socket.destroyed || !socket.writable) socket.destroy();
      else endRaw(socket, status, sendTimeout);
      finish(o);
    };
    // a client gone, or half-closed, before the upstream answered ends the exchange
    const clientLeft = () => {
      if (upgraded || settled.outcome !== undefined) return;
      controller?.abort(new Aborted('client_closed'));
      socket.destroy();
      finish('client_closed');
    };
    socket.once('end', clientLeft);
    socket.once('close', clientLeft);
    if (socket.readableEnded || socket.destroyed || !socket.writable) {
      clientLeft();
      return;
    }
    // node:http's keep-alive timer, armed when an earlier answer on this connection finished, is not ours
    (socket as Partial<Socket>).setTimeout?.(0);
    const plan = this.#plan(req, target, true);
    if ('status' in plan) {
      refuse('bad_request', plan.status);
      return;
    }
    client = new Client(this.#upstream(target).origin, this.#clientOptions());
    this.#upgrades.add(client);
    let requestStarted = false;
    const handler: Dispatcher.DispatchHandler = {
      onRequestStart(c) {
        requestStarted = true;
        controller = c;
      },
      onRequestUpgrade: (c, _status, _headers, upstream) => {
        if (settled.outcome !== undefined || socket.destroyed) {
          upstream.destroy();
          return;
        }
        upgraded = true;
        try {
          this.#splice(socket, upstream as Socket, head, (c.rawHeaders ?? []) as Buffer[], finish);
        } catch {
          upstream.destroy();
          socket.destroy();
          finish('other');
        }
      },
      onResponseStart: (c, statusCode, _headers, statusMessage) => {
        if (statusCode < 200) return;
        // declined: relayed as an ordinary answer, framed by node:http, on a connection that then closes
        let headers = clientResponseHeaders((c.rawHeaders ?? []) as Buffer[]);
        // pinned to a retained release outside the URL (mirrorProxy's pins), as an ordinary answer is
        if (privately) headers = withCacheControl(headers, PINNED_PRIVATELY);
        if (statusCode === 204) headers = withoutContentLength(headers);
        try {
          const response = new ServerResponse(req);
          response.shouldKeepAlive = false;
          response.assignSocket(socket as Socket);
          out = response;
          response.writeHead(statusCode, statusMessage, headers);
        } catch {
          refuse('bad_response');
        }
      },
      onResponseData: (c, chunk) => {
        if (out === null || settled.outcome !== undefined || out.write(chunk)) return;
        // a client that stops reading is cut after clientBodyTimeout, as on an ordinary answer
        c.pause();
        stalled = setTimeout(() => refuse('client_timeout'), sendTimeout);
        out.once('drain', () => {
          clearTimeout(stalled);
          c.resume();
        });
      },
      onResponseEnd: () => {
        clearTimeout(stalled);
        if (settled.outcome !== undefined) return;
        if (out === null) socket.destroy();
        else out.end(() => socket.destroy());
        finish('ok');
      },
      onResponseError: (_c, err) => {
        if (err instanceof Aborted) return;
        if (!requestStarted && (err as NodeJS.ErrnoException).code === 'UND_ERR_INVALID_ARG') refuse('bad_request');
        else refuse(classify(err));
      },
    };
    const upgrade = String(req.headers.upgrade ?? 'websocket');
    client.dispatch({ ...plan, upgrade }, handler);
  }

  /**
   * Join an upgraded client socket and the upstream's. Bounded as nginx bounds
   * a tunnel (proxy_read_timeout): idleTimeout with no byte either way closes
   * both, and once either side ends, the other has idleTimeout to finish.
   * mirrorProxy's drain grace cuts a tunnel on a slot no longer mounted.
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
      clearTimeout(idle);
      socket.destroy();
      upstream.destroy();
      finish('ok');
    };
    const idle = setTimeout(close, this.#opts.idleTimeout);
    const active = () => idle.refresh();
    const halfClosed = () => {
      closing ??= setTimeout(close, this.#opts.idleTimeout);
    };
    socket.on('data', active);
    upstream.on('data', active);
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

/** A header list without Content-Length. */
function withoutContentLength(headers: string[]): string[] {
  const kept: string[] = [];
  for (let i = 0; i < headers.length; i += 2)
    if ((headers[i] as string).toLowerCase() !== 'content-length')
      kept.push(headers[i] as string, headers[i + 1] as string);
  return kept;
}

/**
 * The key a client's streamed bodies are counted under: its IPv4 address, or
 * the /64 of an IPv6 one (one subscriber usually holds a whole /64, and could
 * otherwise take the bound once per address it picks).
 */
export function streamKey(address: string): string {
  const bare = (address.split('%')[0] as string).toLowerCase();
  if (isIP(bare) !== 6) return address;
  if (bare.startsWith('::ffff:') && bare.includes('.')) return bare.slice(7); // IPv4-mapped
  const halves = bare.split('::');
  const head = halves[0] ? (halves[0] as string).split(':') : [];
  let groups = head;
  if (halves.length === 2) {
    const tail = halves[1] ? (halves[1] as string).split(':') : [];
    // an embedded IPv4 address at the end is two groups
    const tailGroups = tail.length + (tail.at(-1)?.includes('.') ? 1 : 0);
    groups = [...head, ...Array<string>(Math.max(0, 8 - head.length - tailGroups)).fill('0'), ...tail];
  }
  return `${groups
    .slice(0, 4)
    .map((g) => Number.parseInt(g, 16).toString(16))
    .join(':')}::/64`;
}
