import { checkHttpUrl } from '../../../middleware/options.js';
import { type StaticServer, startStaticServer } from '../../server/static-server.js';
import { STORE_FLAGS, layoutFrom, makeLogger } from '../common.js';
import { type FlagSpecs, type FlagValues, UsageError, listenFlag, stringFlag } from '../flags.js';
import { runUntilSignal } from '../run-until-signal.js';
import { MOUNT_FLAGS, SERVE_LISTEN_FLAG, staticOptions } from '../serve-flags.js';

export const SERVE_FLAGS: FlagSpecs = {
  ...STORE_FLAGS,
  listen: SERVE_LISTEN_FLAG,
  ...MOUNT_FLAGS,
  upstream: {
    type: 'string',
    env: 'MIRRORSWAP_UPSTREAM',
    arg: 'URL',
    help: 'application server that gets what the mounted copy does not hold',
  },
};

/** Option errors of the middleware (TypeErrors naming the option) are usage errors here. */
function asUsageError(err: unknown): never {
  if (err instanceof TypeError) throw new UsageError(err.message);
  throw err;
}

/** `mirrorswap serve`: a standalone web server on the mounted copy, until SIGTERM. */
export async function serveCommand(values: FlagValues): Promise<number> {
  const layout = layoutFrom(values);
  const { host, port } = listenFlag(values, 'listen');
  const log = makeLogger();
  const given = stringFlag(values, 'upstream');
  let upstream: string | undefined;
  try {
    upstream = given === undefined ? undefined : checkHttpUrl(given, '--upstream');
  } catch {
    throw new UsageError(`--upstream ${given}: must be an http:// or https:// URL`);
  }
  const web: StaticServer = await startStaticServer(
    host,
    port,
    staticOptions(values, layout, log),
    upstream ? { upstream } : undefined,
  ).catch(asUsageError);
  log.info({ url: web.url, store: layout.root, epoch: web.mw.state().epoch }, 'web server listening');
  return runUntilSignal(null, web, log);
}
