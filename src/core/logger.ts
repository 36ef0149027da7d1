/**
 * The logger mirrorswap writes to, in pino's call shape: the fields first,
 * then the message. The agent uses all three levels; the middleware only
 * `warn` and `error`, so it takes any object with those two (see
 * `MiddlewareLogger`), `console` included.
 */
export interface Logger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/** What the middleware needs of a logger. */
export type MiddlewareLogger = Pick<Logger, 'warn' | 'error'>;
