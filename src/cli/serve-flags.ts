import { MOUNT_DEFAULTS, MOUNT_MINIMUMS, STATIC_DEFAULTS } from '../../middleware/defaults.js';
import type { StaticOptions, WatchMode } from '../../middleware/options.js';
import type { Logger } from '../core/logger.js';
import type { StoreLayout } from '../store/store-layout.js';
import { type FlagSpecs, type FlagValues, UsageError, durationFlag, formatDuration, stringFlag } from './flags.js';

/** The web server's listener, shared by `serve` and `up`. */
export const SERVE_LISTEN_FLAG: FlagSpecs[string] = {
  type: 'string',
  env: 'MIRRORSWAP_SERVE_LISTEN',
  default: '127.0.0.1:8080',
  arg: 'HOST:PORT',
  help: 'web server listener',
};

/** How the web server follows the store, shared by `serve` and `up`; defaults from the middleware's tables. */
export const MOUNT_FLAGS: FlagSpecs = {
  'server-id': { type: 'string', env: 'MIRRORSWAP_SERVER_ID', arg: 'ID', help: 'heartbeat id (default: host-pid)' },
  watch: {
    type: 'string',
    env: 'MIRRORSWAP_WATCH',
    default: MOUNT_DEFAULTS.watch,
    arg: 'MODE',
    help: 'epoch watching: auto, native or poll',
  },
  'poll-interval': {
    type: 'string',
    env: 'MIRRORSWAP_POLL_INTERVAL',
    default: formatDuration(MOUNT_DEFAULTS.pollInterval),
    arg: 'DURATION',
    help: 'epoch poll period',
  },
  'heartbeat-interval': {
    type: 'string',
    env: 'MIRRORSWAP_HEARTBEAT_INTERVAL',
    default: formatDuration(MOUNT_DEFAULTS.heartbeatInterval),
    arg: 'DURATION',
    help: "how often the heartbeat file is rewritten (keep well under the agent's --server-ttl)",
  },
  'max-age': {
    type: 'string',
    env: 'MIRRORSWAP_MAX_AGE',
    default: formatDuration(STATIC_DEFAULTS.maxAge),
    arg: 'DURATION',
    help: 'Cache-Control max-age',
  },
};

const WATCH_MODES: readonly WatchMode[] = ['auto', 'native', 'poll'];

/** mirrorStatic's options from the flags; what a flag leaves unset takes the middleware's default. */
export function staticOptions(values: FlagValues, layout: StoreLayout, logger: Logger): StaticOptions {
  const watch = stringFlag(values, 'watch');
  if (watch !== undefined && !WATCH_MODES.includes(watch as WatchMode)) {
    throw new UsageError(`--watch ${watch}: must be auto, native or poll`);
  }
  return {
    store: layout.root,
    watch: watch as WatchMode | undefined,
    pollInterval: durationFlag(values, 'poll-interval', { min: MOUNT_MINIMUMS.pollInterval }),
    heartbeatInterval: durationFlag(values, 'heartbeat-interval', { min: MOUNT_MINIMUMS.heartbeatInterval }),
    maxAge: durationFlag(values, 'max-age'),
    logger,
    serverId: stringFlag(values, 'server-id'),
  };
}
