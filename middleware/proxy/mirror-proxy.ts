import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { Counter } from 'prom-client';
import { MirrorswapError, httpError } from '../../src/core/errors.js';
import { ALL_SLOTS, type SlotMap, type SlotName } from '../../src/store/store-layout.js';
import { Forwarder, type Outcome, type UpstreamTls, endRaw, isUpstreamFailure, whenSocketFree } from './forwarder.js';
import { statusClass } from '../mount/metrics.js';
import { type MountSurface, MountState, type PinNote, mountSurface } from '../mount/mount-state.js';
import { PROXY_DEFAULTS } from '../defaults.js';
import { answerPrivatelyWhenWritten } from '../mount/release-pins.js';
import { type MountOptions, booleanOption, checkHttpUrl, integerOption, resolveMountOptions } from '../options.js';

type Next = (err?: unknown) => void;

export interface ProxyOptions extends MountOptions {
  /** The upstream serving each slot, e.g. `{ a: 'http://10.0.0.5:8081', b: 'http://10.0.0.5:8082' }`. */
  upstreams: SlotMap<string>;
  /** Longest wait for a connection to an upstream, in ms. Default: `PROXY_DEFAULTS.connectTimeout` (5 s). */
  connectTimeout?: number;
  /** Longest silence from an upstream, in ms. Default: `PROXY_DEFAULTS.idleTimeout` (60 s). */
  idleTimeout?: number;
  /** Send the upstream's host as Host instead of the client's. Default false. */
  changeOrigin?: boolean;
  /**
   * How long an upgraded connection (WebSocket) may stay on a slot that is no
   * longer mounted, in ms (0: no limit). Default: `PROXY_DEFAULTS.upgradeDrainTimeout` (20 s), under the agent's
   * default --drain-timeout (30 s), so an open WebSocket never fails a swap.
   */
  upgradeDrainTimeout?: number;
  /**
   * How long a response still running (a server-sent-events stream, a long
   * download) may stay on a slot that is no longer mounted, in ms (0: no limit).
   * Past it the connection is cut and counted. Default: `PROXY_DEFAULTS.responseDrainTimeout` (20 s), as above.
   */
  responseDrainTimeout?: number;
  /** Longest silence from a client sending a request body, in ms. Default: idleTimeout. */
  clientBodyTimeout?: number;
  /**
   * Trust the X-Forwarded-For, -Proto and -Host a client sends (a proxy of yours
   * is in front). Default false: they are replaced, never passed on.
   */
  trustProxy?: boolean;
  /**
   * Request bodies up to this many bytes are read whole before an upstream
   * connection is taken, so a slow sender costs the upstream nothing. Default:
   * `PROXY_DEFAULTS.requestBufferSize` (64 KiB).
   */
  requestBufferSize?: number;
  /**
   * Bodies larger than requestBufferSize stream upstream, at most this many at
   * once from one client address (the last X-Forwarded-For entry with
   * trustProxy); past it, 503. Default: `PROXY_DEFAULTS.streamedBodiesPerClient` (16).
   */
  streamedBodiesPerClient?: number;
  /**
   * Bytes all buffered request bodies may hold in memory at once; past it a
   * new body streams as a large one does (and counts against
   * streamedBodiesPerClient). Default: `PROXY_DEFAULTS.requestBufferTotal` (64 MiB).
   */
  requestBufferTotal?: number;
  /**
   * TLS towards https upstreams: `ca`, the certificate authorities to trust
   * instead of Node's bundled ones (an internal CA). The name checked, and
   * sent as SNI, is the upstream URL's host (none for an IP address), never
   * the client's Host.
   */
  upstreamTls?: UpstreamTls;
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

interface SlotUpstream {
  readonly target: string;
  readonly label: string;
  readonly upgraded: Set<Duplex>;
  /** Responses still running on this slot: cut once it is unmounted and the grace is over. */
  readonly responses: Set<ServerResponse>;
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
  const upstreams: SlotMap<string> = {
    a: checkHttpUrl(options.upstreams.a, 'upstreams.a'),
    b: checkHttpUrl(options.upstreams.b, 'upstreams.b'),
    // a store keeping more releases has more slots: each needs its upstream
    ...Object.fromEntries(
      ALL_SLOTS.slice(2)
        .filter((s) => options.upstreams[s] !== undefined)
        .map((s) => [s, checkHttpUrl(options.upstreams[s], `upstreams.${s}`)]),
    ),
  };
  // every option is checked before anything starts watching or writing
  const upgradeDrainTimeout = integerOption(
    options.upgradeDrainTimeout,
    'upgradeDrainTimeout',
    PROXY_DEFAULTS.upgradeDrainTimeout,
    0,
  );
  const responseDrainTimeout = integerOption(
    options.responseDrainTimeout,
    'responseDrainTimeout',
    PROXY_DEFAULTS.responseDrainTimeout,
    0,
  );
  const fallthrough = booleanOption(options.fallthrough, 'fallthrough', PROXY_DEFAULTS.fallthrough);
  const connectTimeout = integerOption(options.connectTimeout, 'connectTimeout', PROXY_DEFAULTS.connectTimeout, 1);
  const idleTimeout = integerOption(options.idleTimeout, 'idleTimeout', PROXY_DEFAULTS.idleTimeout, 1);
  const clientBodyTimeout = integerOption(options.clientBodyTimeout, 'clientBodyTimeout', idleTimeout, 1);
  const changeOrigin = booleanOption(options.changeOrigin, 'changeOrigin', PROXY_DEFAULTS.changeOrigin);
  const trustProxy = booleanOption(options.trustProxy, 'trustProxy', PROXY_DEFAULTS.trustProxy);
  const requestBufferSize = integerOption(
    options.requestBufferSize,
    'requestBufferSize',
    PROXY_DEFAULTS.requestBufferSize,
    0,
  );
  const streamedBodiesPerClient = integerOption(
    options.streamedBodiesPerClient,
    'streamedBodiesPerClient',
    PROXY_DEFAULTS.streamedBodiesPerClient,
    1,
  );
  const requestBufferTotal = integerOption(
    options.requestBufferTotal,
    'requestBufferTotal',
    PROXY_DEFAULTS.requestBufferTotal,
    0,
  );
  const upstreamTls = options.upstreamTls;
  if (upstreamTls !== undefined && (typeof upstreamTls !== 'object' || upstreamTls === null)) {
    throw new TypeError('upstreamTls option must be an object like { ca: PEM }');
  }
  const timers = new Set<NodeJS.Timeout>();

  const mount = new MountState<SlotUpstream>(mountOpts, 'proxy', {
    makeData: (view) => ({
      target: upstreamOf(upstreams, view.slot),
      label: new URL(upstreamOf(upstreams, view.slot)).host,
      upgraded: new Set(),
      responses: new Set(),
    }),
    onDrop: (old) => {
      // Long-lived exchanges hold the old slot until they end; past their grace they are cut,
      // so no WebSocket or event stream can hold a swap past the agent's drain timeout.
      const cutAfter = (grace: number, kind: 'upgrade' | 'response', live: Set<Duplex> | Set<ServerResponse>) => {
        if (grace === 0 || live.size === 0) return;
        const timer = setTimeout(() => {
          timers.delete(timer);
          for (const exchange of live) {
            cutAfterSwap.inc({ kind });
            exchange.destroy();
          }
        }, grace);
        timer.unref();
        timers.add(timer);
      };
      cutAfter(upgradeDrainTimeout, 'upgrade', old.data.upgraded);
      cutAfter(responseDrainTimeout, 'response', old.data.responses);
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
  const cutAfterSwap = new Counter({
    name: 'mirrorswap_proxy_cut_after_swap_total',
    help: 'Long-lived exchanges cut because they outlived their grace on a slot no longer mounted, by kind (response, upgrade)',
    labelNames: ['kind'],
    registers: [registry],
  });
  const forwarder = new Forwarder({
    connectTimeout,
    idleTimeout,
    clientBodyTimeout,
    changeOrigin,
    trustProxy,
    requestBufferSize,
    streamedBodiesPerClient,
    requestBufferTotal,
    ...(upstreamTls === undefined ? {} : { upstreamTls }),
  });
  /** Upstream failures counted from how each exchange ended, on the slot it was pinned to. */
  const countFailure = (slot: SlotName, outcome: Outcome) => {
    if (isUpstreamFailure(outcome)) upstreamErrors.inc({ slot, kind: outcome });
  };

  const unavailable = (next: Next) => {
    if (fallthrough) next();
    else next(httpError(503, 'no copy is mounted yet'));
  };

  const forward = (req: IncomingMessage, res: ServerResponse, next: Next): void => {
    // a request naming a retained release goes to that slot's upstream (skew protection); named
    // outside the URL, its answer is marked private whatever the upstream says (the forwarder, which
    // writes the field with the upstream's: set on `res` now, it would merge away their repeats)
    const note: PinNote = { privately: false };
    const pin = mount.acquire(res, mount.pinnedFor(req, note));
    if (note.privately) answerPrivatelyWhenWritten(res);
    if (pin === null) {
      unavailable(next);
      return;
    }
    const { view } = pin;
    view.data.responses.add(res);
    forwarder.web(req, res, view.data.target, (outcome) => {
      view.data.responses.delete(res);
      pin.release();
      countFailure(view.slot, outcome);
      requests.inc({
        slot: view.slot,
        upstream: view.data.label,
        // a client that went away is its own class (nginx's 499), never an upstream 5xx
        status_class:
          outcome === 'client_closed' ? 'client_closed' : res.headersSent ? statusClass(res.statusCode) : '5xx',
      });
    });
  };

  // a proxy past its lease re-reads the epoch file before it forwards anything, as mirrorStatic does
  const middleware = function mirrorProxyMiddleware(req: IncomingMessage, res: ServerResponse, next: Next): void {
    mount.admit(
      () => forward(req, res, next),
      () => unavailable(next),
    );
  } as MirrorProxy;

  // the same fixed-bytes refusal the forwarder writes, with its bound on a client that never reads it
  const refuseUpgrade = (socket: Duplex) => endRaw(socket, 503, clientBodyTimeout);

  function upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => {});
    // an upgrade pipelined behind requests is taken once their answers are out, as nginx takes requests in turn
    whenSocketFree(
      socket,
      () =>
        mount.admit(
          () => forwardUpgrade(req, socket, head),
          () => refuseUpgrade(socket),
        ),
      () => {},
    );
  }

  function forwardUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    // pinned outside the URL, an upstream's answer declining the upgrade is marked private (the forwarder)
    const note: PinNote = { privately: false };
    const pin = mount.acquire(socket, mount.pinnedFor(req, note));
    if (pin === null) {
      refuseUpgrade(socket);
      return;
    }
    const { view } = pin;
    view.data.upgraded.add(socket);
    forwarder.ws(
      req,
      socket,
      head,
      view.data.target,
      (outcome) => {
        view.data.upgraded.delete(socket);
        pin.release();
        countFailure(view.slot, outcome);
      },
      note.privately,
    );
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

/** The upstream serving `slot`; a slot without one cannot be mounted (the previous epoch keeps serving). */
function upstreamOf(upstreams: SlotMap<string>, slot: SlotName): string {
  const target = upstreams[slot];
  if (target === undefined) {
    throw new MirrorswapError(
      'SLOT_ROOT',
      `the epoch mounts slot ${slot}, which has no upstream (give upstreams.${slot}); still serving the previous epoch`,
    );
  }
  return target;
}
