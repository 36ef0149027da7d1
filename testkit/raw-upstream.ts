import { type AddressInfo, type Socket, createServer as createNetServer } from 'node:net';

/** One request as a raw upstream parsed it, with the connection it came on. */
export interface SeenRequest {
  conn: number;
  method: string;
  target: string;
  headers: Map<string, string>;
  body: string;
}

/** How a raw upstream answers one request: the bytes to write, now and later, and whether to end or die. */
export interface RawAnswer {
  now?: string;
  later?: { after: number; bytes: string };
  afterwards?: 'keep' | 'end' | 'destroy' | 'stall';
}

/**
 * An upstream speaking HTTP/1.1 on raw sockets, so a test decides every byte
 * of an answer, misbehaving ones included. It frames requests by
 * Content-Length only (the proxy always sends framed bodies) and records each
 * with its connection number: what shared a connection is visible.
 */
export async function rawUpstream(answer: (req: SeenRequest) => RawAnswer) {
  const seen: SeenRequest[] = [];
  const sockets = new Set<Socket>();
  let conns = 0;
  const server = createNetServer((socket) => {
    const conn = ++conns;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let buffer = Buffer.alloc(0);
    let stopped = false;
    socket.on('data', (d: Buffer) => {
      buffer = Buffer.concat([buffer, d]);
      for (;;) {
        if (stopped) return;
        const end = buffer.indexOf('\r\n\r\n');
        if (end === -1) return;
        const head = buffer.subarray(0, end).toString('latin1').split('\r\n');
        const [method = '', target = ''] = (head[0] ?? '').split(' ');
        const headers = new Map<string, string>();
        for (const line of head.slice(1)) {
          const colon = line.indexOf(':');
          headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
        }
        const length = Number(headers.get('content-length') ?? 0);
        if (buffer.length < end + 4 + length) return;
        const body = buffer.subarray(end + 4, end + 4 + length).toString('latin1');
        buffer = buffer.subarray(end + 4 + length);
        const req = { conn, method, target, headers, body };
        seen.push(req);
        const a = answer(req);
        if (a.now) socket.write(a.now);
        const finish = () => {
          if (a.afterwards === 'end') socket.end();
          else if (a.afterwards === 'destroy') socket.destroy();
          else if (a.afterwards === 'stall') stopped = true;
        };
        if (a.later) {
          const { after: ms, bytes } = a.later;
          setTimeout(() => {
            if (!socket.destroyed) socket.write(bytes);
            finish();
          }, ms);
        } else finish();
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    open: () => sockets.size,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

export type RawUpstream = Awaited<ReturnType<typeof rawUpstream>>;
