import { Counter, Gauge, type Registry } from 'prom-client';
import type { FleetStatus } from './fleet-status.js';

/**
 * The coordinator's view of its fleet, read from etcd at each scrape: what
 * the alerts on a lagging or evicted host and the dashboard's fleet panels
 * use. Returns the eviction counter, which the coordinator increments.
 */
export function registerCoordinatorMetrics(
  registry: Registry,
  status: () => Promise<FleetStatus | null>,
): Counter<'fleet' | 'host'> {
  const registers = [registry];
  // one read of etcd per scrape, shared by the gauges below
  let pending: Promise<FleetStatus | null> | null = null;
  const read = () => {
    pending ??= status()
      .catch(() => null)
      .finally(() => setTimeout(() => (pending = null), 100).unref());
    return pending;
  };
  new Gauge({
    name: 'mirrorswap_fleet_elected',
    help: 'Whether this agent is the fleet coordinator etcd elected (1) or a standby one (0)',
    labelNames: ['fleet'],
    registers,
    async collect() {
      const s = await read();
      if (s) this.set({ fleet: s.fleet }, s.coordinator.elected ? 1 : 0);
    },
  });
  // a count that only grows while the process lives: a counter, read from the coordinator's own tally
  new Counter({
    name: 'mirrorswap_fleet_sent_bytes_total',
    help: 'Bytes this coordinator sent hosts since it started: manifest answers (kind=manifests) and files (kind=files)',
    labelNames: ['fleet', 'kind'],
    registers,
    async collect() {
      const s = await read();
      if (!s) return;
      this.reset();
      this.inc({ fleet: s.fleet, kind: 'manifests' }, s.sent.manifests);
      this.inc({ fleet: s.fleet, kind: 'files' }, s.sent.files);
    },
  });
  new Gauge({
    name: 'mirrorswap_fleet_epoch',
    help: "The fleet's committed epoch",
    labelNames: ['fleet'],
    registers,
    async collect() {
      const s = await read();
      if (s?.epoch) this.set({ fleet: s.fleet }, s.epoch.epoch);
    },
  });
  new Gauge({
    name: 'mirrorswap_fleet_hosts',
    help: 'Live fleet hosts (their etcd lease holds)',
    labelNames: ['fleet'],
    registers,
    async collect() {
      const s = await read();
      if (s) this.set({ fleet: s.fleet }, s.hosts.length);
    },
  });
  const perHost = (name: string, help: string, value: (h: FleetStatus['hosts'][number]) => number) =>
    new Gauge({
      name,
      help,
      labelNames: ['fleet', 'host'],
      registers,
      async collect() {
        this.reset();
        const s = await read();
        for (const h of s?.hosts ?? []) this.set({ fleet: s?.fleet ?? '', host: h.host }, value(h));
      },
    });
  perHost('mirrorswap_fleet_host_epoch', 'Epoch each live host serves', (h) => h.epoch);
  perHost('mirrorswap_fleet_host_lag', "Epochs each live host is behind the fleet's committed one", (h) => h.lag);
  new Gauge({
    name: 'mirrorswap_fleet_host_ready',
    help: "1 when the host serves the fleet's committed epoch; 0 when it does not, or its lease is gone",
    labelNames: ['fleet', 'host'],
    registers,
    async collect() {
      this.reset();
      const s = await read();
      if (!s) return;
      for (const h of s.hosts) this.set({ fleet: s.fleet, host: h.host }, h.ready ? 1 : 0);
      for (const g of s.gone) this.set({ fleet: s.fleet, host: g.host }, 0);
    },
  });
  new Gauge({
    name: 'mirrorswap_fleet_host_gone',
    help: 'Hosts that were fleet members and whose lease is gone: out of the fleet and out of rotation',
    labelNames: ['fleet', 'host'],
    registers,
    async collect() {
      this.reset();
      const s = await read();
      for (const g of s?.gone ?? []) this.set({ fleet: s?.fleet ?? '', host: g.host }, 1);
    },
  });
  return new Counter({
    name: 'mirrorswap_fleet_evictions_total',
    help: 'Hosts evicted from a swap because they did not prepare it in time (--straggler evict)',
    labelNames: ['fleet', 'host'],
    registers,
  });
}
