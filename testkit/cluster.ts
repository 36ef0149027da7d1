import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { type ClientRequest, type IncomingMessage, get } from 'node:http';
import { join } from 'node:path';
import { type CliProcess, type RunOptions, listeningUrl, runCli } from './proc.js';
import type { TempStore } from './store.js';

/** An agent process with its API token, as an operator runs it. */
export interface AgentProc {
  proc: CliProcess;
  url: string;
  token: string;
  api<T = unknown>(method: string, path: string, body?: string): Promise<{ status: number; body: T }>;
}

export async function writeTokenFile(store: TempStore): Promise<{ file: string; token: string }> {
  const token = randomBytes(24).toString('hex');
  const file = join(store.root, 'token');
  await writeFile(file, `${token}\n`, { mode: 0o600 });
  return { file, token };
}

export async function startAgentProc(
  store: TempStore,
  tokenFile: string,
  token: string,
  extra: string[] = [],
  run: RunOptions = {},
): Promise<AgentProc> {
  const proc = runCli(
    [
      'agent',
      '--store',
      store.root,
      '--listen',
      '127.0.0.1:0',
      '--token-file',
      tokenFile,
      '--drain-timeout',
      '4s',
      '--server-ttl',
      '1500ms',
      ...extra,
    ],
    {},
    run,
  );
  const url = await listeningUrl(proc, run.listenTimeoutMs);
  return {
    proc,
    url,
    token,
    async api<T>(method: string, path: string, body?: string) {
      const res = await fetch(`${url}${path}`, {
        method,
        headers: { authorization: `Bearer ${token}` },
        ...(body !== undefined ? { body } : {}),
      });
      return { status: res.status, body: (await res.json()) as T };
    },
  };
}

export async function startWebProc(
  store: TempStore,
  id: string,
): Promise<{ proc: CliProcess; url: string; port: number }> {
  const proc = runCli([
    'serve',
    '--store',
    store.root,
    '--listen',
    '127.0.0.1:0',
    '--server-id',
    id,
    '--poll-interval',
    '50ms',
    '--heartbeat-interval',
    '250ms',
  ]);
  const url = await listeningUrl(proc);
  return { proc, url, port: Number(new URL(url).port) };
}

/**
 * How large a file a held download needs: more than loopback socket buffers
 * absorb (a 4 MB file has been seen to fit whole), or the server finishes
 * writing and the request is no longer in flight.
 */
export const HOLD_BYTES = 32 * 1024 * 1024;

/**
 * A download that reads its first chunk and then holds the request open
 * until `resume()`: a slow client pinning a slot. Give it a file of at least
 * `HOLD_BYTES`.
 */
export function heldDownload(port: number, path: string) {
  const chunks: Buffer[] = [];
  let response: IncomingMessage | undefined;
  let markStarted: () => void = () => {};
  let failStart: (err: Error) => void = () => {};
  const started = new Promise<void>((resolve, reject) => {
    markStarted = resolve;
    failStart = reject;
  });
  let req: ClientRequest | undefined;
  const done = new Promise<Buffer>((resolve, reject) => {
    req = get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      response = res;
      res.once('data', (c: Buffer) => {
        chunks.push(c);
        res.pause();
        markStarted();
      });
      res.on('end', () => resolve(Buffer.concat(chunks)));
      res.on('error', reject);
    });
    req.on('error', (err) => {
      failStart(err);
      reject(err);
    });
  });
  done.catch(() => {}); // an aborted download is awaited only by tests that expect it
  return {
    started,
    done,
    resume() {
      response?.on('data', (d: Buffer) => chunks.push(d));
      response?.resume();
    },
    abort() {
      req?.destroy();
    },
  };
}
