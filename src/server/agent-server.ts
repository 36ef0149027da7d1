import { type Server, createServer } from 'node:http';
import { Agent, type AgentOptions } from '../agent/agent.js';
import { createApi } from '../agent/http-api.js';

export interface AgentServer {
  readonly server: Server;
  readonly url: string;
  /** Resolves with the agent once the store is taken and initialised. */
  readonly started: Promise<Agent>;
  close(): Promise<void>;
}

/**
 * The agent behind its HTTP API. The listener opens first, so /healthz
 * answers and /readyz says 503 while the store is still being initialised.
 */
export async function startAgentServer(opts: {
  host: string;
  port: number;
  token: string;
  maxBody: number;
  agent: AgentOptions;
}): Promise<AgentServer> {
  let agent: Agent | null = null;
  const app = createApi({ agent: () => agent, token: opts.token, maxBody: opts.maxBody, logger: opts.agent.logger });
  const server = createServer(app);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : opts.port;
  const started = Agent.start(opts.agent).then((a) => {
    agent = a;
    return a;
  });
  const closeServer = () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  started.catch(() => closeServer());
  return {
    server,
    url: `http://${opts.host.includes(':') ? `[${opts.host}]` : opts.host}:${port}`,
    started,
    async close() {
      await closeServer();
      const a = await started.catch(() => null);
      await a?.close();
    },
  };
}
