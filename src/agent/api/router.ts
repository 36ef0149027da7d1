import type { IncomingMessage, ServerResponse } from 'node:http';
import { pathOf } from '../../core/http-io.js';

/** Pass on to the next rule, or with an error to the error handler. */
export type Next = (err?: unknown) => void;
/** A rule's handler; a promise it returns that rejects goes to the error handler. */
export type Handler = (req: IncomingMessage, res: ServerResponse, next: Next) => unknown;
export type ErrorHandler = (err: unknown, req: IncomingMessage, res: ServerResponse) => void;

interface Rule {
  /** null: any method. */
  method: string | null;
  path: string;
  prefix: boolean;
  handler: Handler;
}

/**
 * The agent API's router: rules tried in the order they were added, paths
 * compared without regard to case. `get` and `post` match one path, with or
 * without a trailing slash (`get` answers HEAD too); `use` matches a path and
 * everything below it, and its handler sees `req.url` from below the prefix,
 * as a sub-application would. Paths are matched still encoded: `/v1/%66iles`
 * is not `/v1/files`.
 */
export class Router {
  readonly #rules: Rule[] = [];

  get(path: string, handler: Handler): this {
    this.#rules.push({ method: 'GET', path: path.toLowerCase(), prefix: false, handler });
    return this;
  }

  post(path: string, handler: Handler): this {
    this.#rules.push({ method: 'POST', path: path.toLowerCase(), prefix: false, handler });
    return this;
  }

  /** Any method, at `prefix` or below it (`/`: every request). */
  use(prefix: string, handler: Handler): this {
    this.#rules.push({ method: null, path: prefix.toLowerCase().replace(/\/$/, ''), prefix: true, handler });
    return this;
  }

  /** The request listener: the rules in order, then `onError` for whatever a handler threw or passed on. */
  listener(onError: ErrorHandler): (req: IncomingMessage, res: ServerResponse) => void {
    return (req, res) => {
      const url = req.url ?? '/';
      const path = pathOf(url);
      const q = url.indexOf('?');
      const query = q === -1 ? '' : url.slice(q);
      let i = 0;
      const fail = (err: unknown) => {
        // an answer already begun cannot become an error answer: cut it, the client sees it incomplete
        if (res.headersSent) res.destroy();
        else onError(err, req, res);
      };
      const next: Next = (err) => {
        req.url = url;
        if (err !== undefined) return fail(err);
        for (; i < this.#rules.length; i++) {
          const rule = this.#rules[i] as Rule;
          if (rule.method !== null && rule.method !== req.method && !(rule.method === 'GET' && req.method === 'HEAD'))
            continue;
          const tail = below(rule, path);
          if (tail === null) continue;
          i++;
          if (rule.prefix) req.url = `${tail.startsWith('/') ? tail : `/${tail}`}${query}`;
          try {
            const done = rule.handler(req, res, next);
            if (done instanceof Promise) done.catch((e: unknown) => next(e ?? new Error('rejected')));
          } catch (e) {
            next(e ?? new Error('thrown'));
          }
          return;
        }
        fail(new Error(`no rule answered ${req.method} ${path}`));
      };
      next();
    };
  }
}

/** What of `path` lies below the rule's (`''` for the path itself), or null if the rule does not match it. */
function below(rule: Rule, path: string): string | null {
  const p = path.toLowerCase();
  if (!rule.prefix) return p === rule.path || p === `${rule.path}/` ? '' : null;
  if (rule.path === '') return path;
  if (p === rule.path || p.startsWith(`${rule.path}/`)) return path.slice(rule.path.length);
  return null;
}
