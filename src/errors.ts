import createError from 'http-errors';

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

/** An error with an HTTP status, handed to `next(err)`: an `http-errors` object, as serve-static passes. */
export type HttpError = createError.HttpError;

/**
 * `createError(status, message)` from http-errors, which serve-static uses:
 * handlers that test `err instanceof createError.HttpError`, `err.status` or
 * `err.expose` work the same behind mirrorswap.
 */
export function httpError(status: number, message?: string, props: { expose?: boolean } = {}): HttpError {
  return message === undefined ? createError(status, props) : createError(status, message, props);
}
