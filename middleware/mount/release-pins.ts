import type { IncomingMessage, ServerResponse } from 'node:http';
import { RELEASE_ID_PATTERN } from '../../src/store/epoch-file.js';

/**
 * Where a request may name the release it belongs to (skew protection): a
 * page loaded from release N asks for N's chunks even after N+1 is mounted.
 * The defaults are what Next.js sends when `deploymentId` is set (`?dpl=`,
 * `x-deployment-id`); the cookie is for an app that sets it on its pages.
 */
export interface ReleasePinSources {
  /** Query parameter naming the release (false: none). */
  readonly query: string | false;
  /** Request header naming it (false: none). */
  readonly header: string | false;
  /** Cookie naming it (false: none). Ignored on navigations: a reload gets the mounted release. */
  readonly cookie: string | false;
}

/**
 * Hashed asset names, as bundlers write them: a `.` or `-` and at least 8 of
 * `A-Z a-z 0-9 _ -` holding a digit, before a script, style, map, font or wasm
 * extension (`app.3f9a1c2e.js`, `index-B2xQ9_a1.css`); or anything under
 * Next.js's `/_next/static/`. A name without a digit in that place
 * (`main-navigation.js`) is not taken for a hash.
 */
export const HASHED_ASSET =
  /\/_next\/static\/|[.-](?=[A-Za-z0-9_-]*\d)[A-Za-z0-9_-]{8,}\.(?:m?js|css|map|wasm|woff2?)$/;

/**
 * The `Cache-Control` of an answer pinned to a retained release outside its
 * URL (by the header or the cookie), whoever serves it (mirrorStatic,
 * mirrorProxy, the nginx companion's include): the URL does not say which
 * release it is, so a shared cache keyed by it must not keep the answer for
 * requests that name none.
 */
export const PINNED_PRIVATELY = 'private, no-cache';

/** Responses marked `PINNED_PRIVATELY`: what a proxy sends must say so whatever its upstream said. */
const pinnedPrivately = new WeakSet<ServerResponse>();

/** Mark `res` as answering for a retained release named outside its URL. */
export function answerPrivately(res: ServerResponse): void {
  res.setHeader('Cache-Control', PINNED_PRIVATELY);
  pinnedPrivately.add(res);
}

/**
 * Mark `res` as `answerPrivately` does, the field left for its writer to
 * add (a proxy: `withCacheControl`). A field set on a response beforehand
 * makes node:http merge the fields `writeHead` is given into it by name:
 * an upstream's repeated `Set-Cookie` or `Link` would keep its last alone.
 */
export function answerPrivatelyWhenWritten(res: ServerResponse): void {
  pinnedPrivately.add(res);
}

/** Whether `res` was marked by `answerPrivately`. */
export function answersPrivately(res: ServerResponse): boolean {
  return pinnedPrivately.has(res);
}

/** Longest value taken as a release name: a release id's limit. */
const MAX_NAME = 128;

/** Where a request named its release: the query is part of the URL, the header and cookie are not. */
export type PinSource = 'query' | 'header' | 'cookie';

/** The release a request names and where, or null when it names none (or nothing that can be a release id or epoch). */
export function pinOf(req: IncomingMessage, sources: ReleasePinSources): { name: string; via: PinSource } | null {
  const url = req.url;
  if (sources.query !== false && url !== undefined) {
    const q = url.indexOf('?');
    if (q !== -1) {
      const value = queryValue(url.slice(q + 1), sources.query);
      if (value !== null) return named(value, 'query');
    }
  }
  if (sources.header !== false) {
    const value = req.headers[sources.header];
    if (typeof value === 'string') return named(value.trim(), 'header');
  }
  if (sources.cookie !== false && req.headers['sec-fetch-mode'] !== 'navigate') {
    const cookie = req.headers.cookie;
    if (cookie !== undefined) {
      const value = cookieValue(cookie, sources.cookie);
      if (value !== null) return named(value, 'cookie');
    }
  }
  return null;
}

function named(value: string, via: PinSource): { name: string; via: PinSource } | null {
  const name = nameOrNull(value);
  return name === null ? null : { name, via };
}

function nameOrNull(value: string): string | null {
  return value.length <= MAX_NAME && RELEASE_ID_PATTERN.test(value) ? value : null;
}

/**
 * The first value of `name` in a query string, percent-decoded; null when
 * absent or malformed. A `+` stays a `+` (a release id may hold one, and none
 * holds a space), as nginx's `$arg_` leaves it.
 */
function queryValue(query: string, name: string): string | null {
  for (const part of query.split('&')) {
    const eq = part.indexOf('=');
    if (eq === -1 || part.slice(0, eq) !== name) continue;
    try {
      return decodeURIComponent(part.slice(eq + 1));
    } catch {
      return null;
    }
  }
  return null;
}

/** The value of cookie `name` in a Cookie header (RFC 6265 5.4 pairs, quotes dropped); null when absent. */
function cookieValue(header: string, name: string): string | null {
  for (const pair of header.split(';')) {
    const eq = pair.indexOf('=');
    if (eq === -1 || pair.slice(0, eq).trim() !== name) continue;
    const raw = pair.slice(eq + 1).trim();
    return raw.length >= 2 && raw.startsWith('"') && raw.endsWith('"') ? raw.slice(1, -1) : raw;
  }
  return null;
}
