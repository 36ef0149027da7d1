import { readFile } from 'node:fs/promises';
import type { FleetAgentOptions } from '../agent/agent-types.js';
import { FLEET_DEFAULTS } from '../fleet/fleet-defaults.js';
import { EtcdGateway } from '../fleet/etcd.js';
import { FLEET_NAME_PATTERN } from '../fleet/fleet-keys.js';
import { readToken } from './common.js';
import {
  type FlagSpecs,
  type FlagValues,
  UsageError,
  durationFlag,
  formatDuration,
  integerFlag,
  stringFlag,
} from './flags.js';

export { FLEET_DEFAULTS };

/** Reaching etcd: shared by the coordinator (`agent --etcd`) and `host`. */
export const ETCD_FLAGS: FlagSpecs = {
  etcd: {
    type: 'string',
    env: 'MIRRORSWAP_ETCD',
    arg: 'URL[,URL…]',
    help: "etcd's client URLs: fleet mode (docs/FLEET.md)",
  },
  fleet: {
    type: 'string',
    env: 'MIRRORSWAP_FLEET',
    arg: 'NAME',
    help: "the fleet's name (its keys live under /mirrorswap/NAME/); required with --etcd",
  },
  'etcd-ca': { type: 'string', env: 'MIRRORSWAP_ETCD_CA', arg: 'FILE', help: 'CA certificate for https etcd URLs' },
  'etcd-cert': { type: 'string', env: 'MIRRORSWAP_ETCD_CERT', arg: 'FILE', help: 'client certificate for etcd' },
  'etcd-key': { type: 'string', env: 'MIRRORSWAP_ETCD_KEY', arg: 'FILE', help: "the client certificate's key" },
  'etcd-user': {
    type: 'string',
    env: 'MIRRORSWAP_ETCD_USER',
    arg: 'NAME',
    help: 'etcd user (with --etcd-password-file)',
  },
  'etcd-password-file': {
    type: 'string',
    env: 'MIRRORSWAP_ETCD_PASSWORD_FILE',
    arg: 'FILE',
    help: "file holding the etcd user's password",
  },
  'etcd-timeout': {
    type: 'string',
    env: 'MIRRORSWAP_ETCD_TIMEOUT',
    default: formatDuration(FLEET_DEFAULTS.etcdTimeoutMs),
    arg: 'DURATION',
    help: 'deadline of every etcd call',
  },
  'fleet-lease': {
    type: 'string',
    env: 'MIRRORSWAP_FLEET_LEASE',
    default: formatDuration(FLEET_DEFAULTS.leaseTtlMs),
    arg: 'DURATION',
    help: "lease of this process's fleet keys: it drops out this long after it stops (at least 2s)",
  },
};

/** What only the coordinator takes. */
export const COORDINATOR_FLAGS: FlagSpecs = {
  'fleet-token-file': {
    type: 'string',
    env: 'MIRRORSWAP_FLEET_TOKEN_FILE',
    arg: 'FILE',
    help: 'file holding the token hosts give to pull content; required with --etcd',
  },
  advertise: {
    type: 'string',
    env: 'MIRRORSWAP_ADVERTISE',
    arg: 'URL',
    help: "where hosts reach this agent's API (default: http://<--listen>)",
  },
  straggler: {
    type: 'string',
    env: 'MIRRORSWAP_STRAGGLER',
    default: FLEET_DEFAULTS.straggler,
    arg: 'block|evict',
    help: 'a host that cannot prepare a swap aborts it (block) or is evicted from it (evict)',
  },
  'prepare-timeout': {
    type: 'string',
    env: 'MIRRORSWAP_PREPARE_TIMEOUT',
    default: formatDuration(FLEET_DEFAULTS.prepareTimeoutMs),
    arg: 'DURATION',
    help: 'longest wait for every host to prepare a swap',
  },
  'min-members': {
    type: 'string',
    env: 'MIRRORSWAP_MIN_MEMBERS',
    default: String(FLEET_DEFAULTS.minMembers),
    arg: 'N',
    help: 'a swap commits only if at least N hosts prepared it; none is proposed while fewer are live (0: no floor)',
  },
  seeds: {
    type: 'string',
    env: 'MIRRORSWAP_SEEDS',
    default: String(FLEET_DEFAULTS.seeds),
    arg: 'N',
    help: "hosts that pull a swap's files from this agent; the others pull them from peers (0: all from this agent)",
  },
  'on-evict': {
    type: 'string',
    env: 'MIRRORSWAP_ON_EVICT',
    arg: 'CMD',
    help: 'shell command run before a host is evicted ($MIRRORSWAP_HOST); its failure aborts the swap',
  },
};

/** An etcd client as the flags say (null without --etcd), and the fleet's name. */
export async function etcdFrom(values: FlagValues): Promise<{ etcd: EtcdGateway; fleet: string } | null> {
  const endpoints = stringFlag(values, 'etcd');
  if (endpoints === undefined) return null;
  const fleet = stringFlag(values, 'fleet');
  if (!fleet) throw new UsageError('--fleet NAME is required with --etcd');
  if (!FLEET_NAME_PATTERN.test(fleet))
    throw new UsageError(`--fleet ${fleet}: letters, digits, '.', '_' and '-' only (at most 64)`);
  const passwordFile = stringFlag(values, 'etcd-password-file');
  const user = stringFlag(values, 'etcd-user');
  if (passwordFile && !user) throw new UsageError('--etcd-password-file needs --etcd-user');
  let password: string | undefined;
  if (passwordFile) {
    try {
      password = (await readFile(passwordFile, 'utf8')).trim();
    } catch (err) {
      throw new UsageError(`--etcd-password-file ${passwordFile}: cannot read it (${(err as Error).message})`);
    }
  }
  try {
    return {
      etcd: new EtcdGateway({
        endpoints: endpoints
          .split(',')
          .map((e) => e.trim())
          .filter(Boolean),
        timeoutMs: durationFlag(values, 'etcd-timeout', { min: 50 }) ?? FLEET_DEFAULTS.etcdTimeoutMs,
        username: user,
        password,
        caFile: stringFlag(values, 'etcd-ca'),
        certFile: stringFlag(values, 'etcd-cert'),
        keyFile: stringFlag(values, 'etcd-key'),
      }),
      fleet,
    };
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

/** The lease TTL in whole seconds (etcd's unit; at least 2). */
export function leaseSecondsFrom(values: FlagValues): number {
  return Math.ceil((durationFlag(values, 'fleet-lease', { min: 2000 }) ?? FLEET_DEFAULTS.leaseTtlMs) / 1000);
}

/** The coordinator's options from its flags (undefined without --etcd). */
export async function coordinatorFrom(
  values: FlagValues,
  listen: { host: string; port: number },
): Promise<FleetAgentOptions | undefined> {
  const reached = await etcdFrom(values);
  if (!reached) return undefined;
  const tokenFile = stringFlag(values, 'fleet-token-file');
  if (!tokenFile)
    throw new UsageError('--fleet-token-file is required with --etcd: hosts pull content with that token');
  const straggler = stringFlag(values, 'straggler') ?? FLEET_DEFAULTS.straggler;
  if (straggler !== 'block' && straggler !== 'evict') throw new UsageError(`--straggler ${straggler}: block or evict`);
  const minMembers = integerFlag(values, 'min-members', 0, Number.MAX_SAFE_INTEGER) ?? FLEET_DEFAULTS.minMembers;
  const seeds = integerFlag(values, 'seeds', 0, Number.MAX_SAFE_INTEGER) ?? FLEET_DEFAULTS.seeds;
  let url = stringFlag(values, 'advertise');
  if (!url) {
    if (['0.0.0.0', '::', ''].includes(listen.host) || listen.port === 0)
      throw new UsageError(
        '--advertise URL is required when --listen names no single address and port hosts can reach',
      );
    url = `http://${listen.host.includes(':') ? `[${listen.host}]` : listen.host}:${listen.port}`;
  }
  return {
    etcd: reached.etcd,
    fleet: reached.fleet,
    id: url,
    url,
    token: await readToken(tokenFile, 'fleet-token-file'),
    leaseTtlSeconds: leaseSecondsFrom(values),
    prepareTimeoutMs: durationFlag(values, 'prepare-timeout', { min: 100 }) ?? FLEET_DEFAULTS.prepareTimeoutMs,
    straggler,
    minMembers,
    seeds,
    onEvict: stringFlag(values, 'on-evict'),
  };
}
