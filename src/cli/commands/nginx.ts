import { pathOf } from '../../core/http-io.js';
import { sendReadiness } from '../../server/send-readiness.js';
import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import { createServer } from 'node:http';
import { dirname } from 'node:path';
import { MOUNT_DEFAULTS, MOUNT_MINIMUMS } from '../../../middleware/defaults.js';
import { metricsHandler } from '../../../middleware/mount/metrics.js';
import type { WatchMode } from '../../../middleware/options.js';
import { FLOCK, checkRuntimeTools } from '../../store/runtime-tools.js';
import { SERVER_ID_PATTERN } from '../../store/heartbeat.js';
import { NGINX_DEFAULTS, NginxCompanion, defaultNginxServerId } from '../../nginx/companion.js';
import { closeServer, listen } from '../../server/listen.js';
import { STORE_FLAGS, layoutFrom, makeLogger } from '../common.js';
import {
  type FlagSpecs,
  type FlagValues,
  UsageError,
  durationFlag,
  formatDuration,
  listenFlag,
  stringFlag,
} from '../flags.js';
import { stopSignal } from '../run-until-signal.js';
import { MOUNT_FLAGS } from '../serve-flags.js';

export const NGINX_FLAGS: FlagSpecs = {
  ...STORE_FLAGS,
  include: {
    type: 'string',
    env: 'MIRRORSWAP_NGINX_INCLUDE',
    arg: 'FILE',
    help: "the include file it owns and rewrites on each swap (nginx's server block includes it); required",
  },
  'nginx-pid': {
    type: 'string',
    env: 'MIRRORSWAP_NGINX_PID',
    default: '/run/nginx.pid',
    arg: 'FILE',
    help: "nginx's pid file: its master gets SIGHUP, its workers are watched",
  },
  'reload-cmd': {
    type: 'string',
    env: 'MIRRORSWAP_NGINX_RELOAD_CMD',
    arg: 'CMD',
    help: 'run this (through sh -c) to reload nginx instead of sending SIGHUP',
  },
  'reload-timeout': {
    type: 'string',
    env: 'MIRRORSWAP_NGINX_RELOAD_TIMEOUT',
    default: formatDuration(NGINX_DEFAULTS.reloadTimeout),
    arg: 'DURATION',
    help: 'a reload that starts no new worker within this failed',
  },
  'retry-interval': {
    type: 'string',
    env: 'MIRRORSWAP_NGINX_RETRY_INTERVAL',
    default: formatDuration(NGINX_DEFAULTS.retryInterval),
    arg: 'DURATION',
    help: 'after a failed reload, try again this often',
  },
  'server-id': {
    type: 'string',
    env: 'MIRRORSWAP_SERVER_ID',
    arg: 'ID',
    help: 'heartbeat id (default: nginx-<hostname>; a restarted companion takes over its file)',
  },
  watch: MOUNT_FLAGS.watch as FlagSpecs[string],
  'poll-interval': MOUNT_FLAGS['poll-interval'] as FlagSpecs[string],
  'heartbeat-interval': MOUNT_FLAGS['heartbeat-interval'] as FlagSpecs[string],
  metrics: {
    type: 'string',
    env: 'MIRRORSWAP_NGINX_METRICS',
    arg: 'HOST:PORT',
    help: 'serve /metrics (Prometheus), /status (JSON) and /readyz (for a load balancer) here',
  },
};

/** `mirrorswap nginx`: make a running nginx a web server of the store, until SIGTERM. */
export async function nginxCommand(values: FlagValues): Promise<number> {
  const layout = layoutFrom(values);
  const includeFile = stringFlag(values, 'include');
  if (!includeFile) throw new UsageError('--include FILE is required: the include file nginx reads the root from');
  try {
    await access(dirname(includeFile), constants.W_OK);
  } catch {
    throw new UsageError(
      `--include ${includeFile}: its directory ${dirname(includeFile)} does not exist or is not writable: create it (install -d)`,
    );
  }
  const watch = (stringFlag(values, 'watch') ?? MOUNT_DEFAULTS.watch) as WatchMode;
  if (!['auto', 'native', 'poll'].includes(watch))
    throw new UsageError(`--watch ${watch}: must be auto, native or poll`);
  const serverId = stringFlag(values, 'server-id') ?? defaultNginxServerId();
  if (!SERVER_ID_PATTERN.test(serverId)) {
    throw new UsageError(`--server-id ${serverId}: letters, digits, '.', '_' and '-' only (at most 128)`);
  }
  await checkRuntimeTools([FLOCK]);
  const log = makeLogger();
  const companion = await NginxCompanion.start({
    layout,
    includeFile,
    pidFile: stringFlag(values, 'nginx-pid') ?? '/run/nginx.pid',
    reloadCmd: stringFlag(values, 'reload-cmd'),
    reloadTimeout: durationFlag(values, 'reload-timeout', { min: 100 }) ?? NGINX_DEFAULTS.reloadTimeout,
    retryInterval: durationFlag(values, 'retry-interval', { min: 100 }) ?? NGINX_DEFAULTS.retryInterval,
    serverId,
    heartbeatInterval:
      durationFlag(values, 'heartbeat-interval', { min: MOUNT_MINIMUMS.heartbeatInterval }) ??
      MOUNT_DEFAULTS.heartbeatInterval,
    watch,
    pollInterval:
      durationFlag(values, 'poll-interval', { min: MOUNT_MINIMUMS.pollInterval }) ?? MOUNT_DEFAULTS.pollInterval,
    logger: log,
  });
  let metrics: ReturnType<typeof createServer> | null = null;
  if (stringFlag(values, 'metrics') !== undefined) {
    const { host, port } = listenFlag(values, 'metrics');
    const serveMetrics = metricsHandler(companion.registry);
    metrics = createServer((req, res) => {
      const path = pathOf(req.url);
      if (path === '/metrics') serveMetrics(req, res);
      else if (path === '/readyz') sendReadiness(res, companion.readiness());
      else if (path === '/status') {
        res.setHeader('Content-Type', 'application/json');
        res.end(`${JSON.stringify(companion.status())}\n`);
      } else {
        res.statusCode = 404;
        res.end('not found\n');
      }
    });
    log.info({ url: await listen(metrics, host, port) }, 'nginx companion metrics listening');
  }
  log.info({ store: layout.root, include: includeFile, ...companion.status() }, 'nginx companion running');
  log.info({ signal: await stopSignal() }, 'shutting down');
  if (metrics) await closeServer(metrics, 'all');
  await companion.close();
  return 0;
}
