import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { type AgentServer, startAgentServer } from '../src/server/agent-server.js';
import type { AgentOptions, AgentStatus, SwapRecord } from '../src/agent/agent.js';
import { memoryLogger } from './logger.js';
import type { TempStore } from './store.js';

export interface TestAgent extends AgentServer {
  readonly token: string;
  readonly logs: ReturnType<typeof memoryLogger>;
  /** fetch against the agent, with the token unless `auth` is false. */
  call(
    method: string,
    path: string,
    init?: { body?: string | Buffer | Uint8Array; headers?: Record<string, string>; auth?: boolean | string },
  ): Promise<Response>;
}

/** An agent with its API on a loopback port, over a temp store. */
export async function startTestAgent(
  store: TempStore,
  options: Partial<AgentOptions> = {},
  maxBody = 1024 * 1024,
): Promise<TestAgent> {
  const token = randomBytes(24).toString('hex');
  const logs = memoryLogger();
  const server = await startAgentServer({
    host: '127.0.0.1',
    port: 0,
    token,
    maxBody,
    agent: { layout: store, logger: logs, drainTimeoutMs: 5000, serverTtlMs: 2000, durable: false, ...options },
  });
  await server.started;
  return {
    ...server,
    token,
    logs,
    call(method, path, init = {}) {
      const headers: Record<string, string> = { ...init.headers };
      if (init.auth !== false) headers.authorization = `Bearer ${typeof init.auth === 'string' ? init.auth : token}`;
      return fetch(`${server.url}${path}`, {
        method,
        headers,
        ...(init.body !== undefined ? { body: init.body } : {}),
      });
    },
  };
}

/** A sync through the agent's API, waited for; asserts it went well (the record's error otherwise) and returns its record. */
export async function syncOk(agent: TestAgent, query = ''): Promise<SwapRecord> {
  const record = (await (await agent.call('POST', `/v1/sync?wait=1${query}`)).json()) as SwapRecord;
  assert.equal(record.result, 'ok', JSON.stringify(record.error ?? record));
  return record;
}

/** The agent's `/v1/status`. */
export async function agentStatus(agent: TestAgent): Promise<AgentStatus> {
  return (await (await agent.call('GET', '/v1/status')).json()) as AgentStatus;
}
