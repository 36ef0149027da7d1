/**
 * Errors mirrorswap raises on purpose carry a stable `code` and say what to do.
 * Their messages are for operators and logs; HTTP handlers map them to short,
 * fixed bodies and never echo them to clients.
 */
export class MirrorswapError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'MirrorswapError';
    this.code = code;
  }
}

/** An error with an HTTP status, handed to `next(err)` the way serve-static does. */
export interface HttpError extends Error {
  status: number;
  statusCode: number;
  expose: boolean;
}

export function httpError(status: number, message: string): HttpError {
  return Object.assign(new Error(message), { status, statusCode: status, expose: status < 500 });
}
