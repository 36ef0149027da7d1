import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';

/**
 * The proxy's header policy, both ways: which headers cross, which the proxy
 * sets itself. Framing (Content-Length, Transfer-Encoding) and the connection
 * are the HTTP engine's business (undici towards the upstream, node:http
 * towards the client); nothing here writes a byte.
 */

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
  'expect', // answered here (node:http sends 100 Continue); the upstream gets the body straight away
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

/** Set by the proxy itself for the upstream, whatever the client sent. */
const SET_HERE = new Set([
  'host',
  'content-length',
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'forwarded',
]);

/**
 * A request header name nginx passes on (its defaults `ignore_invalid_headers on`,
 * `underscores_in_headers off`): letters, digits and hyphens. `X_Forwarded_For`
 * or `X.Real.Ip` would reach a CGI-style framework as the real header's twin.
 */
const PLAIN_NAME = /^[A-Za-z0-9-]+$/;

export interface HeaderPolicy {
  /** Send the upstream's host as Host (true) or the client's (false). */
  changeOrigin: boolean;
  /** Keep the X-Forwarded-* a client sends, appending to X-Forwarded-For (a proxy of yours is in front). */
  trustProxy: boolean;
}

/** The tokens of a Connection header, lower-cased, minus those it may not name away. */
function namedByConnection(value: string | string[] | undefined): string[] {
  if (value === undefined) return [];
  const tokens: string[] = [];
  for (const t of (Array.isArray(value) ? value.join(',') : value).split(',')) {
    const token = t.trim().toLowerCase();
    if (token !== '' && !PROTECTED.has(token)) tokens.push(token);
  }
  return tokens;
}

/** The client's address as the proxy's own X-Forwarded-For entry would name it. */
export function clientAddress(req: IncomingMessage, trustProxy: boolean): string {
  const own = req.socket.remoteAddress ?? '';
  if (!trustProxy) return own;
  // the last entry is the one the trusted proxy in front appended: the client it saw
  const prior = req.headers['x-forwarded-for'];
  const last = typeof prior === 'string' ? prior.split(',').pop()?.trim() : undefined;
  return last || own;
}

/**
 * The headers for the upstream, as a flat [name, value, ...] list: the
 * client's end-to-end headers, then Host (the absolute-form target's
 * authority, the client's Host, or the upstream's with changeOrigin) and the
 * proxy's own X-Forwarded-*.
 */
export function upstreamRequestHeaders(
  req: IncomingMessage,
  policy: HeaderPolicy,
  upstreamHost: string,
  targetAuthority: string | null,
): string[] {
  const named = namedByConnection(req.headers.connection);
  const raw = req.rawHeaders;
  const headers: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower) || SET_HERE.has(lower) || !PLAIN_NAME.test(name)) continue;
    if (named.length > 0 && named.includes(lower)) continue;
    headers.push(name, raw[i + 1] as string);
  }
  // RFC 9112 3.2.2: an absolute-form target's authority replaces the Host header
  const clientHost = targetAuthority ?? req.headers.host;
  headers.push('Host', policy.changeOrigin || !clientHost ? upstreamHost : clientHost);
  const address = req.socket.remoteAddress ?? '';
  const priorFor = policy.trustProxy ? req.headers['x-forwarded-for'] : undefined;
  headers.push('X-Forwarded-For', priorFor ? `${priorFor}, ${address}` : address);
  const proto = (req.socket as Socket & { encrypted?: boolean }).encrypted ? 'https' : 'http';
  const priorProto = policy.trustProxy ? req.headers['x-forwarded-proto'] : undefined;
  headers.push('X-Forwarded-Proto', typeof priorProto === 'string' ? priorProto : proto);
  const priorHost = policy.trustProxy ? req.headers['x-forwarded-host'] : undefined;
  if (typeof priorHost === 'string') headers.push('X-Forwarded-Host', priorHost);
  else if (clientHost) headers.push('X-Forwarded-Host', clientHost);
  return headers;
}

/**
 * The upstream's answer headers for the client, as a flat list: hop-by-hop
 * ones and those its Connection names dropped; Content-Length kept (node:http
 * frames the body by it, or chunked without it).
 */
export function clientResponseHeaders(raw: readonly (Buffer | string)[]): string[] {
  let connection: string | undefined;
  for (let i = 0; i < raw.length; i += 2)
    if (String(raw[i]).toLowerCase() === 'connection')
      connection = connection === undefined ? String(raw[i + 1]) : `${connection},${raw[i + 1]}`;
  const named = namedByConnection(connection);
  const headers: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = String(raw[i]);
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower)) continue;
    if (named.length > 0 && named.includes(lower)) continue;
    // latin1: the bytes the upstream sent, as node:http writes them back
    headers.push(
      name,
      typeof raw[i + 1] === 'string' ? (raw[i + 1] as string) : (raw[i + 1] as Buffer).toString('latin1'),
    );
  }
  return headers;
}

/**
 * Fields a shared cache obeys over `Cache-Control`: `CDN-Cache-Control` and
 * the targeted ones of RFC 9213 (`Cloudflare-CDN-Cache-Control`, ...), and
 * `Surrogate-Control` (Fastly, Akamai, Varnish).
 */
const CACHE_CONTROL_FIELD = /^(?:cache-control|(?:[a-z0-9-]+-)?cdn-cache-control|surrogate-control)$/;

/**
 * `headers` (name, value pairs, as `clientResponseHeaders` answers) with
 * every `Cache-Control` of theirs replaced by one of `value`, and every
 * field a CDN would read instead of it dropped.
 */
export function withCacheControl(headers: readonly string[], value: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < headers.length; i += 2) {
    if (CACHE_CONTROL_FIELD.test((headers[i] as string).toLowerCase())) continue;
    out.push(headers[i] as string, headers[i + 1] as string);
  }
  out.push('Cache-Control', value);
  return out;
}
