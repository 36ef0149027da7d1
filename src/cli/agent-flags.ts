import { AGENT_DEFAULTS, AGENT_MINIMUMS, API_DEFAULTS, VARIANT_RANGES } from '../agent/agent-defaults.js';
import type { AgentOptions } from '../agent/agent.js';
import type { FleetAgentOptions } from '../agent/agent-types.js';
import type { Logger } from '../core/logger.js';
import type { AgentServer } from '../server/agent-server.js';
import { MAX_KEEP, type StoreLayout } from '../store/store-layout.js';
import {
  type FlagSpecs,
  type FlagValues,
  UsageError,
  durationFlag,
  formatDuration,
  formatSize,
  integerFlag,
  listFlag,
  listenFlag,
  sizeFlag,
  stringFlag,
} from './flags.js';
import { VARIANT_ENCODINGS, type VariantEncoding } from '../store/content-index.js';
import { parseEncodings } from '../tree/compressible.js';
import { MAX_VARIANT_TYPES, MAX_VARIANT_TYPE_LENGTH, VARIANT_TYPE } from '../agent/variant-settings.js';

/** The agent API's listener, shared by `agent` and `up`. */
export const AGENT_LISTEN_FLAG: FlagSpecs[string] = {
  type: 'string',
  env: 'MIRRORSWAP_LISTEN',
  default: API_DEFAULTS.listen,
  arg: 'HOST:PORT',
  help: 'agent API listener',
};

/** How the agent swaps, shared by `agent` and `up`; defaults from `AGENT_DEFAULTS`. */
export const SWAP_FLAGS: FlagSpecs = {
  interval: {
    type: 'string',
    env: 'MIRRORSWAP_INTERVAL',
    arg: 'DURATION',
    help: 'sync this often when master has changes',
  },
  auto: {
    type: 'boolean',
    env: 'MIRRORSWAP_AUTO',
    default: AGENT_DEFAULTS.auto,
    help: 'sync once changes to master settle',
  },
  settle: {
    type: 'string',
    env: 'MIRRORSWAP_SETTLE',
    default: formatDuration(AGENT_DEFAULTS.settleMs),
    arg: 'DURATION',
    help: 'quiet time before an --auto sync',
  },
  'drain-timeout': {
    type: 'string',
    env: 'MIRRORSWAP_DRAIN_TIMEOUT',
    default: formatDuration(AGENT_DEFAULTS.drainTimeoutMs),
    arg: 'DURATION',
    help: 'longest wait for servers to let go of a slot',
  },
  'server-ttl': {
    type: 'string',
    env: 'MIRRORSWAP_SERVER_TTL',
    default: formatDuration(AGENT_DEFAULTS.serverTtlMs),
    arg: 'DURATION',
    help: 'a server whose heartbeat is older is dead',
  },
  'on-mount': {
    type: 'string',
    env: 'MIRRORSWAP_ON_MOUNT',
    arg: 'CMD',
    help: 'shell command run after an epoch is published',
  },
  'on-unmount': {
    type: 'string',
    env: 'MIRRORSWAP_ON_UNMOUNT',
    arg: 'CMD',
    help: 'shell command run after the old slot drained',
  },
  'max-body': {
    type: 'string',
    env: 'MIRRORSWAP_MAX_BODY',
    default: formatSize(API_DEFAULTS.maxBodyBytes),
    arg: 'SIZE',
    help: 'largest body the write API takes',
  },
  'watch-master': {
    type: 'boolean',
    env: 'MIRRORSWAP_WATCH_MASTER',
    default: AGENT_DEFAULTS.watchMaster,
    help: 'watch master for direct writes (--no-watch-master to turn off)',
  },
  'verify-interval': {
    type: 'string',
    env: 'MIRRORSWAP_VERIFY_INTERVAL',
    default: formatDuration(AGENT_DEFAULTS.verifyIntervalMs),
    arg: 'DURATION',
    help: 'compare master with the mounted copy this often, to catch changes the journal missed (0: never)',
  },
  fsync: {
    type: 'boolean',
    env: 'MIRRORSWAP_FSYNC',
    default: AGENT_DEFAULTS.durable,
    help: 'fsync copied files before publishing (--no-fsync: faster, not crash-safe)',
  },
  variants: {
    type: 'boolean',
    env: 'MIRRORSWAP_VARIANTS',
    default: AGENT_DEFAULTS.variants,
    help: 'make precompressed variants (X.br, X.gz) and the content index of what each sync copies (--no-variants to turn off)',
  },
  'variant-encodings': {
    type: 'string',
    env: 'MIRRORSWAP_VARIANT_ENCODINGS',
    default: AGENT_DEFAULTS.variantEncodings.join(','),
    arg: 'LIST',
    help: `codings of the variants made, among ${VARIANT_ENCODINGS.join(',')}`,
  },
  'brotli-quality': {
    type: 'string',
    env: 'MIRRORSWAP_BROTLI_QUALITY',
    default: String(AGENT_DEFAULTS.brotliQuality),
    arg: '0-11',
    help: 'brotli quality of the br variants',
  },
  'gzip-level': {
    type: 'string',
    env: 'MIRRORSWAP_GZIP_LEVEL',
    default: String(AGENT_DEFAULTS.gzipLevel),
    arg: '1-9',
    help: 'gzip level of the gz variants',
  },
  'variant-min-size': {
    type: 'string',
    env: 'MIRRORSWAP_VARIANT_MIN_SIZE',
    default: formatSize(AGENT_DEFAULTS.variantMinSize),
    arg: 'SIZE',
    help: 'files smaller than this get no variant',
  },
  'variant-min-saving': {
    type: 'string',
    env: 'MIRRORSWAP_VARIANT_MIN_SAVING',
    default: String(AGENT_DEFAULTS.variantMinSaving),
    arg: 'PERCENT',
    help: 'keep a variant only when it is at least this many percent smaller',
  },
  'variant-types': {
    type: 'string',
    env: 'MIRRORSWAP_VARIANT_TYPES',
    default: AGENT_DEFAULTS.variantTypes.join(','),
    arg: 'LIST',
    help: 'extensions of the files compressed',
  },
  keep: {
    type: 'string',
    env: 'MIRRORSWAP_KEEP',
    default: String(AGENT_DEFAULTS.keep),
    arg: 'K',
    help: `releases kept, one copy each (2 to ${MAX_KEEP}): more than two serve requests pinned to an older release (skew protection) and allow rollback to any of them`,
  },
  'skew-max-age': {
    type: 'string',
    env: 'MIRRORSWAP_SKEW_MAX_AGE',
    default: formatDuration(AGENT_DEFAULTS.skewMaxAgeMs),
    arg: 'DURATION',
    help: 'how long a replaced release stays servable to pinned requests (0: until its copy is reused); a sync never waits for it',
  },
  'share-files': {
    type: 'boolean',
    env: 'MIRRORSWAP_SHARE_FILES',
    help: 'copies on one file system share unchanged files by hard link (default: on when --keep is above 2; --no-share-files to turn off)',
  },
  'variant-threads': {
    type: 'string',
    env: 'MIRRORSWAP_VARIANT_THREADS',
    default: String(AGENT_DEFAULTS.variantThreads),
    arg: 'N',
    help: 'walk threads that may compress at once, the cores a full copy may take from the web servers (0: all)',
  },
  precompress: {
    type: 'boolean',
    env: 'MIRRORSWAP_PRECOMPRESS',
    default: AGENT_DEFAULTS.precompress,
    help: 'compress the variants of files as the write API and the watcher see them land in master, so a sync links them in (--no-precompress: each sync compresses what it copies)',
  },
};

/**
 * A list flag of the variants that must name something: an empty one (`''`, `,`) compressed nothing
 * (types) or turned variants and the content index off (codings), without a word. Saying so is
 * `--no-variants`' job; with it, an empty list is taken.
 */
function nonEmptyListFlag(values: FlagValues, name: string, example: string): string[] | undefined {
  const list = listFlag(values, name);
  // with variants off an empty list does nothing either (a unit file may clear the lists beside
  // --no-variants): taken, as Agent.start takes it
  if (list !== undefined && list.length === 0 && values.variants !== false) {
    throw new UsageError(
      `--${name} ${JSON.stringify(values[name])}: names nothing; list at least one, like ${example} (to make no variants, use --no-variants)`,
    );
  }
  return list;
}

/** `--variant-encodings`, checked against the codings the agent makes. */
function encodingsFlag(values: FlagValues): VariantEncoding[] | undefined {
  const list = nonEmptyListFlag(values, 'variant-encodings', VARIANT_ENCODINGS.join(','));
  if (list === undefined) return undefined;
  try {
    return parseEncodings(list.join(','));
  } catch (err) {
    throw new UsageError(`--variant-encodings ${list.join(',')}: ${(err as Error).message}`);
  }
}

/** `--variant-types`: extensions, each of which a file's name can end with. */
function typesFlag(values: FlagValues): string[] | undefined {
  const list = nonEmptyListFlag(values, 'variant-types', 'html,css,js,svg');
  const bad = list?.find((type) => !VARIANT_TYPE.test(type));
  if (bad !== undefined) {
    throw new UsageError(
      `--variant-types ${list?.join(',')}: "${bad}" is not a file extension; list extensions, like html,css,js (no globs, paths or inner dots: a file's extension is what follows the last dot of its name)`,
    );
  }
  if (list && list.length > MAX_VARIANT_TYPES)
    throw new UsageError(`--variant-types lists ${list.length} types: at most ${MAX_VARIANT_TYPES}`);
  const long = list?.find((type) => type.length > MAX_VARIANT_TYPE_LENGTH);
  if (long !== undefined)
    throw new UsageError(`--variant-types: "${long}" is longer than ${MAX_VARIANT_TYPE_LENGTH} characters`);
  return list;
}

/** The agent's options from its flags; what a flag leaves unset takes the agent's default. */
export function agentOptions(values: FlagValues, layout: StoreLayout, logger: Logger): AgentOptions {
  const boolean = (name: string) => (typeof values[name] === 'boolean' ? (values[name] as boolean) : undefined);
  return {
    layout,
    logger,
    intervalMs: durationFlag(values, 'interval', { min: AGENT_MINIMUMS.intervalMs }),
    auto: boolean('auto'),
    settleMs: durationFlag(values, 'settle'),
    drainTimeoutMs: durationFlag(values, 'drain-timeout', { min: AGENT_MINIMUMS.drainTimeoutMs }),
    serverTtlMs: durationFlag(values, 'server-ttl', { min: AGENT_MINIMUMS.serverTtlMs }),
    onMount: stringFlag(values, 'on-mount'),
    onUnmount: stringFlag(values, 'on-unmount'),
    watchMaster: boolean('watch-master'),
    durable: boolean('fsync'),
    verifyIntervalMs: durationFlag(values, 'verify-interval'),
    variants: boolean('variants'),
    variantEncodings: encodingsFlag(values),
    brotliQuality: integerFlag(values, 'brotli-quality', ...VARIANT_RANGES.brotliQuality),
    gzipLevel: integerFlag(values, 'gzip-level', ...VARIANT_RANGES.gzipLevel),
    variantMinSize: sizeFlag(values, 'variant-min-size', { zero: true }),
    variantMinSaving: integerFlag(values, 'variant-min-saving', ...VARIANT_RANGES.variantMinSaving),
    variantTypes: typesFlag(values),
    variantThreads: integerFlag(values, 'variant-threads', ...VARIANT_RANGES.variantThreads),
    precompress: boolean('precompress'),
    keep: integerFlag(values, 'keep', 2, MAX_KEEP),
    skewMaxAgeMs: durationFlag(values, 'skew-max-age'),
    shareFiles: boolean('share-files'),
  };
}

/**
 * What the agent's flags say, read and checked: a bad one is a usage error
 * here, before anything is started or made (`up` reads them before it seeds
 * its store).
 */
export function agentFlags(values: FlagValues, layout: StoreLayout, log: Logger) {
  const { host, port } = listenFlag(values, 'listen');
  return { host, port, maxBody: sizeFlag(values, 'max-body'), agent: agentOptions(values, layout, log) };
}

/**
 * Start the agent behind its API, as the flags say (`flags`: as `agentFlags`
 * read them). The agent is imported here, not with the flags: `mirrorswap
 * host` shares these flags and runs no sync agent.
 */
export async function startAgentFrom(
  values: FlagValues,
  layout: StoreLayout,
  token: string,
  log: Logger,
  fleet?: FleetAgentOptions,
  flags: ReturnType<typeof agentFlags> = agentFlags(values, layout, log),
): Promise<AgentServer> {
  const { startAgentServer } = await import('../server/agent-server.js');
  return startAgentServer({
    host: flags.host,
    port: flags.port,
    token,
    maxBody: flags.maxBody,
    agent: { ...flags.agent, fleet },
  });
}
