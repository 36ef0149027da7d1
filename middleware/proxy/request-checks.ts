import type { IncomingMessage } from 'node:http';

/**
 * What the proxy refuses before anything goes upstream, with the status nginx
 * answers for the same request (node:http has parsed the request already and
 * refused what it cannot frame). The rules, and where mirrorProxy still differs
 * from nginx, are in README.md ("Requests the proxy refuses").
 */

export interface Refusal {
  status: 400 | 405 | 501 | 505;
  reason: string;
}

/** Where a request goes upstream: the target's path and query, verbatim, and an absolute-form target's authority. */
export interface UpstreamTarget {
  path: string;
  authority: string | null;
}

/** `scheme://authority` of an absolute-form target (RFC 9112 3.2.2); nginx takes any scheme. */
const ABSOLUTE_FORM = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/([^/?#]*)(.*)$/s;

/**
 * A Host header or an absolute-form authority nginx accepts
 * (ngx_http_validate_host): no `/`, no control character or space, no `..`, not
 * empty once a trailing dot is dropped; in the request line also no userinfo.
 */
function validHost(host: string): boolean {
  if (host === '' || host.includes('..')) return false;
  for (let i = 0; i < host.length; i++) {
    const c = host.charCodeAt(i);
    if (c <= 0x20 || c === 0x7f || c === 0x2f /* / */) return false;
  }
  const close = host.indexOf(']');
  const name = host.startsWith('[') && close > 0 ? host.slice(0, close + 1) : host.split(':')[0];
  return name !== '' && name !== '.';
}

/**
 * An authority in the request line: a host and an optional decimal port, as
 * nginx's parser takes it, but a port outside 1-65535 is refused (nginx passes
 * `:0` or `:99999999999` on; no server has such a port, and the authority
 * becomes the Host the upstream sees).
 */
function validAuthority(authority: string): boolean {
  if (authority.includes('@')) return false; // userinfo: nginx 400
  const m = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(\d*))?$/.exec(authority);
  if (m === null || !validHost(authority)) return false;
  const port = m[2];
  if (port === undefined || port === '') return true;
  const n = Number(port);
  return port.length <= 5 && n >= 1 && n <= 65535;
}

const hex = (c: number) => (c >= 48 && c <= 57) || (c >= 65 && c <= 70) || (c >= 97 && c <= 102);

/**
 * nginx's reading of a path (ngx_http_parse_complex_uri): %XX decoded (a bad
 * escape refused), a decoded NUL refused, dot segments resolved, and a path
 * that climbs above the root refused. The path itself goes upstream
 * unchanged: what an application's check saw in req.url is what the upstream
 * gets.
 */
function pathRefusal(path: string): string | null {
  const end = path.search(/[?#]/);
  const raw = end === -1 ? path : path.slice(0, end);
  // the common path: nothing escaped and no dot segment, so nothing to decode or climb
  if (!raw.includes('%') && !raw.includes('/.')) return null;
  let decoded = '';
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if (c === 0x25 /* % */) {
      const a = raw.charCodeAt(i + 1);
      const b = raw.charCodeAt(i + 2);
      if (!hex(a) || !hex(b)) return 'malformed percent-encoding in the path';
      const byte = Number.parseInt(raw.slice(i + 1, i + 3), 16);
      if (byte === 0) return 'a NUL in the path';
      decoded += String.fromCharCode(byte);
      i += 2;
    } else decoded += raw[i];
  }
  let depth = 0;
  for (const segment of decoded.split('/').slice(1)) {
    if (segment === '..') {
      depth--;
      if (depth < 0) return 'the path climbs above the root';
    } else if (segment !== '.' && segment !== '') depth++;
  }
  return null;
}

/** The request's target for the upstream, or why it is refused. */
export function upstreamTarget(url: string | undefined): UpstreamTarget | Refusal {
  const raw = url ?? '';
  let path: string;
  let authority: string | null = null;
  if (raw.startsWith('/')) path = raw;
  else {
    const m = ABSOLUTE_FORM.exec(raw);
    if (!m) return { status: 400, reason: 'malformed request target' };
    authority = m[1] as string;
    if (!validAuthority(authority)) return { status: 400, reason: 'invalid authority in the request target' };
    // an empty port is no port (RFC 3986 3.2.3): `site.test:` is sent upstream as `site.test`
    if (authority.endsWith(':')) authority = authority.slice(0, -1);
    const rest = m[2] as string;
    path = rest.startsWith('/') ? rest : `/${rest}`;
  }
  // node:http has refused spaces and control characters in the line; a decoded one is another matter
  if (/[\s\0]/.test(path)) return { status: 400, reason: 'malformed request target' };
  const refused = pathRefusal(path);
  if (refused) return { status: 400, reason: refused };
  return { path, authority };
}

/**
 * The request-level refusals, nginx's status for each: the HTTP version, the
 * method, Host and the body's framing. `upgrade` refuses a body on an upgrade
 * request: its bytes would be read as the upgraded stream.
 */
export function requestRefusal(req: IncomingMessage, upgrade: boolean): Refusal | null {
  if (req.httpVersionMajor !== 1) return { status: 505, reason: 'HTTP version not supported' };
  if (req.method === 'TRACE') return { status: 405, reason: 'TRACE is not allowed' };
  let hosts = 0;
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) if ((raw[i] as string).toLowerCase() === 'host') hosts++;
  if (hosts > 1) return { status: 400, reason: 'more than one Host header' };
  const host = req.headers.host;
  if (host !== undefined && !validHost(host)) return { status: 400, reason: 'invalid Host header' };
  const te = req.headers['transfer-encoding'];
  const length = req.headers['content-length'];
  if (te !== undefined) {
    if (req.httpVersionMinor === 0) return { status: 400, reason: 'HTTP/1.0 request with Transfer-Encoding' };
    if (length !== undefined) return { status: 400, reason: 'both Content-Length and Transfer-Encoding' };
    // only chunked alone: a coding in front would be dropped, its bytes passed as a plain body
    if (te.trim().toLowerCase() !== 'chunked') return { status: 501, reason: 'unsupported Transfer-Encoding' };
  }
  if (upgrade && (te !== undefined || (length !== undefined && length !== '0')))
    return { status: 400, reason: 'an upgrade request with a body' };
  return null;
}

export function isRefusal(value: UpstreamTarget | Refusal): value is Refusal {
  return 'status' in value;
}
