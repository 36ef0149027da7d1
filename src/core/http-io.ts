import type { IncomingMessage, ServerResponse } from 'node:http';
import { type ParsedUrlQuery, parse as parseQuery } from 'node:querystring';
import type { Readable } from 'node:stream';
import { finished } from 'node:stream';
import { createBrotliDecompress, createGunzip, createInflate } from 'node:zlib';
import etag from 'etag';
import fresh from 'fresh';
import createError from 'http-errors';

/**
 * The few pieces of HTTP the agent's API and the fleet's content endpoints
 * need on bare node:http, each answering on the wire as Express and
 * body-parser did before them.
 */

/** The request target's path, without its query; an absolute-form target (`http://host/p`) gives `/p`. */
export function pathOf(url = '/'): string {
  const q = url.indexOf('?');
  const path = q === -1 ? url : url.slice(0, q);
  if (path.startsWith('/')) return path;
  const origin = /^[a-z][a-z0-9+.-]*:\/\/[^/]*/i.exec(path);
  return origin ? path.slice(origin[0].length) || '/' : path;
}

/** The query of the request target, parsed as Express's "simple" parser did (`?a=1&a=2` gives a list). */
export function queryOf(req: IncomingMessage): ParsedUrlQuery {
  const url = req.url ?? '';
  const q = url.indexOf('?');
  return parseQuery(q === -1 ? '' : url.slice(q + 1));
}

/** Whether the request has a body: a Transfer-Encoding, or a Content-Length (even 0). */
export function hasBody(req: IncomingMessage): boolean {
  return req.headers['transfer-encoding'] !== undefined || !Number.isNaN(Number(req.headers['content-length']));
}

/** Whether the request has a body of media type `type` (`application/json`), whatever its parameters. */
export function hasBodyOfType(req: IncomingMessage, type: string): boolean {
  const header = req.headers['content-type'];
  return hasBody(req) && typeof header === 'string' && header.split(';')[0]?.trim().toLowerCase() === type;
}

/**
 * Answer with a whole body: Content-Type (unless one is set), Content-Length
 * and a weak ETag; a GET or HEAD that already holds that ETag gets `304`.
 */
export function send(res: ServerResponse, status: number, body: string | Buffer, type: string): void {
  const bytes = typeof body === 'string' ? Buffer.from(body) : body;
  const method = res.req.method;
  res.statusCode = status;
  if (!res.hasHeader('Content-Type')) res.setHeader('Content-Type', type);
  res.setHeader('Content-Length', bytes.length);
  const tag = etag(bytes, { weak: true });
  res.setHeader('ETag', tag);
  const conditional = method === 'GET' || method === 'HEAD';
  if (conditional && ((status >= 200 && status < 300) || status === 304) && fresh(res.req.headers, { etag: tag })) {
    res.statusCode = 304;
    res.removeHeader('Content-Type');
    res.removeHeader('Content-Length');
    res.end();
    return;
  }
  if (method === 'HEAD') res.end();
  else res.end(bytes);
}

/** Answer with `value` as JSON. */
export function sendJson(res: ServerResponse, status: number, value: unknown): void {
  send(res, status, JSON.stringify(value), 'application/json; charset=utf-8');
}

const DECODERS: Record<string, () => NodeJS.ReadWriteStream> = {
  gzip: createGunzip,
  deflate: createInflate,
  br: createBrotliDecompress,
};

/**
 * Read a whole body of at most `limit` bytes, after undoing a gzip, deflate
 * or br Content-Encoding. It fails with an error carrying its status: 415 for
 * another encoding; 413 for a body over the limit (declared or counted) and
 * 400 for one that cannot be decoded or was cut, both once the rest of the
 * request was read off, so that the client reads the answer rather than a
 * reset.
 */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const coding = String(req.headers['content-encoding'] ?? 'identity').toLowerCase();
  const decoder = coding === 'identity' ? null : DECODERS[coding];
  if (decoder === undefined) return Promise.reject(createError(415, `unsupported content encoding "${coding}"`));
  return new Promise((resolve, reject) => {
    const stream: Readable = decoder ? (req.pipe(decoder()) as unknown as Readable) : req;
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const stop = () => {
      settled = true;
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('error', onError);
      req.off('error', onError);
      req.off('close', onClose);
    };
    const fail = (err: Error) => {
      if (settled) return;
      stop();
      if (stream !== req) {
        req.unpipe(stream as unknown as NodeJS.WritableStream);
        stream.on('error', () => {});
        stream.destroy();
      }
      finished(req, () => reject(err));
      req.resume();
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) fail(createError(413, 'request entity too large'));
      else chunks.push(chunk);
    };
    const onEnd = () => {
      if (settled) return;
      stop();
      if (stream !== req) req.resume();
      resolve(Buffer.concat(chunks, size));
    };
    const onError = (err: Error) => fail(createError(400, err.message));
    const onClose = () => {
      if (!req.complete) fail(createError(400, 'request aborted'));
    };
    if (!decoder && Number(req.headers['content-length']) > limit) {
      fail(createError(413, 'request entity too large'));
      return;
    }
    stream.on('data', onData);
    stream.once('end', onEnd);
    stream.once('error', onError);
    req.once('error', onError);
    req.once('close', onClose);
  });
}
