import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { Counter } from 'prom-client';
import { httpError } from '../src/errors.js';
import type { SlotName } from '../src/store-layout.js';
import { Forwarder } from './forwarder.js';
import { statusClass } from './metrics.js';
import { type MountSurface, MountState, mountSurface } from './mount-state.js';
import { type MountOptions, bool, positiveInt, resolveMountOptions } from './options.js';

type Next = (err?: unknown) => void;

export interface ProxyOptions extends MountOptions {
  /** The upstream serving each slot, e.g. `{ a: 'http://10.0.0.5:8081', b: 'http://10.0.0.5:8082' }`. */
  upstreams: Record<SlotName, string>;
  /** Longest wait for a connection to an upstream, in ms. Default 5000. */
  connectTimeout?: number;
  /** Longest silence from an upstream, in ms. Default 60000. */
  idleTimeout?: number;
  /** Send the upstream's host as Host instead of the client's. Default false. */
  changeOrigin?: boolean;
  /** How long an upgraded connection (WebSocket) may stay on a slot that is no longer mounted, in ms (0: no limit). Default 30000. */
  upgradeDrainTimeout?: number;
  /** Without a mounted slot: next() (true) or 503 (false). Default true. */
  fallthrough?: boolean;
}

export interface MirrorProxy extends MountSurface {
  (req: IncomingMessage, res: ServerResponse, next: Next): void;
  /** Attach to the server's 'upgrade' event to proxy WebSockets. */
  readonly upgrade: (req: IncomingMessage, socket: Duplex, head: Buffer) => void;
  /** Stop watching and heartbeating, remove the heartbeat file, close idle upstream connections. */
  close(): Promise<void>;
}

function checkUrl(value: unknown, name: string): string {
  try {
    const url = new URL(String(value));
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error('protocol');
    return url.toString();
  } catch {
    throw new TypeError(`${name} option must be an http:// or https:// URL`);
  }
}

interface SlotUpstream {
  readonly target: string;
  readonly label: string;
  readonly upgraded: Set<Duplex>;
}

/**
 * Blue/green at the proxy: forward each request to the upstream bound to the
 * mounted slot, pinned to it for the request's whole life, with the same
 * in-flight accounting and heartbeats as mirrorStatic, so the agent's drain
 * waits for proxied requests and WebSockets too.
 */
export function mirrorProxy(options: ProxyOptions): MirrorProxy {
  const mountOpts = resolveMountOptions(options);
  if (typeof options.upstreams !== 'object' || options.upstreams === null) {
    throw new TypeError('upstreams option must be an object like { a: URL, b: URL }');
  }
  const upstreams = {
    a: checkUrl(options.upstreams.a, 'upstreams.a'),
    b: checkUrl(options.upstreams.b, 'upstreams.b'),
  };
  // every option is checked before anything starts watching or writing
  const upgradeDrainTimeout = positiveInt(options.upgradeDrainTimeout, 'upgradeDrainTimeout', 30_000, 0);
  const fallthrough = bool(options.fallthrough, 'fallthrough', true);
  const connectTimeout = positiveInt(options.connectTimeout, 'connectTimeout', 5000);
  const idleTimeout = positiveInt(options.idleTimeout, 'idleTimeout', 60_000);
  const changeOrigin = bool(options.changeOrigin, 'changeOrigin', false);
  const timers = new Set<NodeJS.Timeout>();

  const mount = new MountState<SlotUpstream>(mountOpts, 'proxy', {
    makeData: (view) => ({
      target: upstreams[view.slot],
      label: new URL(upstreams[view.slot]).host,
      upgraded: new Set(),
    }),
    onDrop: (old) => {
      // upgraded connections hold the old slot until they close; past the limit they are closed
      if (upgradeDrainTimeout === 0 || old.data.upgraded.size === 0) return;
      const timer = setTimeout(() => {
        timers.delete(timer);
        for (const socket of old.data.upgraded) socket.destroy();
      }, upgradeDrainTimeout);
      timer.unref();
      timers.add(timer);
    },
  });
  const registry = mount.metrics.registry;
  const requests = new Counter({
    name: 'mirrorswap_proxy_requests_total',
    help: 'Proxied requests by slot, upstream and status class',
    labelNames: ['slot', 'upstream', 'status_class'],
    registers: [registry],
  });
  const upstreamErrors = new Counter({
    name: 'mirrorswap_proxy_upstream_errors_total',
    help: 'Upstream failures by slot and kind (refused, connect_timeout, idle_timeout, reset, bad_response, other)',
    labelNames: ['slot', 'kind'],
    registers: [registry],
  });
  const slotOf = new WeakMap<IncomingMessage, SlotName>();
  const forwarder = new Forwarder({
    connectTimeout,
    idleTimeout,
    changeOrigin,
    onError: (kind, req) => upstreamErrors.inc({ slot: slotOf.get(req) ?? 'a', kind }),
  });

  const middleware = function mirrorProxyMiddleware(req: IncomingMessage, res: ServerResponse, next: Next): void {
    const pin = mount.acquire(res);
    if (pin === null) {
      if (fallthrough) next();
      else next(httpError(503, 'no copy is mounted yet'));
      return;
    }
    const { view } = pin;
    slotOf.set(req, view.slot);
    forwarder.web(req, res, view.data.target, () => {
      pin.release();
      requests.inc({
        slot: view.slot,
        upstream: view.data.label,
        status_class: res.headersSent ? statusClass(res.statusCode) : '5xx',
      });
    });
  } as MirrorProxy;

  function upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const pin = mount.acquire(socket);
    if (pin === null) {
      socket.end('HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    const { view } = pin;
    slotOf.set(req, view.slot);
    view.data.upgraded.add(socket);
    forwarder.ws(req, socket, head, view.data.target, () => {
      view.data.upgraded.delete(socket);
      pin.release();
    });
  }

  return Object.assign(middleware, {
    ...mountSurface(mount),
    upgrade,
    async close() {
      await mount.close();
      for (const t of timers) clearTimeout(t);
      forwarder.close();
    },
  });
}
