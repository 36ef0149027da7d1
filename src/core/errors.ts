import createError from 'http-errors';

/**
 * Every code mirrorswap answers or raises, with its meaning: the one
 * catalogue. A refusal's `error` field, a swap record's `error.code` and a
 * MirrorswapError's `code` are all keys of it (the compiler holds every site to
 * it), and README.md's "Error codes" table is checked against it by a test.
 */
export const ERROR_CODES = Object.freeze({
  UNAUTHORIZED: "no token, or not the one expected (the write API's, or the fleet's)",
  BAD_PATH: 'a path breaks the rules for paths in master',
  BAD_BATCH:
    'a batch body is not JSON {"ops": [...]} of well-formed operations, nor a complete tar archive of regular files',
  DUPLICATE_PATH: 'a batch names the same path twice',
  ABORTED: 'a body ended before its declared length',
  BAD_REQUEST: 'a request could not be parsed',
  NOT_FOUND: 'a DELETE of a path master does not hold, or an unknown endpoint',
  METHOD_NOT_ALLOWED: 'files take PUT and DELETE',
  PATH_CONFLICT: 'a path is under an existing file, or is a directory',
  PATH_TOO_LONG: 'a path (or a segment of it) is longer than the file systems of master and both copies hold',
  BODY_TOO_LARGE: 'a body is over --max-body',
  INTERNAL: "anything else; the agent's log has the details, the answer never does",
  NOT_READY: 'the agent is still starting',
  UNHEALTHY: '/healthz: a file system call did not complete within a second',
  DISK_FULL: 'master has no space left; nothing was written',
  BATCH_UNFINISHED: 'a batch failed after it was logged and partly applied; writes and syncs wait until it is finished',
  DRAIN_TIMEOUT: 'servers still held a slot at --drain-timeout',
  NO_ROLLBACK:
    'the standby holds no complete release older than the mounted one, or rollback --to names a release the standby does not hold',
  BAD_RELEASE: 'a release id (sync --release, rollback --to) breaks its rules: 1 to 128 of A-Z a-z 0-9 . _ : + @ -',
  SLOT_NOT_VOUCHED: 'the copy about to be mounted is not recorded as holding what the swap meant',
  STORE_LOCKED: 'another agent holds the store',
  STORE_LOCK: 'the lock file cannot be opened or is not a regular file',
  MISSING_TOOL: 'flock (util-linux) or sync (coreutils) is not installed',
  NOT_REGULAR: 'a state file is a FIFO, a device or a link',
  TOO_LARGE: 'a state file is larger than such a file may be',
  HOOK_FAILED: 'a --pre-swap or --post-swap hook could not start, or failed',
  EPOCH_READ: 'the epoch file cannot be read',
  EPOCH_CORRUPT: 'the epoch file is not valid JSON of the epoch format',
  EPOCH_FORMAT: 'the epoch file was written by a newer mirrorswap: upgrade the web servers first',
  EPOCH_MISSING: 'a web server saw the epoch file disappear; it keeps serving its epoch',
  EPOCH_BACKWARDS: 'a web server saw the epoch go back; ignored, epochs only move forward',
  EPOCH_WATCH: 'watching the epoch file failed; the web server polls instead',
  SLOT_ROOT: 'the copy an epoch mounts cannot be opened; the web server keeps serving the previous epoch',
  LEASE: "a web server's heartbeat could not be renewed; it answers 503 until it is",
  NOT_A_FLEET: 'fleet mode: this agent coordinates no fleet (--etcd)',
  NOT_COORDINATOR: 'fleet mode: this agent is not the elected coordinator, or lost its election before its commit',
  FLEET_PREPARE: 'fleet mode: a host did not prepare the swap under --straggler block, or an --on-evict hook failed',
  FLEET_QUORUM: 'fleet mode: fewer hosts than --min-members were live or prepared the swap',
  FLEET_COMMIT_UNKNOWN: 'fleet mode: etcd never answered the commit',
  ETCD: 'fleet mode: no etcd member answered in time, or etcd refused the request',
  FLEET_ETCD: 'fleet mode: a host agent holds no lease to answer a proposal on (etcd unreachable)',
  FLEET_PULL: "fleet mode: a host's pull failed, or the coordinator's answer broke a bound or a rule",
  FLEET_MANIFEST: 'fleet mode: a copy cannot be read to make its manifest',
  SNAPSHOT_GONE: 'fleet mode: no slot of the coordinator (or of the peer asked) holds the snapshot asked for any more',
  PEER_BUSY: 'fleet mode: a host serves as many peer pulls as --peer-serve allows, or serves none: ask another',
});

export type ErrorCode = keyof typeof ERROR_CODES;

/** The body of an HTTP refusal: a code of the catalogue and a message for the writer, never an internal one. */
export function errorBody(code: ErrorCode, message: string): { error: ErrorCode; message: string } {
  return { error: code, message };
}

/**
 * Errors mirrorswap raises on purpose carry a stable `code` and say what to do.
 * Their messages are for operators and logs; HTTP handlers map them to short,
 * fixed bodies and never echo them to clients.
 */
export class MirrorswapError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
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
