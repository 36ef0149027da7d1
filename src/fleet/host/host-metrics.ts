import { Counter, Gauge, type Registry } from 'prom-client';
import type { HostStatus } from './host-agent.js';

/** The host agent's gauges, read from its status at each scrape. */
export function registerHostMetrics(registry: Registry, status: () => HostStatus | null): void {
  new Gauge({
    name: 'mirrorswap_host_epoch',
    help: 'Epoch this host serves (its own epoch file)',
    registers: [registry],
    collect() {
      this.set(status()?.epoch ?? 0);
    },
  });
  new Gauge({
    name: 'mirrorswap_host_fleet_epoch',
    help: "The fleet's committed epoch, as this host last read it",
    registers: [registry],
    collect() {
      this.set(status()?.fleetEpoch ?? 0);
    },
  });
  new Gauge({
    name: 'mirrorswap_host_ready',
    help: "1 when this host serves the fleet's committed epoch",
    registers: [registry],
    collect() {
      this.set(status()?.ready ? 1 : 0);
    },
  });
  new Gauge({
    name: 'mirrorswap_host_etcd_reachable',
    help: '1 when the last etcd call of this host agent got an answer',
    registers: [registry],
    collect() {
      this.set(status()?.etcdReachable === false ? 0 : 1);
    },
  });
  new Gauge({
    name: 'mirrorswap_host_last_pull_bytes',
    help: 'Bytes the last pull received, from the coordinator and from peers',
    registers: [registry],
    collect() {
      this.set(status()?.lastPull?.received ?? 0);
    },
  });
  new Gauge({
    name: 'mirrorswap_host_last_pull_peer_bytes',
    help: 'Bytes the last pull received from peers (the rest of mirrorswap_host_last_pull_bytes came from the coordinator)',
    registers: [registry],
    collect() {
      this.set(status()?.lastPull?.fromPeers ?? 0);
    },
  });
  new Counter({
    name: 'mirrorswap_host_peer_served_bytes_total',
    help: 'Bytes this host sent to peers pulling from it, since it started',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(status()?.peers.bytes ?? 0);
    },
  });
  new Gauge({
    name: 'mirrorswap_host_peer_pulls',
    help: 'Peer pulls this host serves now',
    registers: [registry],
    collect() {
      this.set(status()?.peers.active ?? 0);
    },
  });
}
