import { createServer } from 'node:http';
import { Registry } from 'prom-client';
import { metricsHandler } from '../../../middleware/mount/metrics.js';
import { AGENT_DEFAULTS, AGENT_MINIMUMS } from '../../agent/agent-defaults.js';
import { registerHostMetrics } from '../../fleet/host/host-metrics.js';
import { HostAgent } from '../../fleet/host/host-agent.js';
import { SERVER_ID_PATTERN } from '../../store/heartbeat.js';
import { closeServer, listen } from '../../server/listen.js';
import { SWAP_FLAGS } from '../agent-flags.js';
import { STORE_FLAGS, layoutFrom, makeLogger, readToken } from '../common.js';
import { stopSignal } from '../run-until-signal.js';
import { ETCD_FLAGS, etcdFrom, leaseSecondsFrom } from '../fleet-flags.js';
import {
  type FlagSpecs,
  type FlagValues,
  UsageError,
  durationFlag,
  formatDuration,
  integerFlag,
  listenFlag,
  stringFlag,
} from '../flags.js';
import { HOST_DEFAULTS } from '../../fleet/fleet-defaults.js';
import { MAX_KEEP } from '../../store/store-layout.js';

export const HOST_FLAGS: FlagSpecs = {
  ...STORE_FLAGS,
  ...ETCD_FLAGS,
  'token-file': {
    type: 'string',
    env: 'MIRRORSWAP_FLEET_TOKEN_FILE',
    arg: 'FILE',
    help: "file holding the fleet token (the coordinator's --fleet-token-file); required",
  },
  'host-id': {
    type: 'string',
    env: 'MIRRORSWAP_HOST_ID',
    arg: 'ID',
    help: "this host's name in the fleet (default: the hostname)",
  },
  listen: {
    type: 'string',
    env: 'MIRRORSWAP_HOST_LISTEN',
    arg: 'HOST:PORT',
    help: 'serve /healthz, /readyz, /status (JSON) and /metrics here',
  },
  advertise: {
    type: 'string',
    env: 'MIRRORSWAP_ADVERTISE',
    arg: 'URL',
    help: 'where peers reach this host agent to pull files of what it holds (default: http://<--listen>)',
  },
  'peer-serve': {
    type: 'string',
    env: 'MIRRORSWAP_PEER_SERVE',
    default: String(HOST_DEFAULTS.peerServe),
    arg: 'N',
    help: 'peer pulls this host serves at once, more are answered 503 (0: serve none; needs --listen)',
  },
  'peer-timeout': {
    type: 'string',
    env: 'MIRRORSWAP_PEER_TIMEOUT',
    default: formatDuration(HOST_DEFAULTS.peerTimeoutMs),
    arg: 'DURATION',
    help: "a peer's answer: its head within this and no silence longer, or another peer is asked",
  },
  'peer-wait': {
    type: 'string',
    env: 'MIRRORSWAP_PEER_WAIT',
    default: formatDuration(HOST_DEFAULTS.peerWaitMs),
    arg: 'DURATION',
    help: 'longest a pull waits for a peer to hold the snapshot before it pulls from the coordinator',
  },
  // the agent's own: on a host they mean the same for the host's servers
  'drain-timeout': SWAP_FLAGS['drain-timeout'] as FlagSpecs[string],
  keep: {
    ...(SWAP_FLAGS.keep as FlagSpecs[string]),
    help: `copies this host keeps (2 to ${MAX_KEEP}): above 2, the releases the fleet committed before stay servable to requests pinned to them, up to K-2 besides the mounted one (one copy stays free for the next pull)`,
  },
  'skew-max-age': SWAP_FLAGS['skew-max-age'] as FlagSpecs[string],
  'server-ttl': SWAP_FLAGS['server-ttl'] as FlagSpecs[string],
  fsync: {
    type: 'boolean',
    env: 'MIRRORSWAP_FSYNC',
    default: AGENT_DEFAULTS.durable,
    help: 'make pulled content durable before saying it is prepared (--no-fsync: faster, not crash-safe)',
  },
};

/** `mirrorswap host`: the host agent of one web host in a fleet, until SIGTERM. */
export async function hostCommand(values: FlagValues): Promise<number> {
  const layout = layoutFrom(values);
  const reached = await etcdFrom(values);
  if (!reached) throw new UsageError('--etcd URL[,URL…] is required: a host agent follows its fleet through etcd');
  const leaseTtlSeconds = leaseSecondsFrom(values);
  const serverTtlMs = durationFlag(values, 'server-ttl', { min: AGENT_MINIMUMS.serverTtlMs });
  const drainTimeoutMs = durationFlag(values, 'drain-timeout', { min: AGENT_MINIMUMS.drainTimeoutMs });
  const tokenFile = stringFlag(values, 'token-file');
  if (!tokenFile)
    throw new UsageError('--token-file is required: the coordinator gives content only for the fleet token');
  const token = await readToken(tokenFile);
  const hostId = stringFlag(values, 'host-id');
  if (hostId !== undefined && !SERVER_ID_PATTERN.test(hostId))
    throw new UsageError(`--host-id ${hostId}: letters, digits, '.', '_' and '-' only (at most 128)`);
  const peerServe = integerFlag(values, 'peer-serve', 0, 1024) ?? HOST_DEFAULTS.peerServe;
  const keep = integerFlag(values, 'keep', 2, MAX_KEEP);
  const skewMaxAgeMs = durationFlag(values, 'skew-max-age');
  const peerTimeoutMs = durationFlag(values, 'peer-timeout', { min: 100 }) ?? HOST_DEFAULTS.peerTimeoutMs;
  const peerWaitMs = durationFlag(values, 'peer-wait', { min: 0 }) ?? HOST_DEFAULTS.peerWaitMs;
  let advertise = stringFlag(values, 'advertise') ?? null;
  if (advertise !== null) {
    let parsed: URL | null = null;
    try {
      parsed = new URL(advertise);
    } catch {}
    if (!parsed || (parsed.protocol !== 'http:' && parsed.protocol !== 'https:'))
      throw new UsageError(`--advertise ${advertise}: an http:// or https:// URL`);
    advertise = advertise.replace(/\/+$/, '');
  }
  const log = makeLogger();
  let server: ReturnType<typeof createServer> | null = null;
  let url: string | null = null;
  let agent: HostAgent | null = null;
  if (stringFlag(values, 'listen') !== undefined) {
    const { host, port } = listenFlag(values, 'listen');
    const registry = new Registry();
    registerHostMetrics(registry, () => agent?.status() ?? null);
    // a failed collection answers 500, never an unhandled rejection that would end the host agent
    const serveMetrics = metricsHandler(registry);
    server = createServer((req, res) => {
      const status = agent?.status() ?? null;
      const json = (code: number, body: unknown) => {
        res.writeHead(code, { 'content-type': 'application/json', 'cache-control': 'no-store' });
        res.end(`${JSON.stringify(body)}\n`);
      };
      if (req.url?.startsWith('/v1/fleet/')) {
        if (agent?.servePeer(req, res)) return;
        json(agent ? 404 : 503, { error: agent ? 'NOT_FOUND' : 'PEER_BUSY' });
      } else if (req.url === '/healthz') json(200, { ok: true });
      else if (req.url === '/readyz')
        json(status?.ready ? 200 : 503, {
          ready: status?.ready ?? false,
          epoch: status?.epoch ?? 0,
          fleetEpoch: status?.fleetEpoch ?? null,
        });
      else if (req.url === '/status') json(status ? 200 : 503, status ?? { error: 'starting' });
      else if (req.url === '/metrics') serveMetrics(req, res);
      else json(404, { error: 'NOT_FOUND' });
    });
    url = await listen(server, host, port);
    // peers reach it where it listens, unless that is no single address they can reach
    if (advertise === null && !['0.0.0.0', '::', ''].includes(host)) advertise = url;
    if (advertise === null && peerServe > 0)
      log.warn({ listen: url }, 'serving no peers: --listen names no single address peers can reach; give --advertise');
  } else if (advertise !== null) {
    throw new UsageError('--advertise needs --listen: peers pull from the host agent where it listens');
  }
  // a start that fails (another agent holds the store, say) must not leave a listener answering
  // /healthz 200 for an agent that is not running: everything opened so far is closed, and the error stands
  const started = HostAgent.start({
    etcd: reached.etcd,
    fleet: reached.fleet,
    hostId,
    token,
    layout,
    log,
    url,
    leaseTtlSeconds,
    serverTtlMs,
    drainTimeoutMs,
    durable: values.fsync !== false,
    advertise,
    peerServe,
    peerTimeoutMs,
    peerWaitMs,
    ...(keep !== undefined ? { keep } : {}),
    ...(skewMaxAgeMs !== undefined ? { skewMaxAgeMs } : {}),
  });
  try {
    agent = await started;
  } catch (err) {
    if (server) await closeServer(server, 'all');
    reached.etcd.close();
    throw err;
  }
  log.info({ host: agent.host, fleet: reached.fleet, store: layout.root, url }, 'fleet host agent running');
  log.info({ signal: await stopSignal() }, 'shutting down');
  if (server) await closeServer(server, 'all');
  await agent.close();
  reached.etcd.close();
  return 0;
}
