import type { ServerResponse } from 'node:http';

/**
 * Answer 200 with `first`, then `byte` over and over, 64 KiB a write as fast
 * as the client reads, up to 64 MiB: a sender that never stops. Returns
 * how many bytes of the flood were sent so far (a client that stops reading
 * keeps it low).
 */
export function flood(res: ServerResponse, first: string, byte: number): () => number {
  let sent = 0;
  res.writeHead(200, { 'content-type': 'application/json' }); // chunked: no length announced
  res.write(first);
  const chunk = Buffer.alloc(64 * 1024, byte);
  const more = (): void => {
    while (sent < 64 * 1024 * 1024 && !res.destroyed) {
      sent += chunk.length;
      if (!res.write(chunk)) {
        res.once('drain', more);
        return;
      }
    }
    res.end();
  };
  more();
  return () => sent;
}
