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
