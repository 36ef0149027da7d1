import type { IncomingMessage } from 'node:http';
import { PassThrough, type Readable } from 'node:stream';

/**
 * A request body as it goes upstream. Bodies up to the buffer size are read
 * whole before any upstream connection is taken (nginx's
 * `proxy_request_buffering on`), so a slow sender of a small body costs the
 * upstream nothing; a larger one streams, its buffered head first.
 */
export type ClientBody =
  | { kind: 'none' }
  | { kind: 'buffered'; body: Buffer; held: number }
  | { kind: 'streamed'; body: Readable; length: number | null };

/** Why a body could not be read: the client went away, or went silent for longer than allowed. */
export class ClientBodyError extends Error {
  constructor(readonly outcome: 'client_closed' | 'client_timeout') {
    super(outcome === 'client_timeout' ? 'the client stopped sending its request body' : 'the client went away');
  }
}

/**
 * The bytes all buffered request bodies may hold at once, shared by every
 * request: `take` answers false when a chunk would go past it.
 */
export interface BufferBudget {
  take(bytes: number): boolean;
  give(bytes: number): void;
}

/** A budget of `limit` bytes. */
export function bufferBudget(limit: number): BufferBudget {
  let held = 0;
  return {
    take(bytes) {
      if (held + bytes > limit) return false;
      held += bytes;
      return true;
    },
    give(bytes) {
      held = Math.max(0, held - bytes);
    },
  };
}

/**
 * True when the request carries bytes to read: a chunked body, or a Content-Length other
 * than 0 (unlike core/http-io.ts's hasBody, an empty body counts as none: nothing to buffer).
 */
export function carriesBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

/**
 * Read the body up to `bufferSize` bytes, with at most `silence` ms between
 * chunks. Resolves `buffered` when the body ended within the bound, else
 * `streamed` with the rest still arriving (under the same silence bound);
 * rejects with ClientBodyError. Buffered bytes are taken from `budget`: a body
 * it has no room for streams instead; a buffered body's `held` bytes are the
 * caller's to give back once the body is sent.
 */
export function readClientBody(
  req: IncomingMessage,
  bufferSize: number,
  silence: number,
  budget?: BufferBudget,
): Promise<ClientBody> {
  if (!carriesBody(req)) return Promise.resolve({ kind: 'none' });
  const declared = req.headers['content-length'];
  const length = declared === undefined ? null : Number(declared);
  return new Promise<ClientBody>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let stream: PassThrough | null = null;
    let over = false;
    /** Bytes taken from the budget for this body so far. */
    let taken = 0;
    const giveBack = () => {
      budget?.give(taken);
      taken = 0;
    };
    // silence while the upstream holds the body back (backpressure) is not the client's
    const timer = setTimeout(function onSilence() {
      if (over) return;
      if (stream?.writableNeedDrain) timer.refresh();
      else fault(new ClientBodyError('client_timeout'));
    }, silence);
    /** Stop listening and timing: the body is whole, failed, or no longer wanted. */
    const stop = () => {
      over = true;
      clearTimeout(timer);
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('close', onClose);
    };
    const fault = (err: ClientBodyError) => {
      if (over) return;
      stop();
      giveBack();
      // the caller answers (408, or nothing for a client gone) with Connection: close
      req.unpipe();
      req.pause();
      if (stream) stream.destroy(err);
      else reject(err);
    };
    const onData = (chunk: Buffer) => {
      timer.refresh();
      if (stream) return;
      chunks.push(chunk);
      size += chunk.length;
      if (size <= bufferSize && (budget === undefined || budget.take(chunk.length))) {
        taken += chunk.length;
        return;
      }
      // past the bound, its own or all bodies' together: the head goes first, the rest follows as it arrives
      giveBack();
      const s = new PassThrough();
      stream = s;
      for (const c of chunks) s.write(c);
      chunks.length = 0;
      // the body given up downstream (the upstream failed, the proxy refused it): stop here too
      s.once('close', () => {
        if (!over) {
          stop();
          req.unpipe(s);
        }
      });
      req.pipe(s, { end: false });
      resolve({ kind: 'streamed', body: s, length });
    };
    const onEnd = () => {
      stop();
      if (stream) stream.end();
      else {
        const body = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks);
        resolve({ kind: 'buffered', body, held: taken });
      }
    };
    const onClose = () => {
      if (!over && !req.complete) fault(new ClientBodyError('client_closed'));
    };
    req.on('data', onData);
    req.once('end', onEnd);
    req.once('close', onClose);
    // for good: a client that aborts later makes node:http emit 'error' on the request
    req.on('error', onClose);
  });
}
