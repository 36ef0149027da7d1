import { FLEET_DEFAULTS } from './fleet-defaults.js';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { MirrorswapError } from '../core/errors.js';

/**
 * What fleet mode needs of etcd, and no more: keys, leases, one transaction
 * shape and watches. Behind this interface so the client can change; the one
 * here speaks etcd's own HTTP/JSON gateway (`/v3/...`, etcd ≥ 3.4) through
 * node:http, with no dependency. Why not the `etcd3` package: see
 * docs/FLEET.md ("etcd from Node").
 */
export interface Etcd {
  get(key: string): Promise<KeyValue | null>;
  /** Every key under `prefix`, and the revision the read was at. */
  getPrefix(prefix: string): Promise<{ kvs: KeyValue[]; revision: number }>;
  put(key: string, value: string, lease?: string): Promise<number>;
  delete(key: string): Promise<void>;
  deletePrefix(prefix: string): Promise<void>;
  /** One transaction: `then` if every compare holds, else `otherwise`. */
  txn(compares: Compare[], then: Op[], otherwise?: Op[]): Promise<{ succeeded: boolean; revision: number }>;
  grantLease(ttlSeconds: number): Promise<string>;
  /** Renew a lease once; false when etcd says it no longer exists (expired or revoked). */
  keepAlive(lease: string): Promise<boolean>;
  revoke(lease: string): Promise<void>;
  /**
   * Watch a key (or a prefix) from `fromRevision`: `onEvents` for each batch,
   * in order. Resumes after a lost stream or a member's death from the last
   * revision seen; a compacted start calls `onCompacted` (the caller re-reads).
   */
  watch(key: string, opts: WatchOptions): Watch;
  /** Close connections and watches. */
  close(): void;
}

export interface KeyValue {
  key: string;
  value: string;
  createRevision: number;
  modRevision: number;
  lease: string;
}

export type Compare =
  | { key: string; target: 'create'; result: 'equal'; createRevision: number }
  | { key: string; target: 'mod'; result: 'equal'; modRevision: number }
  | { key: string; target: 'value'; result: 'equal'; value: string }
  | { key: string; target: 'lease'; result: 'equal'; lease: string };

export type Op = { put: { key: string; value: string; lease?: string } } | { delete: { key: string } };

export interface WatchEvent {
  type: 'put' | 'delete';
  kv: KeyValue;
}

export interface WatchOptions {
  prefix?: boolean;
  fromRevision?: number;
  onEvents: (events: WatchEvent[], revision: number) => void;
  onCompacted?: (compactRevision: number) => void;
  onError?: (err: Error) => void;
}

export interface Watch {
  close(): void;
}

export interface EtcdOptions {
  endpoints: string[];
  /** Deadline of every unary call, in ms. */
  timeoutMs?: number;
  username?: string;
  password?: string;
  /** PEM files for https endpoints. */
  caFile?: string;
  certFile?: string;
  keyFile?: string;
}

/** A failure to reach etcd (every endpoint tried) or an error it answered. */
export class EtcdError extends MirrorswapError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ETCD', message, options);
  }
}

const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');
const unb64 = (s: string | undefined) => (s ? Buffer.from(s, 'base64').toString('utf8') : '');

/** The key just after every key that starts with `prefix`: etcd's range end for a prefix. */
export function prefixEnd(prefix: string): string {
  const bytes = Buffer.from(prefix, 'utf8');
  for (let i = bytes.length - 1; i >= 0; i--) {
    if (bytes[i] < 0xff) {
      const end = bytes.subarray(0, i + 1);
      end[i]++;
      return end.toString('base64');
    }
  }
  return b64('\0');
}

interface RawKv {
  key?: string;
  value?: string;
  create_revision?: string;
  mod_revision?: string;
  lease?: string;
}

function toKv(raw: RawKv): KeyValue {
  return {
    key: unb64(raw.key),
    value: unb64(raw.value),
    createRevision: Number(raw.create_revision ?? 0),
    modRevision: Number(raw.mod_revision ?? 0),
    lease: raw.lease ?? '0',
  };
}

function rawOp(op: Op): object {
  if ('put' in op) {
    return {
      request_put: { key: b64(op.put.key), value: b64(op.put.value), ...(op.put.lease ? { lease: op.put.lease } : {}) },
    };
  }
  return { request_delete_range: { key: b64(op.delete.key) } };
}

function rawCompare(c: Compare): object {
  const base = { key: b64(c.key), result: 'EQUAL' };
  if (c.target === 'create') return { ...base, target: 'CREATE', create_revision: String(c.createRevision) };
  if (c.target === 'mod') return { ...base, target: 'MOD', mod_revision: String(c.modRevision) };
  if (c.target === 'lease') return { ...base, target: 'LEASE', lease: c.lease };
  return { ...base, target: 'VALUE', value: b64(c.value) };
}

/** The gateway client. Every unary call has a deadline per member and tries every member once before it fails. */
export class EtcdGateway implements Etcd {
  readonly #endpoints: URL[];
  readonly #timeoutMs: number;
  readonly #tls: https.AgentOptions;
  readonly #agents: { http: http.Agent; https: https.Agent };
  readonly #credentials: { name: string; password: string } | undefined;
  #token: string | undefined;
  /** The endpoint that answered last: tried first next time. */
  #current = 0;
  #closed = false;

  constructor(opts: EtcdOptions) {
    if (opts.endpoints.length === 0) throw new EtcdError('no etcd endpoint given (--etcd URL[,URL…])');
    this.#endpoints = opts.endpoints.map((e) => {
      let url: URL;
      try {
        url = new URL(e);
      } catch {
        throw new EtcdError(`etcd endpoint ${JSON.stringify(e)} is not a URL; give http://HOST:PORT or https://…`);
      }
      if (url.protocol !== 'http:' && url.protocol !== 'https:')
        throw new EtcdError(`etcd endpoint ${e} must be http:// or https://`);
      return url;
    });
    this.#timeoutMs = opts.timeoutMs ?? FLEET_DEFAULTS.etcdTimeoutMs;
    this.#tls = {
      ...(opts.caFile ? { ca: readFileSync(opts.caFile) } : {}),
      ...(opts.certFile ? { cert: readFileSync(opts.certFile) } : {}),
      ...(opts.keyFile ? { key: readFileSync(opts.keyFile) } : {}),
    };
    this.#agents = {
      http: new http.Agent({ keepAlive: true }),
      https: new https.Agent({ keepAlive: true, ...this.#tls }),
    };
    this.#credentials =
      opts.username !== undefined ? { name: opts.username, password: opts.password ?? '' } : undefined;
  }

  close(): void {
    this.#closed = true;
    this.#agents.http.destroy();
    this.#agents.https.destroy();
  }

  async get(key: string): Promise<KeyValue | null> {
    const res = (await this.#call('/v3/kv/range', { key: b64(key) })) as { kvs?: RawKv[] };
    return res.kvs?.[0] ? toKv(res.kvs[0]) : null;
  }

  async getPrefix(prefix: string): Promise<{ kvs: KeyValue[]; revision: number }> {
    const res = (await this.#call('/v3/kv/range', { key: b64(prefix), range_end: prefixEnd(prefix) })) as {
      kvs?: RawKv[];
      header?: { revision?: string };
    };
    return { kvs: (res.kvs ?? []).map(toKv), revision: Number(res.header?.revision ?? 0) };
  }

  async put(key: string, value: string, lease?: string): Promise<number> {
    const res = (await this.#call('/v3/kv/put', { key: b64(key), value: b64(value), ...(lease ? { lease } : {}) })) as {
      header?: { revision?: string };
    };
    return Number(res.header?.revision ?? 0);
  }

  async delete(key: string): Promise<void> {
    await this.#call('/v3/kv/deleterange', { key: b64(key) });
  }

  async deletePrefix(prefix: string): Promise<void> {
    await this.#call('/v3/kv/deleterange', { key: b64(prefix), range_end: prefixEnd(prefix) });
  }

  async txn(compares: Compare[], then: Op[], otherwise: Op[] = []): Promise<{ succeeded: boolean; revision: number }> {
    const res = (await this.#call('/v3/kv/txn', {
      compare: compares.map(rawCompare),
      success: then.map(rawOp),
      failure: otherwise.map(rawOp),
    })) as { succeeded?: boolean; header?: { revision?: string } };
    return { succeeded: res.succeeded === true, revision: Number(res.header?.revision ?? 0) };
  }

  async grantLease(ttlSeconds: number): Promise<string> {
    const res = (await this.#call('/v3/lease/grant', { TTL: String(Math.max(2, Math.ceil(ttlSeconds))) })) as {
      ID?: string;
      error?: string;
    };
    if (!res.ID) throw new EtcdError(`etcd granted no lease: ${res.error ?? JSON.stringify(res)}`);
    return res.ID;
  }

  async keepAlive(lease: string): Promise<boolean> {
    // The gateway's keepalive is a stream; one request, one answer, closed.
    const res = (await this.#call('/v3/lease/keepalive', { ID: lease })) as { result?: { TTL?: string } };
    return Number(res.result?.TTL ?? 0) > 0;
  }

  async revoke(lease: string): Promise<void> {
    try {
      await this.#call('/v3/lease/revoke', { ID: lease });
    } catch (err) {
      // a lease already gone is revoked
      if (!/not found/i.test((err as Error).message)) throw err;
    }
  }

  watch(key: string, opts: WatchOptions): Watch {
    let closed = false;
    let request: http.ClientRequest | undefined;
    let next = opts.fromRevision ?? 0;
    let retryTimer: NodeJS.Timeout | undefined;
    // this watch's own member: moving on from a failed one must not move where unary calls start
    let member = this.#current;
    const start = () => {
      if (closed || this.#closed) return;
      const body = JSON.stringify({
        create_request: {
          key: b64(key),
          ...(opts.prefix ? { range_end: prefixEnd(key) } : {}),
          ...(next > 0 ? { start_revision: String(next) } : {}),
        },
      });
      const endpoint = this.#endpoints[member % this.#endpoints.length];
      let buffered = '';
      // A watch that hears nothing is fine; one whose connection died is noticed by the
      // socket's error or end, and by the progress-less deadline below (TCP keep-alive).
      request = this.#request(endpoint, '/v3/watch', body, (res) => {
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          buffered += chunk;
          for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
            const line = buffered.slice(0, nl).trim();
            buffered = buffered.slice(nl + 1);
            if (line) handle(line);
          }
        });
        res.on('end', () => retry(new EtcdError(`etcd watch on ${endpoint.host} ended`)));
        res.on('error', (err) => retry(err));
      });
      request.on('error', (err) => retry(err));
      request.setSocketKeepAlive(true, 1000);
    };
    const handle = (line: string) => {
      let msg: {
        result?: {
          header?: { revision?: string };
          events?: { type?: string; kv?: RawKv }[];
          compact_revision?: string;
          canceled?: boolean;
          cancel_reason?: string;
        };
        error?: { message?: string };
      };
      try {
        msg = JSON.parse(line);
      } catch {
        return;
      }
      if (msg.error) return retry(new EtcdError(`etcd watch: ${msg.error.message}`));
      const r = msg.result;
      if (!r) return;
      const compacted = Number(r.compact_revision ?? 0);
      if (compacted > 0) {
        // The history asked for is gone: the caller re-reads the state; watching goes on after it.
        next = compacted;
        request?.destroy();
        opts.onCompacted?.(compacted);
        return retry(null);
      }
      if (r.canceled) return retry(new EtcdError(`etcd cancelled the watch: ${r.cancel_reason ?? 'no reason given'}`));
      const revision = Number(r.header?.revision ?? 0);
      if (r.events?.length) {
        const events = r.events.map((e) => ({
          type: e.type === 'DELETE' ? ('delete' as const) : ('put' as const),
          kv: toKv(e.kv ?? {}),
        }));
        next = Math.max(next, ...events.map((e) => e.kv.modRevision + 1));
        opts.onEvents(events, revision);
      }
    };
    const retry = (err: Error | null) => {
      if (closed || this.#closed || retryTimer) return;
      request?.destroy();
      if (err) {
        opts.onError?.(err);
        member = (member + 1) % this.#endpoints.length;
      }
      retryTimer = setTimeout(
        () => {
          retryTimer = undefined;
          start();
        },
        err ? 200 : 0,
      );
      retryTimer.unref();
    };
    start();
    return {
      close: () => {
        closed = true;
        clearTimeout(retryTimer);
        request?.destroy();
      },
    };
  }

  /**
   * One unary call with a deadline per member, trying every member once, in
   * turn from the last one that answered, before it fails. The starting
   * point is read once: other calls move `#current` as they succeed, and an
   * order recomputed from it mid-loop would try one member twice and skip a
   * healthy one. The error names every member tried and what each answered.
   */
  async #call(path: string, body: object, reauthenticated = false): Promise<unknown> {
    const payload = JSON.stringify(body);
    const errors: string[] = [];
    const start = this.#current;
    for (let i = 0; i < this.#endpoints.length; i++) {
      const index = (start + i) % this.#endpoints.length;
      const endpoint = this.#endpoints[index];
      try {
        const answer = await this.#unary(endpoint, path, payload);
        this.#current = index;
        return answer;
      } catch (err) {
        if (err instanceof EtcdAnswerError) {
          if (err.status === 401 && this.#credentials && !reauthenticated) {
            // the token expired (etcd's simple tokens last minutes): log in again, once
            this.#token = undefined;
            return this.#call(path, body, true);
          }
          // etcd answered: the request itself is wrong (or refused); another member would say the same,
          // unless this one has no leader
          if (!/no leader|leader changed|timed out|unavailable/i.test(err.message)) throw err;
        }
        errors.push(`${endpoint.host}: ${(err as Error).message}`);
      }
    }
    throw new EtcdError(`etcd did not answer ${path} (${errors.join('; ')})`);
  }

  async #unary(endpoint: URL, path: string, payload: string): Promise<unknown> {
    if (this.#credentials && !this.#token && path !== '/v3/auth/authenticate') await this.#authenticate(endpoint);
    return new Promise((resolve, reject) => {
      const req = this.#request(endpoint, path, payload, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: { error?: string; message?: string; code?: number } & Record<string, unknown>;
          try {
            parsed = JSON.parse(text.split('\n')[0] || '{}');
          } catch {
            return reject(new EtcdError(`etcd answered ${path} with ${res.statusCode}: ${text.slice(0, 200)}`));
          }
          if ((res.statusCode ?? 500) >= 400 || parsed.error) {
            return reject(new EtcdAnswerError(res.statusCode ?? 500, String(parsed.message ?? parsed.error ?? text)));
          }
          resolve(parsed);
        });
      });
      req.setTimeout(this.#timeoutMs, () =>
        req.destroy(new EtcdError(`no answer from ${endpoint.host} within ${this.#timeoutMs} ms`)),
      );
      req.on('error', reject);
    });
  }

  async #authenticate(endpoint: URL): Promise<void> {
    const res = (await this.#unary(endpoint, '/v3/auth/authenticate', JSON.stringify(this.#credentials ?? {}))) as {
      token?: string;
    };
    if (!res.token) throw new EtcdError('etcd gave no token for the user and password given');
    this.#token = res.token;
  }

  #request(
    endpoint: URL,
    path: string,
    payload: string,
    onResponse: (res: http.IncomingMessage) => void,
  ): http.ClientRequest {
    const secure = endpoint.protocol === 'https:';
    const lib = secure ? https : http;
    const req = lib.request(
      {
        host: endpoint.hostname,
        port: endpoint.port || (secure ? 443 : 80),
        path: `${endpoint.pathname.replace(/\/$/, '')}${path}`,
        method: 'POST',
        agent: secure ? this.#agents.https : this.#agents.http,
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(payload),
          ...(this.#token ? { authorization: this.#token } : {}),
        },
      },
      onResponse,
    );
    req.end(payload);
    return req;
  }
}

/** An error etcd itself answered (as opposed to not answering). */
class EtcdAnswerError extends EtcdError {
  readonly status: number;
  constructor(status: number, message: string) {
    super(`etcd: ${message}`);
    this.status = status;
  }
}
