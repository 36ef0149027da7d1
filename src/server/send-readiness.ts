import type { ServerResponse } from 'node:http';

/**
 * The `/readyz` answer of every web server face (`mirrorswap serve`, the nginx
 * companion): 200 or 503 with the judgement as JSON, never cached. The
 * judgement comes from memory and the clock, so answering never waits.
 */
export function sendReadiness(res: ServerResponse, readiness: { ready: boolean }): void {
  res.statusCode = readiness.ready ? 200 : 503;
  res.setHeader('Content-Type', 'application/json');
  res.setHeader('Cache-Control', 'no-store');
  res.end(`${JSON.stringify(readiness)}\n`);
}
