import type { IncomingMessage, ServerResponse } from 'node:http';
import { type ErrorCode, errorBody } from '../../core/errors.js';
import { randomBytes } from 'node:crypto';
import { bearerMatches } from '../../core/token-match.js';
import { hasBodyOfType, pathOf, queryOf, readBody, send, sendJson } from '../../core/http-io.js';
import { parseWritePath, WritePathError } from '../../store/write-path.js';
import { releaseIdProblem } from '../../store/epoch-file.js';
import type { Logger } from '../../core/logger.js';
import type { Agent, SwapRecord } from '../agent.js';
import { stageJsonBatch } from '../master/json-batch.js';
import { type StagedOp, WriteError, bodyTooLarge } from '../master/master-writer.js';
import { statusPage } from './status-page.js';
import { stageTarBatch } from '../master/tar-batch.js';
import { stat } from 'node:fs/promises';
import { withDeadline } from '../../core/deadline.js';
import { type Next, Router } from './router.js';

export interface ApiOptions {
  /** The agent once started; null while it is still starting (readyz answers 503). */
  agent: () => Agent | null;
  token: string;
  /** Largest body the write API accepts, in bytes. */
  maxBody: number;
  logger: Logger;
  /** Probed by /healthz: a stat of it must complete. */
  stateDir: string;
}

/** How long /healthz waits for a file system call before it says the agent is unhealthy. */
const HEALTH_PROBE_MS = 1000;

function swapStatus(record: SwapRecord): number {
  if (record.result === 'ok') return 200;
  return record.result === 'drain_timeout' ? 504 : 503;
}

/** Body of an error answer: a stable code and a message meant for the writer, never an internal one. */
function sendError(res: ServerResponse, status: number, code: ErrorCode, message: string): void {
  sendJson(res, status, errorBody(code, message));
}

/** A query parameter given once; a parameter given twice is taken as malformed (an array), never as either. */
function oneValue(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v.join(',') : v;
}

function truthy(v: unknown): boolean {
  return v === '1' || v === 'true' || v === true;
}

type Req = IncomingMessage;
type Res = ServerResponse;

/**
 * The agent's HTTP API: the write path of the authorization server, sync and
 * rollback signals, status, and the unauthenticated health and metrics. A
 * request listener for node:http.
 */
export function createApi(opts: ApiOptions): (req: Req, res: Res) => void {
  const app = new Router();
  const expected = opts.token;

  const agentOr503 = (res: Res): Agent | null => {
    const agent = opts.agent();
    if (!agent) sendError(res, 503, 'NOT_READY', 'the agent is still starting');
    return agent;
  };

  app.get('/', (_req, res) => {
    const nonce = randomBytes(16).toString('base64');
    res.setHeader(
      'Content-Security-Policy',
      `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'`,
    );
    res.setHeader('X-Content-Type-Options', 'nosniff');
    res.setHeader('Referrer-Policy', 'no-referrer');
    res.setHeader('Cache-Control', 'no-store');
    send(res, 200, statusPage(nonce), 'text/html; charset=utf-8');
  });

  app.get('/healthz', async (_req, res) => {
    // Healthy means able to serve the API: the event loop answers (this runs) and file system calls
    // complete (the thread pool is not stuck on a hung mount or a blocking open).
    try {
      await withDeadline(stat(opts.stateDir), HEALTH_PROBE_MS, 'a file system call');
      sendJson(res, 200, { ok: true });
    } catch (err) {
      sendJson(res, 503, { ok: false, ...errorBody('UNHEALTHY', (err as Error).message) });
    }
  });
  app.get('/readyz', (_req, res) => {
    const agent = opts.agent();
    if (agent) sendJson(res, 200, { ready: true, epoch: agent.epoch.epoch });
    else sendJson(res, 503, { ready: false });
  });
  app.get('/metrics', async (_req, res) => {
    const agent = agentOr503(res);
    if (!agent) return;
    send(res, 200, await agent.metrics.registry.metrics(), agent.metrics.registry.contentType);
  });

  // fleet hosts pull content with the fleet token, not the write token
  app.use('/v1/fleet', (req, res, next) => {
    const api = opts.agent()?.fleetApi;
    if (api) api(req, res, next);
    else sendError(res, 404, 'NOT_A_FLEET', 'this agent coordinates no fleet (--etcd)');
  });

  // everything under /v1 needs the token
  app.use('/v1', (req, res, next) => {
    if (!bearerMatches(req.headers.authorization, expected)) {
      res.setHeader('WWW-Authenticate', 'Bearer realm="mirrorswap"');
      sendError(res, 401, 'UNAUTHORIZED', 'a valid "Authorization: Bearer <token>" header is required');
      return;
    }
    next();
  });

  const count = (op: string, result: string) => opts.agent()?.metrics.writes.inc({ op, result });

  // A plain prefix rule, not a route parameter: the path is validated here, from its raw form.
  app.use('/v1/files', (req, res, next) => {
    if (req.method === 'PUT') return putFile(req, res, next);
    if (req.method === 'DELETE') return deleteFile(req, res, next);
    res.setHeader('Allow', 'PUT, DELETE');
    return sendError(res, 405, 'METHOD_NOT_ALLOWED', 'files take PUT and DELETE');
  });

  /** A streamed body whose declared length is over the limit is refused before a byte is read; the rest are counted as they come. */
  function refuseDeclaredOversize(req: Req): void {
    if (Number(req.headers['content-length'] ?? 0) > opts.maxBody) throw bodyTooLarge(opts.maxBody);
  }

  async function putFile(req: Req, res: Res, next: Next): Promise<void> {
    const agent = agentOr503(res);
    if (!agent) return;
    try {
      const path = parseWritePath(pathOf(req.url).slice(1));
      refuseDeclaredOversize(req);
      const staged = await agent.writer.stage(req, opts.maxBody);
      const seq = await agent.writer.apply([{ op: 'put', path, tmp: staged.tmp, size: staged.size }]);
      agent.changed();
      count('put', 'ok');
      sendJson(res, 201, { path, size: staged.size, seq });
    } catch (err) {
      count('put', String((err as WriteError).status ?? 500));
      next(err);
    }
  }

  async function deleteFile(req: Req, res: Res, next: Next): Promise<void> {
    const agent = agentOr503(res);
    if (!agent) return;
    try {
      const path = parseWritePath(pathOf(req.url).slice(1));
      const seq = await agent.writer.apply([{ op: 'delete', path }]);
      agent.changed();
      count('delete', 'ok');
      sendJson(res, 200, { path, deleted: true, seq });
    } catch (err) {
      count('delete', String((err as WriteError).status ?? 500));
      next(err);
    }
  }

  app.post('/v1/batch', (req, res, next) => {
    if (hasBodyOfType(req, 'application/x-tar')) {
      return batch(res, next, (agent) => {
        refuseDeclaredOversize(req);
        return stageTarBatch(req, agent.writer, opts.maxBody);
      });
    }
    // a JSON body is read whole (a body of another type is no body: the batch refuses it)
    const body = hasBodyOfType(req, 'application/json') ? readBody(req, opts.maxBody) : Promise.resolve(undefined);
    return body.then((bytes) => batch(res, next, (agent) => stageJsonBatch(bytes, agent.writer)));
  });

  /** Stage a batch (either format), apply it and answer; staged files are consumed or removed either way. */
  async function batch(res: Res, next: Next, stage: (agent: Agent) => Promise<StagedOp[]>): Promise<void> {
    const agent = agentOr503(res);
    if (!agent) return;
    try {
      const staged = await stage(agent);
      const seq = await agent.writer.apply(staged);
      agent.changed();
      count('batch', 'ok');
      sendJson(res, 200, { applied: staged.length, seq });
    } catch (err) {
      count('batch', String((err as WriteError).status ?? 500));
      next(err);
    }
  }

  app.post('/v1/sync', async (req, res) => {
    const agent = agentOr503(res);
    if (!agent) return;
    const query = queryOf(req);
    const release = oneValue(query.release);
    const problem = release === undefined ? null : releaseIdProblem(release);
    if (problem) return sendError(res, 400, 'BAD_RELEASE', `release: ${problem}`);
    const done = agent.requestSync({ reason: 'api', full: truthy(query.full), release });
    if (!truthy(query.wait)) {
      sendJson(res, 202, { accepted: true });
      return;
    }
    const record = await done;
    sendJson(res, swapStatus(record), record);
  });

  app.post('/v1/rollback', async (req, res) => {
    const agent = agentOr503(res);
    if (!agent) return;
    const to = oneValue(queryOf(req).to);
    // a target is a release id or an epoch number: both fit the release id's rules
    const problem = to === undefined ? null : releaseIdProblem(to);
    if (problem) return sendError(res, 400, 'BAD_RELEASE', `to: ${problem}`);
    const record = await agent.rollback(to);
    sendJson(res, swapStatus(record), record);
  });

  app.get('/v1/status', async (req, res) => {
    const agent = agentOr503(res);
    if (!agent) return;
    // ?disk=1: each copy's disk bytes, shared and owned (a walk of every copy: on demand only)
    const disk = oneValue(queryOf(req).disk) === '1';
    sendJson(res, 200, { ...(await agent.status()), ...(disk ? { disk: await agent.diskUsage() } : {}) });
  });

  app.get('/v1/verify', async (req, res) => {
    const agent = agentOr503(res);
    if (!agent) return;
    const asked = queryOf(req).slot;
    const slot = asked === 'a' || asked === 'b' ? asked : undefined;
    const differences = await agent.verify(slot);
    sendJson(res, 200, { slot: slot ?? agent.epoch.mounted, epoch: agent.epoch.epoch, differences });
  });

  app.use('/', (_req, res) => sendError(res, 404, 'NOT_FOUND', 'no such endpoint'));

  return app.listener((err, req, res) => {
    if (err instanceof WriteError || err instanceof WritePathError) {
      // the writer's mistakes are its own business; a full disk or an unfinished batch is the operator's
      if (err instanceof WriteError && err.status >= 500) {
        opts.logger.error({ code: err.code, method: req.method, url: req.url }, err.message);
      }
      if (err.status === 413) res.setHeader('Connection', 'close');
      sendError(res, err.status, err instanceof WriteError ? err.code : 'BAD_PATH', err.message);
      return;
    }
    // a body the API could not read (too large, cut, not decodable) carries its status
    const status = (err as { status?: number } | null)?.status;
    if (status === 413) {
      res.setHeader('Connection', 'close');
      sendError(res, 413, 'BODY_TOO_LARGE', bodyTooLarge(opts.maxBody).message);
      return;
    }
    if (status !== undefined && status >= 400 && status < 500) {
      sendError(res, status, 'BAD_REQUEST', 'the request could not be parsed');
      return;
    }
    opts.logger.error({ err: (err as Error)?.message, method: req.method, url: req.url }, 'request failed');
    sendError(res, 500, 'INTERNAL', 'internal error; see the agent log');
  });
}
