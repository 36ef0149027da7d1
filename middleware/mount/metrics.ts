import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { ALL_SLOTS, type SlotMap, type SlotName } from '../../src/store/store-layout.js';

const SLOT_INDEX = Object.fromEntries(ALL_SLOTS.map((s, i) => [s, i])) as Record<SlotName, number>;

export const STATUS_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'] as const;

/** Index into STATUS_CLASSES; anything outside 1xx-5xx is clamped to the nearest class. */
function statusClassIndex(status: number): number {
  return Math.min(Math.max(Math.floor(status / 100), 1), 5) - 1;
}

export function statusClass(status: number): (typeof STATUS_CLASSES)[number] {
  return STATUS_CLASSES[statusClassIndex(status)] as (typeof STATUS_CLASSES)[number];
}

/** Metrics every mirrorswap web server exports, whatever it serves. */
export class ServerMetrics {
  readonly registry: Registry;
  readonly epoch: Gauge;
  readonly inflight: Gauge<'slot'>;
  readonly switchLag: Histogram;
  readonly epochReadErrors: Counter;
  readonly switches: Counter;
  /** Requests that named a release (skew protection), by what came of it. */
  readonly pins: Counter<'result'>;

  constructor(registry: Registry | undefined, inflight: () => Readonly<SlotMap<number>>) {
    this.registry = registry ?? new Registry();
    const registers = [this.registry];
    this.epoch = new Gauge({
      name: 'mirrorswap_server_epoch',
      help: 'Epoch this server serves new requests from (0: none yet)',
      registers,
    });
    this.inflight = new Gauge({
      name: 'mirrorswap_server_inflight_requests',
      help: 'Requests in flight, by the slot they are pinned to',
      labelNames: ['slot'],
      registers,
      collect() {
        for (const [slot, n] of Object.entries(inflight())) this.set({ slot }, n);
      },
    });
    this.switchLag = new Histogram({
      name: 'mirrorswap_server_switch_lag_seconds',
      help: 'Time from the agent publishing an epoch to this server switching to it',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.epochReadErrors = new Counter({
      name: 'mirrorswap_server_epoch_read_errors_total',
      help: 'Failed reads of the epoch file (missing after mount, corrupt, going backwards, unusable root)',
      registers,
    });
    this.switches = new Counter({
      name: 'mirrorswap_server_switches_total',
      help: 'Epoch switches made by this server',
      registers,
    });
    this.pins = new Counter({
      name: 'mirrorswap_server_pinned_requests_total',
      help: 'Requests served from a retained release (result "pinned": named it; "fallback": an asset the mounted release lacks) or that named one not retained ("unknown", "expired": served from the mounted release)',
      labelNames: ['result'],
      registers,
    });
  }
}

/**
 * A counter incremented on the request path. prom-client re-hashes labels on
 * every `inc()`, so the hot path bumps a plain number and the Prometheus
 * counter catches up when it is scraped.
 */
export class HotCounter {
  #count = 0;

  constructor(name: string, help: string, registry: Registry) {
    let reported = 0;
    const self = this;
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        if (self.#count > reported) this.inc(self.#count - reported);
        reported = self.#count;
      },
    });
  }

  inc(): void {
    this.#count++;
  }
}

/** Requests by slot and status class, counted the same way as HotCounter. */
export class RequestCounter {
  readonly #counts = new Float64Array(ALL_SLOTS.length * 5);

  constructor(name: string, help: string, registry: Registry) {
    const counts = this.#counts;
    const reported = new Float64Array(counts.length);
    new Counter({
      name,
      help,
      labelNames: ['slot', 'status_class'],
      registers: [registry],
      collect() {
        for (let i = 0; i < counts.length; i++) {
          const delta = counts[i] - reported[i];
          if (delta > 0)
            this.inc(
              { slot: ALL_SLOTS[Math.floor(i / 5)] as string, status_class: STATUS_CLASSES[i % 5] as string },
              delta,
            );
          reported[i] = counts[i];
        }
      },
    });
  }

  inc(slot: SlotName, status: number): void {
    this.#counts[SLOT_INDEX[slot] * 5 + statusClassIndex(status)]++;
  }
}

/** The handler users mount at `/metrics`. */
export function metricsHandler(registry: Registry) {
  return function metrics(_req: unknown, res: import('node:http').ServerResponse): void {
    registry.metrics().then(
      (body) => {
        res.statusCode = 200;
        res.setHeader('Content-Type', registry.contentType);
        res.end(body);
      },
      () => {
        res.statusCode = 500;
        res.end('metrics collection failed\n');
      },
    );
  };
}
