import { AGENT_LISTEN_FLAG, SWAP_FLAGS, startAgentFrom } from '../agent-flags.js';
import { STORE_FLAGS, layoutFrom, makeLogger, readToken } from '../common.js';
import { COORDINATOR_FLAGS, ETCD_FLAGS, coordinatorFrom } from '../fleet-flags.js';
import { type FlagSpecs, type FlagValues, UsageError, listenFlag, stringFlag } from '../flags.js';
import { runUntilSignal } from '../run-until-signal.js';

export const AGENT_FLAGS: FlagSpecs = {
  ...STORE_FLAGS,
  listen: AGENT_LISTEN_FLAG,
  'token-file': {
    type: 'string',
    env: 'MIRRORSWAP_TOKEN_FILE',
    arg: 'FILE',
    help: 'file holding the API token (required)',
  },
  ...SWAP_FLAGS,
  ...ETCD_FLAGS,
  ...COORDINATOR_FLAGS,
};

/** `mirrorswap agent`: the sync agent behind its write API, until SIGTERM. */
export async function agentCommand(values: FlagValues): Promise<number> {
  const layout = layoutFrom(values);
  const tokenFile = stringFlag(values, 'token-file');
  if (!tokenFile) throw new UsageError('--token-file is required: the write API never runs without a token');
  const token = await readToken(tokenFile);
  const fleet = await coordinatorFrom(values, listenFlag(values, 'listen'));
  const log = makeLogger();
  const server = await startAgentFrom(values, layout, token, log, fleet);
  const agent = await server.started;
  log.info(
    { url: server.url, store: layout.root, epoch: agent.epoch.epoch, ...(fleet ? { fleet: fleet.fleet } : {}) },
    'agent listening',
  );
  return runUntilSignal(server, null, log);
}
