import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readEpochFile } from '../src/store/epoch-file.js';
import { readManifest } from '../src/tree/manifest.js';
import { type AgentProc, startAgentProc, startWebProc, writeTokenFile } from './cluster.js';
import type { EtcdCluster } from './etcd.js';
import type { NetLinks } from './netns.js';
import { type CliProcess, type RunOptions, runCli } from './proc.js';
import { freePort } from './server.js';
import { type TempStore, tempStore } from './store.js';
import { waitFor } from './wait.js';

export interface FleetCoordinatorProc extends AgentProc {
  store: TempStore;
  args: string[];
}

export interface FleetHostProc {
  id: string;
  store: TempStore;
  agent: CliProcess;
  statusUrl: string;
  web: { proc: CliProcess; url: string; port: number } | null;
  status(): Promise<HostStatusBody>;
  /** Stop the host agent (SIGSTOP: it holds its lease no longer, as if cut off) and resume it. */
  pause(): void;
  resume(): void;
  /** Kill -9 the host agent and start it again, with other flags when given. */
  restartAgent(args?: string[]): Promise<void>;
  stop(): Promise<void>;
}

export interface HostStatusBody {
  ready: boolean;
  epoch: number;
  mounted: 'a' | 'b' | null;
  fleetEpoch: number | null;
  phase: string;
  lastError: string | null;
  lastPull: {
    received: number;
    bytes: number;
    files: number;
    full: boolean;
    fromPeers: number;
    fromCoordinator: number;
    peerFailures: number;
    peerBusy: number;
    seed: boolean;
    snapshot: string;
  } | null;
  peers: { url: string | null; active: number; pulls: number; bytes: number; busy: number; cut: number };
}

/** A fleet test: one etcd cluster, a coordinator beside master and hosts, each with its own store and web server. */
export class TestFleet {
  readonly cluster: EtcdCluster;
  readonly name: string;
  readonly tokenFile: string;
  readonly token: string;
  readonly hosts: FleetHostProc[] = [];
  coordinator: FleetCoordinatorProc | undefined;
  readonly #stores: TempStore[] = [];
  /** Each process on its own shaped link (node 0 the coordinator, then the hosts in turn); loopback without. */
  readonly #net: NetLinks | undefined;
  #nextNode = 1;

  private constructor(
    cluster: EtcdCluster,
    name: string,
    tokenFile: string,
    token: string,
    tokenStore: TempStore,
    net: NetLinks | undefined,
  ) {
    this.#net = net;
    this.cluster = cluster;
    this.name = name;
    this.tokenFile = tokenFile;
    this.token = token;
    this.#stores.push(tokenStore);
  }

  /** `net`: run the coordinator and each host in its own network namespace (the cluster on its bridge). */
  static async create(cluster: EtcdCluster, name: string, net?: NetLinks): Promise<TestFleet> {
    const tokenStore = await tempStore('mirrorswap-fleet-token-');
    const { file, token } = await writeTokenFile(tokenStore);
    return new TestFleet(cluster, name, file, token, tokenStore, net);
  }

  /** Start a coordinator (a second one on its own store, when one runs already). */
  async startCoordinator(extra: string[] = [], store?: TempStore, run: RunOptions = {}): Promise<FleetCoordinatorProc> {
    const own = store ?? (await tempStore('mirrorswap-fleet-coord-'));
    if (!store) this.#stores.push(own);
    const port = await freePort();
    const args = [
      '--listen',
      `${this.#net?.ip(0) ?? '127.0.0.1'}:${port}`,
      '--etcd',
      this.cluster.endpoints,
      '--fleet',
      this.name,
      '--fleet-token-file',
      this.tokenFile,
      '--fleet-lease',
      '2s',
      '--etcd-timeout',
      '1s',
      '--prepare-timeout',
      '5s',
      '--drain-timeout',
      '6s',
      ...extra,
    ];
    const proc = await startAgentProc(
      own,
      this.tokenFile,
      this.token,
      args,
      this.#net ? { ...run, through: this.#net.through(0) } : run,
    );
    const coordinator = { ...proc, store: own, args };
    this.coordinator ??= coordinator;
    return coordinator;
  }

  /** Start a host agent and a web server on its store. */
  async addHost(
    id: string,
    opts: { web?: boolean; args?: string[]; startTimeoutMs?: number } = {},
  ): Promise<FleetHostProc> {
    const store = await tempStore(`mirrorswap-fleet-${id}-`);
    this.#stores.push(store);
    let extra = opts.args ?? [];
    const node = this.#net ? this.#nextNode++ : 0;
    const through = this.#net?.through(node);
    const start = () =>
      runCli(
        [
          'host',
          '--store',
          store.root,
          '--etcd',
          this.cluster.endpoints,
          '--fleet',
          this.name,
          '--token-file',
          this.tokenFile,
          '--host-id',
          id,
          '--listen',
          `${this.#net?.ip(node) ?? '127.0.0.1'}:0`,
          '--fleet-lease',
          '2s',
          '--etcd-timeout',
          '1s',
          '--server-ttl',
          '1500ms',
          '--drain-timeout',
          '6s',
          '--peer-timeout',
          '1s',
          ...extra,
        ],
        {},
        through === undefined ? {} : { through },
      );
    let agent = start();
    // a host that does not start in time is killed, as listeningUrl kills an agent: left running, it would
    // hold the test file open
    const urlOf = async (p: CliProcess) => {
      try {
        return (
          JSON.parse(await p.waitForLine(/"msg":"fleet host agent running"/, opts.startTimeoutMs)) as { url: string }
        ).url;
      } catch (err) {
        await p.kill('SIGKILL');
        throw err;
      }
    };
    let statusUrl = await urlOf(agent);
    const web =
      opts.web === false
        ? null
        : await startWebProc(store, `web-${id}`).catch(async (err: unknown) => {
            await agent.kill('SIGKILL');
            throw err;
          });
    const host: FleetHostProc = {
      id,
      store,
      get agent() {
        return agent;
      },
      get statusUrl() {
        return statusUrl;
      },
      web,
      async status() {
        const res = await fetch(`${statusUrl}/status`, { signal: AbortSignal.timeout(2000) });
        return (await res.json()) as HostStatusBody;
      },
      pause() {
        agent.child.kill('SIGSTOP');
      },
      resume() {
        agent.child.kill('SIGCONT');
      },
      async restartAgent(args?: string[]) {
        await agent.kill('SIGKILL');
        if (args) extra = args;
        agent = start();
        statusUrl = await urlOf(agent);
      },
      async stop() {
        agent.child.kill('SIGCONT');
        await agent.kill();
        await web?.proc.kill();
      },
    };
    this.hosts.push(host);
    return host;
  }

  /** Wait until every given host serves the fleet epoch `epoch`. */
  async converged(epoch: number, hosts: FleetHostProc[] = this.hosts, timeout = 15_000): Promise<void> {
    await waitFor(
      `hosts ${hosts.map((h) => h.id).join(', ')} to serve epoch ${epoch}`,
      async () => {
        for (const h of hosts) {
          const s = await h.status().catch(() => null);
          if (!s || s.epoch !== epoch || !s.ready) return false;
        }
        return true;
      },
      { timeout, step: 20 },
    );
  }

  async stop(): Promise<void> {
    for (const h of this.hosts) await h.stop().catch(() => {});
    await this.coordinator?.proc.kill().catch(() => {});
    for (const s of this.#stores) await s.dispose().catch(() => {});
  }
}

/** The mounted copy of a store, as manifest and content: what two stores must agree on. */
export async function mountedTree(root: string, epochFile: string): Promise<{ epoch: number; tree: string }> {
  const record = await readEpochFile(epochFile);
  assert.ok(record, `${epochFile} is missing`);
  const slotRoot = join(root, record.mounted);
  const manifest = await readManifest(slotRoot);
  const parts: string[] = [];
  for (const e of manifest) {
    const content = e.type === 'file' ? (await readFile(join(slotRoot, e.path))).toString('base64') : (e.target ?? '');
    parts.push(`${e.type} ${e.path} ${e.mode.toString(8)} ${e.type === 'file' ? e.mtimeMs : ''} ${content}`);
  }
  return { epoch: record.epoch, tree: parts.join('\n') };
}
