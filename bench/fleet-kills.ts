/**
 * A host killed in every swap: a one-member etcd, a coordinator with
 * `--straggler evict --min-members H-1`, and H host agents (`--hosts`,
 * default 24), each with one `mirrorswap serve`, all separate processes on
 * loopback. In each of `--swaps` swaps one host (each in turn) has its
 * host agent killed (SIGKILL) as soon as the swap's proposal is in etcd,
 * mid-prepare; the swap then commits without it or aborts. Counted: swaps
 * committed, and every answer of the killed host's web server to /readyz
 * from the commit until its host agent, restarted, has caught up: a host
 * that missed a commit must never say ready at the epoch it missed.
 *
 *   node dist/bench/fleet-kills.js [--hosts 24 --swaps 20]
 */
import { EtcdGateway } from '../src/fleet/etcd.js';
import { type SwapProposal, fleetKeys, parseJson } from '../src/fleet/fleet-keys.js';
import type { SwapRecord } from '../src/agent/agent.js';
import { startEtcdCluster } from '../testkit/etcd.js';
import { type FleetHostProc, TestFleet } from '../testkit/fleet.js';
import { waitFor } from '../testkit/wait.js';
import { flag, machine } from './lib.js';

const HOSTS = flag('hosts', 24);
const SWAPS = flag('swaps', 20);

interface Readyz {
  status: number;
  epoch: number;
}

async function readyz(host: FleetHostProc): Promise<Readyz> {
  const res = await fetch(`${host.web?.url}/readyz`, { signal: AbortSignal.timeout(2000) });
  const body = (await res.json().catch(() => ({}))) as { epoch?: number };
  return { status: res.status, epoch: body.epoch ?? 0 };
}

async function main(): Promise<void> {
  console.log(`# A host killed mid-prepare in every swap: ${machine()}`);
  const cluster = await startEtcdCluster(1);
  const etcd = new EtcdGateway({ endpoints: cluster.endpoints.split(',') });
  const fleet = await TestFleet.create(cluster, 'kills');
  try {
    const coordinator = await fleet.startCoordinator([
      '--straggler',
      'evict',
      '--min-members',
      String(HOSTS - 1),
      '--prepare-timeout',
      '30s',
    ]);
    const hosts: FleetHostProc[] = [];
    for (let i = 1; i <= HOSTS; i++) hosts.push(await fleet.addHost(`k${i}`));
    const put = async (v: number) => {
      const res = await coordinator.api('PUT', '/v1/files/v.txt', `version ${v}\n`);
      if (res.status !== 201) throw new Error(`put: ${res.status}`);
    };
    // two swaps fill both copies of every host
    for (const v of [1, 2]) {
      await put(v);
      const res = await coordinator.api<SwapRecord>('POST', '/v1/sync?wait=1');
      if (res.status !== 200) throw new Error(`fill: ${JSON.stringify(res.body)}`);
      await fleet.converged(res.body.epoch, hosts, 120_000);
    }
    let committed = 0;
    let readyAtMissed = 0;
    let looked = 0;
    const failures: string[] = [];
    const catchUps: number[] = [];
    for (let s = 0; s < SWAPS; s++) {
      const victim = hosts[s % HOSTS] as FleetHostProc;
      const before = parseJson<SwapProposal>((await etcd.get(fleetKeys(fleet.name).swap))?.value)?.snapshot ?? null;
      await put(3 + s);
      const swap = coordinator.api<SwapRecord>('POST', '/v1/sync?wait=1');
      await waitFor(
        'the proposal',
        async () => {
          const p = parseJson<SwapProposal>((await etcd.get(fleetKeys(fleet.name).swap))?.value);
          return p !== null && p.snapshot !== before;
        },
        { timeout: 30_000, step: 2 },
      );
      await victim.agent.kill('SIGKILL');
      const res = await swap;
      if (res.status === 200 && res.body.result === 'ok') committed++;
      else failures.push(`swap ${s}: ${res.status} ${JSON.stringify(res.body).slice(0, 300)}`);
      const epoch = res.body.epoch;
      // from the commit until it has caught up, the killed host's web server never says ready below it
      const restarted = victim.restartAgent();
      const t = Date.now();
      for (;;) {
        const r = await readyz(victim).catch(() => ({ status: 0, epoch: 0 }));
        looked++;
        if (r.status === 200 && r.epoch < epoch) readyAtMissed++;
        if (r.status === 200 && r.epoch >= epoch) break;
        if (Date.now() - t > 60_000) {
          failures.push(`swap ${s}: ${victim.id} not ready at epoch ${epoch} 60 s after the commit`);
          break;
        }
        await new Promise((r2) => setTimeout(r2, 20));
      }
      await restarted;
      catchUps.push(Date.now() - t);
      await fleet.converged(epoch, hosts, 60_000);
    }
    catchUps.sort((a, b) => a - b);
    console.log(
      `\n${HOSTS} hosts, ${SWAPS} swaps, one host killed mid-prepare in each (--straggler evict --min-members ${HOSTS - 1}):`,
    );
    console.log(`- swaps committed: **${committed} of ${SWAPS}** (${((100 * committed) / SWAPS).toFixed(1)}%)`);
    console.log(
      `- the killed host's web server, asked /readyz ${looked} times between the commit and its catching up: ready at a missed epoch **${readyAtMissed}** times`,
    );
    console.log(
      `- commit to the killed host serving the new epoch again (restarted at once): p50 ${catchUps[Math.floor(catchUps.length / 2)]} ms, max ${catchUps[catchUps.length - 1]} ms`,
    );
    for (const f of failures) console.log(`- ${f}`);
    if (committed < Math.ceil(0.99 * SWAPS) || readyAtMissed > 0) process.exitCode = 1;
  } finally {
    await fleet.stop();
    etcd.close();
    await cluster.stop();
  }
}

await main();
