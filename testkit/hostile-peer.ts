import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { join } from 'node:path';
import { frameHeader } from '../src/fleet/fleet-files.js';
import { refuseStray } from './stub-coordinator.js';

/**
 * What a hostile or broken peer does with a files request. Each answers the
 * fleet's wire format (or breaks it) from the content of a real tree, so a
 * test can tell a peer's lie from the coordinator's truth:
 * - `damaged`: each file's content with one byte changed, and the SHA-256 of
 *   what it sent (a frame consistent in itself, not with the manifest);
 * - `bad-trailer`: the right content, a wrong SHA-256 after it;
 * - `other-path`: a frame for a path not asked for (`../outside.txt`, then
 *   one of the tree's own paths out of turn);
 * - `wrong-size`: the right content under a header with another size;
 * - `cut`: half of the answer, then the connection closed;
 * - `stall`: half of the answer, then nothing (the connection held open);
 * - `slow`: the right answer, one byte every 100 ms;
 * - `hang`: the connection accepted, no answer ever;
 * - `busy`: 503, as a peer serving its limit answers;
 * - `gone`: 410, as a peer whose slot no longer holds the snapshot;
 * - `huge-header`: a frame header length of 1 GiB;
 * - `empty`: a whole answer holding none of the files, as a peer still
 *   pulling answers when it has none of them yet (for ever);
 * - `one-by-one`: each answer holds the first file asked for only, its head
 *   and its frame each sent `delayMs` late (inside a peer's silence bound),
 *   then ends whole: the slowest a peer still pulling could look;
 * - `error-drip`: a 500 whose body never ends, a byte a second;
 * - `good`: the right answer (a peer that holds the tree).
 */
export type PeerMode =
  | 'damaged'
  | 'bad-trailer'
  | 'other-path'
  | 'wrong-size'
  | 'cut'
  | 'stall'
  | 'slow'
  | 'hang'
  | 'busy'
  | 'gone'
  | 'huge-header'
  | 'error-drip'
  | 'empty'
  | 'one-by-one'
  | 'good';

export const HOSTILE_MODES: readonly PeerMode[] = [
  'damaged',
  'bad-trailer',
  'other-path',
  'wrong-size',
  'cut',
  'stall',
  'slow',
  'hang',
  'busy',
  'gone',
  'huge-header',
  'error-drip',
  'empty',
  'one-by-one',
];

export interface HostilePeer {
  url: string;
  mode: PeerMode;
  /** Files requests it received. */
  requests: number;
  close(): Promise<void>;
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest();

/**
 * A peer answering files requests from the tree at `root` as `mode` says,
 * to hosts of the fleet whose `token` they carry: a host of another test's
 * fleet, calling a port this peer was handed after its own peer closed, is
 * neither counted nor answered as this test's hosts are (401).
 */
export async function startHostilePeer(
  mode: PeerMode,
  root: string,
  { token, delayMs = 100 }: { token: string; delayMs?: number },
): Promise<HostilePeer> {
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const peer: HostilePeer = { url: '', mode, requests: 0, close: async () => {} };
  const answer = async (_req: IncomingMessage, res: ServerResponse, body: Buffer) => {
    peer.requests++;
    if (mode === 'hang') return;
    if (mode === 'busy' || mode === 'gone') {
      res.writeHead(mode === 'busy' ? 503 : 410, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: mode === 'busy' ? 'PEER_BUSY' : 'SNAPSHOT_GONE', message: mode }));
      return;
    }
    if (mode === 'error-drip') {
      res.writeHead(500, { 'content-type': 'text/plain' });
      const drip = setInterval(() => res.write('x'), 1000);
      timers.add(drip);
      return;
    }
    if (mode === 'empty') {
      res.writeHead(200, { 'content-type': 'application/x-mirrorswap-files' });
      res.end();
      return;
    }
    const { paths } = JSON.parse(body.toString()) as { paths: string[] };
    if (mode === 'one-by-one') {
      const first = paths[0] as string;
      const content = await readFile(join(root, first));
      const later = (fn: () => void) => {
        const t = setTimeout(fn, delayMs);
        timers.add(t);
      };
      later(() => {
        res.writeHead(200, { 'content-type': 'application/x-mirrorswap-files' });
        res.flushHeaders();
        later(() => res.end(Buffer.concat([frameHeader(first, content.length), content, sha(content)])));
      });
      return;
    }
    const frames: Buffer[] = [];
    for (const [i, path] of paths.entries()) {
      const content = await readFile(join(root, path)).catch(() => Buffer.alloc(0));
      if (mode === 'damaged') {
        const bad = Buffer.from(content);
        if (bad.length > 0) bad[bad.length >> 1] = (bad[bad.length >> 1] as number) ^ 0x55;
        else bad.fill(0);
        const lie = bad.length > 0 ? bad : Buffer.from('x');
        frames.push(frameHeader(path, lie.length), lie, sha(lie));
      } else if (mode === 'bad-trailer') {
        frames.push(frameHeader(path, content.length), content, sha(Buffer.concat([content, Buffer.from('!')])));
      } else if (mode === 'other-path') {
        const other = i === 0 ? '../outside.txt' : (paths[0] as string);
        frames.push(frameHeader(other, content.length), content, sha(content));
      } else if (mode === 'wrong-size') {
        frames.push(frameHeader(path, content.length + 1), content, Buffer.from('!'), sha(content));
      } else if (mode === 'huge-header') {
        const length = Buffer.alloc(4);
        length.writeUInt32BE(1024 * 1024 * 1024);
        frames.push(length);
        break;
      } else {
        frames.push(frameHeader(path, content.length), content, sha(content));
      }
    }
    const all = Buffer.concat(frames);
    res.writeHead(200, { 'content-type': 'application/x-mirrorswap-files' });
    if (mode === 'cut') {
      res.write(all.subarray(0, all.length >> 1));
      setTimeout(() => res.destroy(), 20);
    } else if (mode === 'stall') {
      res.write(all.subarray(0, all.length >> 1));
    } else if (mode === 'slow') {
      let at = 0;
      const drip = setInterval(() => {
        if (at >= all.length) {
          clearInterval(drip);
          res.end();
          return;
        }
        res.write(all.subarray(at, at + 1));
        at++;
      }, 100);
      timers.add(drip);
    } else {
      res.end(all);
    }
  };
  const server: Server = createServer((req, res) => {
    // a client of another test calling this port after its own server closed (`stubCoordinator`),
    // another fleet's host included: not counted, and no hostile answer
    const path = new URL(req.url ?? '/', 'http://peer').pathname;
    if (req.method !== 'POST' || path !== '/v1/fleet/files') {
      refuseStray(req, res);
      return;
    }
    if (req.headers.authorization !== `Bearer ${token}`) {
      refuseStray(req, res, 401);
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => void answer(req, res, Buffer.concat(chunks)).catch(() => res.destroy()));
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  peer.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  peer.close = async () => {
    for (const t of timers) clearInterval(t); // a timeout's handle too
    for (const s of sockets) s.destroy();
    await new Promise((r) => server.close(r));
  };
  return peer;
}
