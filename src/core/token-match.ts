import { createHash, timingSafeEqual } from 'node:crypto';

/**
 * The bearer-token check every HTTP face shares (the agent's write API, the
 * fleet's): constant time, and hashing first makes the lengths equal so a
 * token's length leaks nothing either.
 */
const digest = (s: string) => createHash('sha256').update(s).digest();

export function tokenMatches(given: string, expected: string): boolean {
  return timingSafeEqual(digest(given), digest(expected));
}

/**
 * Whether a request's `Authorization: Bearer <token>` carries `expected`: the
 * one reading of the header for every API (surrounding blanks ignored).
 */
export function bearerMatches(authorization: string | undefined, expected: string): boolean {
  const header = authorization ?? '';
  const given = header.startsWith('Bearer ') ? header.slice(7).trim() : '';
  return given !== '' && tokenMatches(given, expected);
}
