import type { AgentServer } from '../server/agent-server.js';
import type { StaticServer } from '../server/static-server.js';
import type { makeLogger } from './common.js';

/** Run until SIGTERM or SIGINT, then close the web server before the agent; SIGHUP asks the agent for a sync. */
export async function runUntilSignal(
  agentServer: AgentServer | null,
  web: StaticServer | null,
  log: ReturnType<typeof makeLogger>,
): Promise<number> {
  const agent = agentServer ? await agentServer.started : null;
  const onHup = () => {
    log.info({ signal: 'SIGHUP' }, 'sync signal');
    void agent?.requestSync({ reason: 'signal' });
  };
  process.on('SIGHUP', onHup);
  log.info({ signal: await stopSignal() }, 'shutting down');
  process.off('SIGHUP', onHup);
  await web?.close();
  await agentServer?.close();
  return 0;
}

/** Resolve with the first SIGTERM or SIGINT: every long-running command stops on either. */
export function stopSignal(): Promise<'SIGTERM' | 'SIGINT'> {
  return new Promise((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
}
