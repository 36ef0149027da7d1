import { type Server, createServer } from 'node:http';
import { Agent, type AgentOptions } from '../agent/agent.js';
import { API_DEFAULTS } from '../agent/agent-defaults.js';
import { createApi } from '../agent/api/http-api.js';
import { closeServer, listen } from './listen.js';

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
  /** Largest body the write API takes; default `API_DEFAULTS.maxBodyBytes`. */
  maxBody?: number | undefined;
  agent: AgentOptions;
}): Promise<AgentServer> {
  let agent: Agent | null = null;
  const app = createApi({
    agent: () => agent,
    token: opts.token,
    maxBody: opts.maxBody ?? API_DEFAULTS.maxBodyBytes,
    logger: opts.agent.logger,
    stateDir: opts.agent.layout.stateDir,
  });
  const server = createServer(app);
  const url = await listen(server, opts.host, opts.port);
  const started = Agent.start(opts.agent).then((a) => {
    agent = a;
    return a;
  });
  started.catch(() => closeServer(server, 'all'));
  return {
    server,
    url,
    started,
    async close() {
      await closeServer(server, 'all');
      const a = await started.catch(() => null);
      await a?.close();
    },
  };
}
