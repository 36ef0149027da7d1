/**
 * The soak's publisher, in a worker thread of its own: in production writes
 * and sync signals come from other clients than the web's, so they must not
 * queue behind the load generator's event loop (nor it behind them).
 * Messages in: 'start' (a swapping window opens), 'stop'. Messages out: one
 * per write batch and per swap, then 'stopped' once the last has finished.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { setTimeout as delay } from 'node:timers/promises';
import { Pool } from 'undici';
import type { SwapRecord } from '../../src/agent/agent.js';
import { batchTar } from './content.js';

export interface WriterData {
  agentUrl: string;
  token: string;
  /** Time between write batches, and the shortest time between swaps. */
  intervalMs: number;
  /** Send write batches (false: swaps only, of an unchanged master). */
  writes: boolean;
  /** Send sync signals (false: writes only, nothing swapped). */
  swaps: boolean;
}

export type WriterEvent =
  | { kind: 'write'; ok: boolean; version: number }
  | { kind: 'swap'; ok: boolean; problem?: string }
  | { kind: 'stopped' };

const { agentUrl, token, intervalMs, writes, swaps } = workerData as WriterData;
const port = parentPort;
if (!port) throw new Error('writer.js runs as a worker thread');
const headers = { authorization: `Bearer ${token}` };
// undici's own request, not fetch(): half the CPU for a megabyte upload, and
// this thread shares the load generator's process.
const agentPool = new Pool(agentUrl, { connections: 2 });
let running = false;
let version = 0;

function send(event: WriterEvent): void {
  port?.postMessage(event);
}

async function writeLoop(): Promise<void> {
  while (running) {
    version++;
    const status = await agentPool
      .request({
        method: 'POST',
        path: '/v1/batch',
        headers: { ...headers, 'content-type': 'application/x-tar' },
        body: await batchTar(version),
      })
      .then(async (res) => {
        await res.body.dump();
        return res.statusCode;
      })
      .catch(() => 0);
    send({ kind: 'write', ok: status === 200, version });
    await delay(intervalMs);
  }
}

async function swapLoop(): Promise<void> {
  while (running) {
    const started = Date.now();
    try {
      const res = await agentPool.request({ method: 'POST', path: '/v1/sync?wait=1', headers });
      const record = (await res.body.json()) as SwapRecord;
      send(
        record.result === 'ok'
          ? { kind: 'swap', ok: true }
          : {
              kind: 'swap',
              ok: false,
              problem: `swap ${record.epoch}: ${record.result} ${record.error?.message ?? ''}`,
            },
      );
    } catch (err) {
      send({ kind: 'swap', ok: false, problem: `sync request failed: ${(err as Error).message}` });
    }
    await delay(Math.max(0, intervalMs - (Date.now() - started)));
  }
}

let loops: Promise<unknown> = Promise.resolve();
port.on('message', (msg: 'start' | 'stop') => {
  if (msg === 'start' && !running) {
    running = true;
    loops = Promise.all([writes ? writeLoop() : null, swaps ? swapLoop() : null]);
  } else if (msg === 'stop') {
    running = false;
    void loops.then(() => send({ kind: 'stopped' }));
  }
});
