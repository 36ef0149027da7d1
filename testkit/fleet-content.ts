import { randomBytes } from 'node:crypto';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import express from 'express';
import { fleetRouter } from '../src/fleet/coordinator/fleet-api.js';
import { Snapshots } from '../src/fleet/coordinator/snapshots.js';
import { type PullStats, pullSnapshot } from '../src/fleet/host/pull.js';
import { memoryLogger } from './logger.js';

/** The token of the coordinators these helpers start. */
export const FLEET_TOKEN = `fleet-token-${randomBytes(16).toString('hex')}`;

/** A coordinator's content endpoints over `slots` (its manifests under `root`), on loopback. */
export async function contentCoordinator(
  slots: { a: string; b: string },
  root: string,
): Promise<{ snapshots: Snapshots; url: string; close(): Promise<void> }> {
  const snapshots = new Snapshots(slots, join(root, 'manifests'));
  const app = express();
  app.use('/v1/fleet', fleetRouter(snapshots, FLEET_TOKEN, memoryLogger()));
  const server: Server = createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    snapshots,
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** A pull of `snapshot` into `into`: what changed since `base`, or (null) the whole manifest compared with the slot. */
export function pullInto(
  url: string,
  snapshot: string,
  base: string | null,
  into: string,
  durable = false,
): Promise<PullStats> {
  return pullSnapshot({ from: url, token: FLEET_TOKEN, snapshot, base, into, durable, timeoutMs: 5000 });
}

/**
 * A host process pulls `snapshot` (from `base`, or whole) into `into` and is
 * killed (SIGKILL) once `placed` files are in place; its script is written
 * under `root`.
 */
export async function killedPull(
  root: string,
  url: string,
  snapshot: string,
  base: string | null,
  into: string,
  placed: number,
): Promise<void> {
  const script = join(root, 'killed-pull.mjs');
  await writeFile(
    script,
    `import { pullSnapshot } from ${JSON.stringify(new URL('../src/fleet/host/pull.js', import.meta.url).href)};
    import { PullProgress } from ${JSON.stringify(new URL('../src/fleet/host/pull-progress.js', import.meta.url).href)};
    let placed = 0;
    class Killed extends PullProgress {
      placed(path) {
        super.placed(path);
        if (++placed === ${placed}) process.kill(process.pid, 'SIGKILL');
      }
    }
    const [from, token, snapshot, base, into] = process.argv.slice(2);
    await pullSnapshot({ from, token, snapshot, base: base === '-' ? null : base, into, durable: false, timeoutMs: 5000, progress: new Killed() });`,
  );
  const child = spawn(process.execPath, [script, url, FLEET_TOKEN, snapshot, base ?? '-', into], { stdio: 'ignore' });
  const [, signal] = (await once(child, 'exit')) as [number | null, string | null];
  assert.equal(signal, 'SIGKILL', 'the pull was killed with files in place');
}
