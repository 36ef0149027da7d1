import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { SlotName } from '../../src/store/store-layout.js';

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

  constructor(registry: Registry | undefined, inflight: () => Readonly<Record<SlotName, number>>) {
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
        const counts = inflight();
        this.set({ slot: 'a' }, counts.a);
        this.set({ slot: 'b' }, counts.b);
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
  readonly #counts = new Float64Array(10);

  constructor(name: string, help: string, registry: Registry) {
    const counts = this.#counts;
    const reported = new Float64Array(10);
    new Counter({
      name,
      help,
      labelNames: ['slot', 'status_class'],
      registers: [registry],
      collect() {
        for (let i = 0; i < 10; i++) {
          const delta = counts[i] - reported[i];
          if (delta > 0) this.inc({ slot: i < 5 ? 'a' : 'b', status_class: STATUS_CLASSES[i % 5] as string }, delta);
          reported[i] = counts[i];
        }
      },
    });
  }

  inc(slot: SlotName, status: number): void {
    this.#counts[(slot === 'a' ? 0 : 5) + statusClassIndex(status)]++;
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
