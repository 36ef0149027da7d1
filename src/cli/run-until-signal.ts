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
  const signal = await new Promise<string>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  log.info({ signal }, 'shutting down');
  process.off('SIGHUP', onHup);
  await web?.close();
  await agentServer?.close();
  return 0;
}
